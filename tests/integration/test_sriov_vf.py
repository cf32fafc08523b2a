"""The simulated SR-IOV + NUMA bed and VF configuration, against the real kernel.

Needs root and ``ip netns``; skips with the reason otherwise. This machine has
no SR-IOV hardware: the bed writes a sysfs tree in tmp_path and backs every VF
with a real veth in a throwaway namespace, so inventory, VF MAC and the data
path are real while VF semantics (VLAN, spoof check) are only recorded. Every
namespace a test makes is deleted in a finally.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from edged.drivers.numa import HostNode, read_topology
from edged.drivers.sriov import NodeCount, SriovError, SriovInventory, parse_physnets
from edged.drivers.sriov_simbed import SimBed, SimPf, build_bed
from edged.drivers.sriov_vf import NetlinkVfConfig, SimulatedVfConfig, VfSettings
from tests.host import require_netns

_counter = itertools.count()
PORT_MAC = "fa:16:3e:12:34:56"
PFS = [SimPf("pf0", 0, 4, "fast"), SimPf("pf1", 1, 2, "slow"), SimPf("pf2", 1, 2, "fast")]
NUMA = {0: (0, 1), 1: (2, 3)}


@pytest.fixture(scope="module", autouse=True)
def privileged() -> None:
    require_netns()


@pytest.fixture
def bed(make_ns: Callable[[], str], tmp_path: Path) -> Iterator[SimBed]:
    built = build_bed(tmp_path / "sys", make_ns(), PFS, NUMA, hugepages_2m_per_node=8)
    try:
        yield built
    finally:
        built.teardown()


def ip_link_text(ns: str) -> str:
    """``ip -d link`` of ``ns`` without what changes by itself (operstate, bridge timers)."""
    text = subprocess.run(
        ["ip", "-n", ns, "-d", "link", "show"], check=True, capture_output=True, text=True
    ).stdout
    return re.sub(r"( state|_timer) +\S+", r"\1", text)


def link(ns: str, name: str) -> dict:
    with IPRoute(netns=ns, flags=0) as ip:
        msg = ip.link("get", ifname=name)[0]
        master = msg.get("master")
        return {
            "mac": msg.get("address"),
            "up": bool(msg["flags"] & 1),
            "master": ip.link("get", index=master)[0].get("ifname") if master else None,
            "kind": msg.get(("linkinfo", "kind")),
        }


def move(ns: str, name: str, guest: str, address: str) -> None:
    """Pass ``name`` to ``guest`` (what passthrough does), with ``address``, up."""
    with IPRoute(netns=ns, flags=0) as ip:
        (index,) = ip.link_lookup(ifname=name)
        ip.link("set", index=index, net_ns_fd=guest)
    with IPRoute(netns=guest, flags=0) as ip:
        (index,) = ip.link_lookup(ifname=name)
        ip.addr("add", index=index, address=address, prefixlen=24)
        ip.link("set", index=index, state="up")


def plug_peer(ns: str, bridge: str, endpoint: str, address: str) -> None:
    """A veth on ``bridge`` (another host on the physnet), its peer in ``endpoint``."""
    n = next(_counter)
    outer, inner = f"hp{n}o", f"hp{n}i"
    with IPRoute(netns=ns, flags=0) as ip:
        ip.link("add", ifname=outer, kind="veth", peer=inner)
        (peer,) = ip.link_lookup(ifname=inner)
        ip.link("set", index=peer, net_ns_fd=endpoint)
        (index,) = ip.link_lookup(ifname=outer)
        (br,) = ip.link_lookup(ifname=bridge)
        ip.link("set", index=index, master=br, state="up")
    with IPRoute(netns=endpoint, flags=0) as ip:
        (index,) = ip.link_lookup(ifname=inner)
        ip.addr("add", index=index, address=address, prefixlen=24)
        ip.link("set", index=index, state="up")


def pings(ns: str, address: str, attempts: int = 3) -> bool:
    cmd = ["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", address]
    return any(subprocess.run(cmd, capture_output=True).returncode == 0 for _ in range(attempts))


def neighbour_mac(ns: str, address: str) -> str | None:
    with IPRoute(netns=ns, flags=0) as ip:
        for msg in ip.get_neighbours(dst=address):
            return msg.get("NDA_LLADDR")
    return None


def scan(bed: SimBed):
    return SriovInventory(bed.sysfs_root, parse_physnets(bed.sriov_physnets)).scan()


# -- the bed as the readers see it ---------------------------------------------------------


def test_inventory_and_topology_read_the_bed(bed: SimBed) -> None:
    assert bed.sriov_physnets == "fast=pf0,pf2;slow=pf1"
    inventory = SriovInventory(bed.sysfs_root, parse_physnets(bed.sriov_physnets))
    assert inventory.inventory() == {
        "fast": {0: NodeCount(4, 4), 1: NodeCount(2, 2)},
        "slow": {1: NodeCount(2, 2)},
    }
    pfs = [pf for group in inventory.scan().values() for pf in group]
    addresses = [pf.pci for pf in pfs] + [vf.pci for pf in pfs for vf in pf.vfs]
    assert len(set(addresses)) == len(addresses) == 11
    assert all(re.fullmatch(r"0000:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", a) for a in addresses)
    assert read_topology(bed.sysfs_root) == (
        HostNode(0, (0, 1), 4096, {2048: (8, 8), 1048576: (0, 0)}),
        HostNode(1, (2, 3), 4096, {2048: (8, 8), 1048576: (0, 0)}),
    )


def test_every_vf_netdev_is_a_veth_plugged_into_its_physnets_wire(bed: SimBed) -> None:
    for physnet, pfs in scan(bed).items():
        for pf in pfs:
            assert link(bed.namespace, f"{pf.name}w")["master"] == bed.wire_bridge(physnet)
            for vf in pf.vfs:
                assert vf.netdev is not None
                netdev = link(bed.namespace, vf.netdev)
                assert (netdev["kind"], netdev["up"], netdev["master"]) == ("veth", True, None)
                wire = link(bed.namespace, f"{vf.netdev}w")
                assert (wire["up"], wire["master"]) == (True, f"sw-{physnet}")
    with pytest.raises(KeyError, match="physnet 'nope' is not in this bed"):
        bed.wire_bridge("nope")


# -- simulated VF configuration ------------------------------------------------------------


def test_simulated_configure_sets_the_mac_and_records_the_rest(bed: SimBed) -> None:
    pf = scan(bed)["fast"][1]  # pf2, NUMA node 1
    vf = pf.vfs[1]
    sim = SimulatedVfConfig(bed.sysfs_root, bed.namespace)
    settings = VfSettings(PORT_MAC, vlan=300, spoofchk=False, trust=True)
    sim.configure(pf, vf, settings)
    sim.configure(pf, vf, settings)  # idempotent
    assert link(bed.namespace, "pf2v1")["mac"] == PORT_MAC
    assert link(bed.namespace, "pf2v1")["up"]
    record_path = bed.sysfs_root / "devices" / "pci0000:00" / vf.pci / "skerry-sim-vf.json"
    assert json.loads(record_path.read_text()) == {
        "pf": "pf2",
        "vf": 1,
        "pci": vf.pci,
        "netdev": "pf2v1",
        "mac": PORT_MAC,
        "vlan": 300,
        "spoofchk": False,
        "trust": True,
    }
    other = link(bed.namespace, "pf2v0")["mac"]
    assert other != PORT_MAC

    sim.reset(pf, vf)
    sim.reset(pf, vf)  # idempotent
    record = json.loads(record_path.read_text())
    assert (record["mac"], record["vlan"], record["spoofchk"], record["trust"]) == (
        "00:00:00:00:00:00",
        None,
        True,
        False,
    )
    reset_mac = link(bed.namespace, "pf2v1")["mac"]
    assert reset_mac != PORT_MAC
    assert int(reset_mac[:2], 16) & 0b11 == 0b10  # locally administered unicast


def test_simulated_configure_of_a_passed_through_vf_is_an_error(
    bed: SimBed, make_ns: Callable[[], str]
) -> None:
    pf = scan(bed)["slow"][0]
    sim = SimulatedVfConfig(bed.sysfs_root, bed.namespace)
    sim.configure(pf, pf.vfs[0], VfSettings(PORT_MAC))
    move(bed.namespace, "pf1v0", make_ns(), "198.51.100.30")
    with pytest.raises(SriovError, match=r"PF pf1 VF 0 \(netdev\): no link pf1v0 in namespace"):
        sim.configure(pf, pf.vfs[0], VfSettings(PORT_MAC))
    sim.reset(pf, pf.vfs[0])  # the record is reset even though the netdev is gone
    assert sim.read_record(pf, pf.vfs[0])["mac"] == "00:00:00:00:00:00"


def test_traffic_flows_over_the_vf_on_its_physnet_only(
    bed: SimBed, make_ns: Callable[[], str]
) -> None:
    pf = scan(bed)["fast"][0]
    vf = pf.vfs[2]
    SimulatedVfConfig(bed.sysfs_root, bed.namespace).configure(pf, vf, VfSettings(PORT_MAC))
    guest, fast_host, slow_host = make_ns(), make_ns(), make_ns()
    assert vf.netdev == "pf0v2"
    move(bed.namespace, vf.netdev, guest, "198.51.100.10")
    plug_peer(bed.namespace, bed.wire_bridge("fast"), fast_host, "198.51.100.20")
    plug_peer(bed.namespace, bed.wire_bridge("slow"), slow_host, "198.51.100.21")

    assert pings(guest, "198.51.100.20")
    # The far end learnt the guest under the port's MAC: frames left through the VF.
    assert neighbour_mac(fast_host, "198.51.100.10") == PORT_MAC
    assert not pings(guest, "198.51.100.21", attempts=1)


# -- the real netlink configurator ---------------------------------------------------------


def test_netlink_config_on_a_pf_without_vf_ops_is_a_clear_error(bed: SimBed) -> None:
    pf = scan(bed)["fast"][0]
    real = NetlinkVfConfig(bed.namespace)
    message = r"^PF pf0 does not support VF configuration \(VF 3, setting mac: .*not supported\)$"
    with pytest.raises(SriovError, match=message):
        real.configure(pf, pf.vfs[3], VfSettings(PORT_MAC, vlan=100))
    with pytest.raises(SriovError, match=message):
        real.reset(pf, pf.vfs[3])


def test_netlink_config_missing_pf_or_namespace(bed: SimBed) -> None:
    pf = scan(bed)["fast"][0]
    renamed = type(pf)("pf9", pf.pci, pf.numa_node, pf.totalvfs, pf.numvfs, pf.vfs)
    with pytest.raises(
        SriovError, match=rf"PF pf9 VF 0: no link pf9 in namespace {bed.namespace}$"
    ):
        NetlinkVfConfig(bed.namespace).configure(renamed, pf.vfs[0], VfSettings(PORT_MAC))
    with pytest.raises(SriovError, match=r"PF pf0 VF 0: namespace 'sksv-gone'"):
        NetlinkVfConfig("sksv-gone").reset(pf, pf.vfs[0])


# -- building and tearing down -------------------------------------------------------------


def test_teardown_leaves_no_link_and_no_tree(make_ns: Callable[[], str], tmp_path: Path) -> None:
    ns, guest = make_ns(), make_ns()
    before, guest_before = ip_link_text(ns), ip_link_text(guest)
    built = build_bed(tmp_path / "sys", ns, PFS, NUMA)
    assert ip_link_text(ns) != before
    move(ns, "pf0v1", guest, "198.51.100.40")  # a VF still passed through at teardown
    built.teardown()
    built.teardown()  # twice is harmless
    assert ip_link_text(ns) == before
    assert ip_link_text(guest) == guest_before
    assert not (tmp_path / "sys").exists()


def test_failed_build_removes_what_it_made_and_spares_the_rest(
    make_ns: Callable[[], str], tmp_path: Path
) -> None:
    ns = make_ns()
    with IPRoute(netns=ns, flags=0) as ip:  # someone else's link, with a name the bed needs
        ip.link("add", ifname="pf1", kind="veth", peer="other")
    before = ip_link_text(ns)
    root = tmp_path / "sys"
    root.mkdir()
    with pytest.raises(NetlinkError, match="File exists"):
        build_bed(root, ns, PFS, NUMA)
    assert ip_link_text(ns) == before
    assert list(root.iterdir()) == []
