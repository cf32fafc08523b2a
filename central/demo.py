"""``skerry demo``: central and two edge sites on this machine, servers, storage, objects.

Starts real processes (skerry-central, skerry-edged for edge-a and edge-b)
against the real libvirtd with TCG guests. At each site it creates a tenant
VXLAN network with a subnet, two ports and two servers on them through the API,
waits until the servers are ACTIVE, their guests printed their marker and
configured their port's address, and the first guest pings the second over the
network. At edge-a it then boots a server from a disk image uploaded to central,
hot-plugs an encrypted volume into it and replicates objects written at the
site to central (:mod:`central.demo_storage`); at edge-b it onboards the vRouter
VNF package and instantiates it (:mod:`central.demo_vnf`). It prints sites, servers,
networks, ports, images, volumes and buckets, then removes everything it
started (servers, volumes, buckets, ports, networks and so every link the
sites made).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from central import demo_storage, demo_vnf
from central.cli import SERVER_COLUMNS, SITE_COLUMNS, server_rows, site_rows, table
from central.cli_network import NETWORK_COLUMNS, PORT_COLUMNS, network_rows, port_rows
from central.localcluster import REPO, LocalCluster, purge_site_domains, wait_for

SITES = ("edge-a", "edge-b")
# The demo's sites share this host: VXLAN tunnels on loopback, one VNI per network.
EDGE_OVERRIDES = {"stop_grace_s": 1.0, "tunnel_local_ip": "127.0.0.1"}


def say(text: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {text}", flush=True)


def run_demo(keep: bool = False) -> int:
    image_dir = REPO / "images" / "build"
    if not (image_dir / "tiny" / "vmlinuz").exists() or not demo_storage.DISK_IMAGE.exists():
        say(f"no guest images in {image_dir}: run `bash .ci/setup-host.sh` first")
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="skerry-demo-"))
    cluster = LocalCluster(workdir, image_dir, edge_overrides=EDGE_OVERRIDES)
    ok = False
    try:
        say(
            f"starting central (API http://127.0.0.1:{cluster.api_port}, hub "
            f"{cluster.hub_endpoint}); state in {workdir}"
        )
        cluster.start_central()
        for site in SITES:
            cluster.add_site(site)
            key = cluster.site(site)["public_key"]
            say(f"site {site} enrolled (CURVE key {key[:8]}…), skerry-edged started")
        for site in SITES:
            wait_for(lambda s=site: cluster.site(s)["state"] == "up", 60, f"site {site} up")
        say("both sites up; a tenant network, two ports and two servers per site")
        made = [deploy(cluster, site, n) for n, site in enumerate(SITES)]
        stored = demo_storage.deploy(cluster, SITES[0], say)
        vnf = demo_vnf.deploy(cluster, SITES[1], say)
        servers = [server for site_made in made for server in site_made["servers"]]
        servers.append(stored["server"])
        for site_made in made:
            show_site(cluster, site_made)
        demo_storage.show(cluster, stored, say)
        demo_vnf.show(cluster, vnf, say)
        print()
        print(table(site_rows(cluster.client.get("/v1/sites")["sites"]), SITE_COLUMNS))
        print()
        print(table(server_rows(cluster.client.get("/v1/servers")["servers"]), SERVER_COLUMNS))
        print()
        print(table(network_rows(cluster.client.get("/v1/networks")["networks"]), NETWORK_COLUMNS))
        print()
        print(table(port_rows(cluster.client.get("/v1/ports")["ports"]), PORT_COLUMNS))
        print()
        ok = True
        if keep:
            say(f"--keep: left running; API at http://127.0.0.1:{cluster.api_port}")
            return 0
        say("cleaning up: the VNF, servers, then volumes, objects, images, ports and networks")
        demo_vnf.clean(cluster, vnf)
        for server in servers:
            cluster.client.delete(f"/v1/servers/{server['id']}")
        wait_for(lambda: not cluster.client.get("/v1/servers")["servers"], 60, "servers gone")
        demo_storage.clean(cluster, stored)
        for site_made in made:
            for port in site_made["ports"]:
                cluster.client.delete(f"/v1/ports/{port['id']}")
            cluster.client.delete(f"/v1/networks/{site_made['network']['id']}")
        for site in SITES:  # the sites remove their taps, bridges and VXLAN links
            wait_for(lambda s=site: converged(cluster, s), 60, f"site {site} converged")
    except (TimeoutError, AssertionError) as exc:
        say(f"FAILED: {exc}")
        for name in ("central", *SITES):
            print(f"--- {name}.log (tail) ---\n{cluster.log_tail(name)}", file=sys.stderr)
    finally:
        if not keep or not ok:
            cluster.close()
            purge_site_domains(cluster.libvirt_uri, list(SITES))
            shutil.rmtree(workdir, ignore_errors=True)
    say(
        "demo finished: every server ACTIVE with its guest marker seen, guests pinging "
        "each other over their site's tenant network, a guest booted from a central image "
        "with an encrypted volume hot-plugged, objects replicated from a site to central, "
        "a vRouter VNF instantiated from its template"
        if ok
        else "demo failed"
    )
    return 0 if ok else 1


def deploy(cluster: LocalCluster, site: str, n: int) -> dict[str, Any]:
    """A tenant network with a subnet, two ports, two servers; the first pings the second."""
    api = cluster.client
    net = api.post("/v1/networks", {"name": f"app-{site[-1]}", "site": site})
    api.post(f"/v1/networks/{net['id']}/subnets", {"cidr": f"10.{n + 1}.0.0/24"})
    ports = [api.post("/v1/ports", {"network_id": net["id"]}) for _ in range(2)]
    peer = ports[1]["fixed_ips"][0]["ip_address"]
    servers = [
        cluster.create_server(
            site, f"web-{site[-1]}1", ports=[ports[0]["id"]], metadata={"ping": peer}
        ),
        cluster.create_server(site, f"web-{site[-1]}2", ports=[ports[1]["id"]]),
    ]
    return {"site": site, "network": net, "ports": ports, "servers": servers, "peer": peer}


def show_site(cluster: LocalCluster, made: dict[str, Any]) -> None:
    """Wait for the site's servers and their guests, then for the ping across the network."""
    for server in made["servers"]:
        cluster.wait_server(server["id"], "ACTIVE", timeout=120)
        done = cluster.wait_marker(server["id"], timeout=120)
        say(f"server {done['name']} at {done['site']} is ACTIVE; its guest is up")
    pinger = made["servers"][0]
    line = f"SKERRY-PING {made['peer']} ok"
    wait_for(
        lambda: line in cluster.server(pinger["id"])["console"], 90, f"{pinger['name']}: {line}"
    )
    say(f"{pinger['name']} reaches {made['peer']} over network {made['network']['name']}: {line}")


def converged(cluster: LocalCluster, site: str) -> bool:
    """The site reported a pass over central's latest document."""
    view = cluster.site(site)
    return view["observed_generation"] >= view["desired_generation"]
