"""``direct`` ports end to end on the simulated SR-IOV bed (this machine has no SR-IOV NIC).

The site reads a sysfs tree built by :mod:`edged.drivers.sriov_simbed` (two NUMA
nodes, a PF per node, VFs backed by real veths on a "wire" bridge) and
configures VFs with the simulated configurator. A VF's PCI address cannot be
passed to a real QEMU here, so this site's servers run on libvirt's test
driver; the data path is shown the way passthrough works — the VF's netdev
moves into a "guest" namespace and traffic flows over its backing link.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from central.client import ApiFailure
from central.localcluster import LocalCluster, wait_for
from edged.drivers.libvirt_testnode import write_test_node
from edged.drivers.sriov_simbed import SimBed, SimPf, build_bed, vf_netdev
from tests.e2e.net_support import links, netns, port, wait_inventory, wait_port
from tests.e2e.support import add_site
from tests.host import require_netns

pytestmark = pytest.mark.e2e


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[SimBed]:
    require_netns()
    with netns() as ns:
        pfs = [SimPf("pf0", 0, 2, "slow"), SimPf("pf1", 1, 2, "fast")]
        made = build_bed(tmp_path / "sys", ns, pfs, {0: (0, 1), 1: (2, 3)})
        try:
            yield made
        finally:
            made.teardown()


def ns_link(ns: str, name: str) -> str:
    return subprocess.run(
        ["ip", "-n", ns, "-o", "link", "show", name], capture_output=True, text=True, check=True
    ).stdout


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def test_direct_port_gets_a_vf_on_the_servers_numa_node_and_carries_traffic(
    cluster: LocalCluster, sites: list[str], bed: SimBed, tmp_path: Path
) -> None:
    site = sites[0]
    ns = bed.namespace
    before = links(ns)
    add_site(
        cluster,
        site,
        libvirt_uri=write_test_node(tmp_path, cpus=4, memory_mb=8192),
        virt_type="test",
        network_namespace=ns,
        sysfs_root=str(bed.sysfs_root),
        sriov_physnets=bed.sriov_physnets,
        sriov_vf_config="simulated",
        physnet_uplinks="fast=pf1,slow=pf0",
    )
    inventory = wait_inventory(cluster, site, "sriov")
    assert inventory["sriov"]["fast"] == {"1": {"total": 2, "free": 2}}
    assert [n["node"] for n in inventory["numa"]] == [0, 1]

    net = cluster.client.post(
        "/v1/networks",
        {
            "name": "fast",
            "site": site,
            "kind": "provider",
            "segmentation": "flat",
            "physnet": "fast",
        },
    )
    cluster.client.post(f"/v1/networks/{net['id']}/subnets", {"cidr": "192.0.2.0/24"})
    pinned = {"vcpus": 1, "ram_mb": 128, "disk_gb": 1, "cpu_policy": "dedicated"}

    d1 = port(cluster, net["id"], "192.0.2.10", vnic_type="direct")
    s1 = cluster.create_server(site, "upf-1", flavor=pinned, ports=[d1["id"]])
    # Node 0 has free CPUs too, but only node 1 has VFs on physnet "fast".
    assert s1["numa_placement"] == [1]
    cluster.wait_server(s1["id"], "ACTIVE", timeout=60)
    d1 = wait_port(cluster, d1["id"], "ACTIVE")
    binding = d1["binding"]
    assert (binding["kind"], binding["pf"], binding["numa_node"]) == ("vf", "pf1", 1)
    vf = vf_netdev("pf1", binding["vf"])
    assert d1["mac_address"] in ns_link(ns, vf)  # set by edged through the VF configurator

    # Passthrough moves the VF into the guest: the "guest" is a namespace here.
    sh("ip", "-n", ns, "link", "add", "rmt", "type", "veth", "peer", "name", "rmtw")
    sh("ip", "-n", ns, "link", "set", "rmtw", "master", bed.wire_bridge("fast"), "up")
    sh("ip", "-n", ns, "addr", "add", "192.0.2.1/24", "dev", "rmt")
    sh("ip", "-n", ns, "link", "set", "rmt", "up")
    with netns() as guest:
        sh("ip", "-n", ns, "link", "set", vf, "netns", guest)
        try:
            sh("ip", "-n", guest, "addr", "add", "192.0.2.10/24", "dev", vf)
            sh("ip", "-n", guest, "link", "set", vf, "up")
            ping = subprocess.run(
                ["ip", "netns", "exec", guest, "ping", "-c", "3", "-W", "2", "192.0.2.1"],
                capture_output=True,
                text=True,
            )
            assert ping.returncode == 0, ping.stdout + ping.stderr
        finally:
            sh("ip", "-n", guest, "link", "set", vf, "netns", ns)
    sh("ip", "-n", ns, "link", "del", "rmt")

    d2 = port(cluster, net["id"], vnic_type="direct")
    s2 = cluster.create_server(site, "upf-2", flavor=pinned, ports=[d2["id"]])
    cluster.wait_server(s2["id"], "ACTIVE", timeout=60)
    assert wait_port(cluster, d2["id"], "ACTIVE")["binding"]["numa_node"] == 1
    wait_for(
        lambda: cluster.site(site)["inventory"]["sriov"]["fast"]["1"]["free"] == 0,
        30,
        "site reporting both VFs of physnet fast in use",
    )

    # VF exhaustion: the promised 409, naming physnet and node, and nothing created.
    d3 = port(cluster, net["id"], vnic_type="direct")
    servers_before = len(cluster.client.get("/v1/servers")["servers"])
    with pytest.raises(ApiFailure) as full:
        cluster.create_server(site, "upf-3", flavor=pinned, ports=[d3["id"]])
    assert full.value.status == 409
    assert "VF" in str(full.value) and "fast" in str(full.value)
    assert len(cluster.client.get("/v1/servers")["servers"]) == servers_before
    # A NUMA request the site cannot meet.
    with pytest.raises(ApiFailure) as numa:
        cluster.create_server(site, "wide", flavor={**pinned, "vcpus": 3, "numa_nodes": 3})
    assert numa.value.status == 409 and "NUMA" in str(numa.value)

    # Delete everything: VFs released, the network's links gone, the bed untouched.
    for server in (s1, s2):
        cluster.client.delete(f"/v1/servers/{server['id']}")
    for p in (d1, d2, d3):
        wait_for(
            lambda q=p: _deleted(cluster, f"/v1/ports/{q['id']}"),
            60,
            f"port {p['id']} deleted",
        )
    cluster.client.delete(f"/v1/networks/{net['id']}")
    wait_for(
        lambda: cluster.site(site)["inventory"]["sriov"]["fast"]["1"]["free"] == 2,
        30,
        "VFs released",
    )
    wait_for(lambda: links(ns) == before, 30, "the site's links in the bed namespace gone")


def _deleted(cluster: LocalCluster, path: str) -> bool:
    try:
        cluster.client.delete(path)
    except ApiFailure as exc:
        if exc.status == 404:
            return True
        if exc.status == 409:
            return False  # still attached to a server being deleted
        raise
    return True
