"""``skerry demo``: central and two edge sites on this machine, a server on each.

Starts real processes (skerry-central, skerry-edged for edge-a and edge-b)
against the real libvirtd with TCG guests, creates one server per site through
the API, waits until both are ACTIVE and their guests printed their marker,
prints the sites and servers, then removes everything it started.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from central.cli import SERVER_COLUMNS, SITE_COLUMNS, server_rows, site_rows, table
from central.localcluster import REPO, LocalCluster, purge_site_domains, wait_for

SITES = ("edge-a", "edge-b")


def say(text: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {text}", flush=True)


def run_demo(keep: bool = False) -> int:
    image_dir = REPO / "images" / "build"
    if not (image_dir / "tiny" / "vmlinuz").exists():
        say(f"no guest image in {image_dir}/tiny: run `bash images/build-tiny-guest.sh` first")
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="skerry-demo-"))
    cluster = LocalCluster(workdir, image_dir, edge_overrides={"stop_grace_s": 1.0})
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
        say("both sites up; creating one server per site")
        servers = [cluster.create_server(site, f"web-{site[-1]}") for site in SITES]
        for server in servers:
            cluster.wait_server(server["id"], "ACTIVE", timeout=120)
            done = cluster.wait_marker(server["id"], timeout=120)
            say(
                f"server {done['name']} at {done['site']} is ACTIVE; its console says: "
                f"{done['console'].strip().splitlines()[-1]}"
            )
        print()
        print(table(site_rows(cluster.client.get("/v1/sites")["sites"]), SITE_COLUMNS))
        print()
        print(table(server_rows(cluster.client.get("/v1/servers")["servers"]), SERVER_COLUMNS))
        print()
        ok = True
        if keep:
            say(f"--keep: left running; API at http://127.0.0.1:{cluster.api_port}")
            return 0
        say("cleaning up: deleting servers")
        for server in servers:
            cluster.client.delete(f"/v1/servers/{server['id']}")
        wait_for(lambda: not cluster.client.get("/v1/servers")["servers"], 60, "servers gone")
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
        "demo finished: both servers were ACTIVE with their guest markers seen"
        if ok
        else "demo failed"
    )
    return 0 if ok else 1
