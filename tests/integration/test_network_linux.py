"""LinuxNetwork against the real kernel, inside throwaway network namespaces.

Needs root and ``ip netns``; skips with the reason otherwise. Every namespace a
test makes is deleted in a finally, so the host's own links are never touched.
A VM's tap has no carrier without a VM, so server endpoints are emulated: a
veth whose host end is enslaved to the network's bridge exactly like the tap,
and whose other end sits, with an address, in an endpoint namespace.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from edged.drivers.network import NetworkError, NetworkSpec, PortSpec, bridge_name, vxlan_name
from edged.drivers.network_linux import LinuxNetwork
from edged.drivers.sriov import SriovInventory, allocate_vf, parse_physnets
from tests.host import require_netns, skip

SITE = "edge-t"
_counter = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def privileged() -> None:
    require_netns()


def ip_link_text(ns: str) -> str:
    """``ip -d link`` of ``ns`` without what changes by itself (operstate, bridge timers)."""
    text = subprocess.run(
        ["ip", "-n", ns, "-d", "link", "show"], check=True, capture_output=True, text=True
    ).stdout
    return re.sub(r"( state|_timer) +\S+", r"\1", text)


def attach_endpoint(host: str, bridge: str, endpoint: str, address: str) -> None:
    """A veth like a tap on ``bridge`` in ``host``; its peer in ``endpoint`` with ``address``."""
    n = next(_counter)
    outer, inner = f"ep{n}h", f"ep{n}g"
    with IPRoute(netns=host, flags=0) as ip:
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


def pings(endpoint: str, address: str, attempts: int = 3) -> bool:
    cmd = ["ip", "netns", "exec", endpoint, "ping", "-c", "1", "-W", "1", address]
    return any(subprocess.run(cmd, capture_output=True).returncode == 0 for _ in range(attempts))


def flood_to(host: str, vni: int, peer: str) -> None:
    """Head-end replication entry: BUM traffic of this VNI goes to ``peer``."""
    with IPRoute(netns=host, flags=0) as ip:
        (index,) = ip.link_lookup(ifname=vxlan_name(vni))
        ip.fdb("append", ifindex=index, lladdr="00:00:00:00:00:00", dst=peer)


def vxlan_net(net_id: str, vni: int, mtu: int = 1450) -> NetworkSpec:
    return NetworkSpec(net_id, "tenant", "vxlan", vni, None, mtu)


def link(ns: str, name: str) -> dict:
    with IPRoute(netns=ns, flags=0) as ip:
        msg = ip.link("get", ifname=name)[0]
        return {
            "index": msg["index"],
            "master": msg.get("master"),
            "mac": msg.get("address"),
            "up": bool(msg["flags"] & 1),
            "alias": msg.get("ifalias"),
            "mtu": msg.get("mtu"),
        }


def test_probe_reports_vxlan_and_vlan(make_ns: Callable[[], str]) -> None:
    caps = LinuxNetwork(SITE, namespace=make_ns()).probe()
    print(f"capabilities: {caps}")
    assert caps.vxlan, caps.vxlan_reason
    if not caps.vlan:
        assert "802.1Q" in caps.vlan_reason


def test_vxlan_network_ports_and_data_path(make_ns: Callable[[], str]) -> None:
    host = make_ns()
    drv = LinuxNetwork(SITE, namespace=host, tunnel_local_ip="192.0.2.1")
    spec = vxlan_net("net-aaaa1111", 1001, mtu=1400)
    drv.ensure_network(spec)
    first = ip_link_text(host)
    drv.ensure_network(spec)  # idempotent: nothing changes
    assert ip_link_text(host) == first

    bridge = bridge_name(spec.id)
    assert link(host, bridge)["alias"] == f"skerry:{SITE}:net:{spec.id}"
    assert link(host, "sk-v-1001")["master"] == link(host, bridge)["index"]
    assert link(host, bridge)["mtu"] == 1400

    ports = [PortSpec(f"port-{n}aaaa", spec.id, f"52:54:00:00:00:0{n}") for n in (1, 2)]
    bindings = [drv.ensure_port(p) for p in ports]
    assert drv.ensure_port(ports[0]) == bindings[0]
    for b, n in zip(bindings, (1, 2), strict=True):
        assert (b.bridge, b.tap, b.mac) == (bridge, f"sk-t-port{n}aaa", f"fe:54:00:00:00:0{n}")
        tap = link(host, b.tap)
        assert (tap["master"], tap["mac"], tap["up"]) == (
            link(host, bridge)["index"],
            b.mac,
            True,
        )

    observed = drv.list_owned()
    assert observed.networks[spec.id].segment_links == ("sk-v-1001",)
    assert {p.id: p.network_id for p in observed.ports.values()} == {p.id: spec.id for p in ports}

    ep1, ep2 = make_ns(), make_ns()
    attach_endpoint(host, bridge, ep1, "10.0.0.1")
    attach_endpoint(host, bridge, ep2, "10.0.0.2")
    assert pings(ep1, "10.0.0.2")


def test_two_networks_are_isolated(make_ns: Callable[[], str]) -> None:
    host = make_ns()
    drv = LinuxNetwork(SITE, namespace=host, tunnel_local_ip="192.0.2.1")
    drv.ensure_network(vxlan_net("net-red00000", 2001))
    drv.ensure_network(vxlan_net("net-blue0000", 2002))
    ep1, ep2, ep3 = make_ns(), make_ns(), make_ns()
    attach_endpoint(host, bridge_name("net-red00000"), ep1, "10.0.0.1")
    attach_endpoint(host, bridge_name("net-blue0000"), ep2, "10.0.0.2")
    attach_endpoint(host, bridge_name("net-red00000"), ep3, "10.0.0.3")
    assert pings(ep1, "10.0.0.3")  # the control: same network works
    assert not pings(ep1, "10.0.0.2", attempts=1)


def test_vxlan_between_hosts_same_vni_only(make_ns: Callable[[], str]) -> None:
    host_a, host_b = make_ns(), make_ns()
    with IPRoute(netns=host_a, flags=0) as ip:  # the underlay: one veth between the hosts
        ip.link("add", ifname="under-a", kind="veth", peer="under-b")
        ip.link("set", index=ip.link_lookup(ifname="under-b")[0], net_ns_fd=host_b)
    for host, name, addr in ((host_a, "under-a", "10.99.0.1"), (host_b, "under-b", "10.99.0.2")):
        with IPRoute(netns=host, flags=0) as ip:
            (index,) = ip.link_lookup(ifname=name)
            ip.addr("add", index=index, address=addr, prefixlen=24)
            ip.link("set", index=index, state="up")
    drv_a = LinuxNetwork(SITE, namespace=host_a, tunnel_local_ip="10.99.0.1")
    drv_b = LinuxNetwork(SITE, namespace=host_b, tunnel_local_ip="10.99.0.2")
    drv_a.ensure_network(vxlan_net("net-shared00", 3000))
    drv_b.ensure_network(vxlan_net("net-shared00", 3000))
    drv_b.ensure_network(vxlan_net("net-other000", 3001))
    flood_to(host_a, 3000, "10.99.0.2")
    flood_to(host_b, 3000, "10.99.0.1")
    flood_to(host_b, 3001, "10.99.0.1")

    a1, b1, b2 = make_ns(), make_ns(), make_ns()
    attach_endpoint(host_a, bridge_name("net-shared00"), a1, "10.1.0.1")
    attach_endpoint(host_b, bridge_name("net-shared00"), b1, "10.1.0.2")
    attach_endpoint(host_b, bridge_name("net-other000"), b2, "10.1.0.3")
    assert pings(a1, "10.1.0.2")
    assert not pings(a1, "10.1.0.3", attempts=1)
    assert not pings(b2, "10.1.0.1", attempts=1)


def test_delete_network_removes_what_it_made_and_spares_foreign(
    make_ns: Callable[[], str],
) -> None:
    host = make_ns()
    before = ip_link_text(host)
    drv = LinuxNetwork(SITE, namespace=host, tunnel_local_ip="192.0.2.1")
    spec = vxlan_net("net-del00000", 4000)
    drv.ensure_network(spec)
    drv.ensure_port(PortSpec("port-del1", spec.id, "52:54:00:00:01:01"))
    drv.ensure_port(PortSpec("port-del2", spec.id, "52:54:00:00:01:02"))
    bridge = link(host, bridge_name(spec.id))
    with IPRoute(netns=host, flags=0) as ip:  # foreign links on our bridge
        ip.link("add", ifname="foreign0", kind="veth", peer="foreign1")
        ip.link("add", ifname="othersite0", kind="veth", peer="othersite1")
        ip.link("set", index=ip.link_lookup(ifname="othersite0")[0], ifalias="skerry:x:port:p")
        for name in ("foreign0", "othersite0"):
            ip.link("set", index=ip.link_lookup(ifname=name)[0], master=bridge["index"])

    drv.delete_port("port-del1")
    drv.delete_port("port-del1")  # already gone: fine
    assert "port-del1" not in drv.list_owned().ports
    drv.delete_network(spec.id)
    drv.delete_network(spec.id)
    assert drv.list_owned().networks == {}
    assert drv.list_owned().ports == {}
    assert link(host, "foreign0")["master"] is None
    assert link(host, "othersite0")["alias"] == "skerry:x:port:p"
    with IPRoute(netns=host, flags=0) as ip:
        for name in ("foreign0", "othersite0"):
            ip.link("del", index=ip.link_lookup(ifname=name)[0])
    assert ip_link_text(host) == before


def test_foreign_name_is_permanent_error_and_create_cleans_up(
    make_ns: Callable[[], str],
) -> None:
    host = make_ns()
    before = ip_link_text(host)
    drv = LinuxNetwork(SITE, namespace=host, tunnel_local_ip="192.0.2.1")
    with IPRoute(netns=host, flags=0) as ip:  # someone else's link holds our VXLAN name
        ip.link("add", ifname="sk-v-5000", kind="vxlan", vxlan_id=5000, vxlan_port=4789)
        ip.link("set", index=ip.link_lookup(ifname="sk-v-5000")[0], ifalias="not skerry")
    with pytest.raises(NetworkError, match="sk-v-5000 exists and is not ours") as err:
        drv.ensure_network(vxlan_net("net-clash000", 5000))
    assert err.value.permanent
    # The bridge made in the failed call is gone again; the foreign link is untouched.
    with IPRoute(netns=host, flags=0) as ip:
        assert ip.link_lookup(ifname=bridge_name("net-clash000")) == []
        assert ip.link("get", ifname="sk-v-5000")[0].get("ifalias") == "not skerry"
        ip.link("del", index=ip.link_lookup(ifname="sk-v-5000")[0])
    assert ip_link_text(host) == before
    with pytest.raises(NetworkError, match="network net-none does not exist") as err:
        drv.ensure_port(PortSpec("port-x", "net-none", "52:54:00:00:00:09"))
    assert not err.value.permanent


def test_flat_network_borrows_the_uplink(make_ns: Callable[[], str]) -> None:
    host = make_ns()
    with IPRoute(netns=host, flags=0) as ip:
        ip.link("add", ifname="uplink0", kind="veth", peer="uplink1")
    drv = LinuxNetwork(SITE, namespace=host, physnet_uplinks={"physnet1": "uplink0"})
    spec = NetworkSpec("net-flat0000", "provider", "flat", None, "physnet1", 1500)
    drv.ensure_network(spec)
    drv.ensure_network(spec)
    assert link(host, "uplink0")["master"] == link(host, bridge_name(spec.id))["index"]
    assert link(host, "uplink0")["alias"] is None  # borrowed, never tagged
    drv.delete_network(spec.id)
    assert link(host, "uplink0")["master"] is None
    with pytest.raises(NetworkError, match="physnet 'physnet2' has no uplink"):
        drv.ensure_network(NetworkSpec("net-flat2", "provider", "flat", None, "physnet2", 1500))


def test_vlan_without_8021q_is_a_clear_permanent_error(make_ns: Callable[[], str]) -> None:
    host = make_ns()
    with IPRoute(netns=host, flags=0) as ip:
        ip.link("add", ifname="uplink0", kind="veth", peer="uplink1")
    drv = LinuxNetwork(SITE, namespace=host, physnet_uplinks={"physnet1": "uplink0"})
    spec = NetworkSpec("net-vlan0000", "provider", "vlan", 100, "physnet1", 1500)
    if drv.probe().vlan:
        skip("kernel has 802.1Q; this test covers kernels without it")
    with pytest.raises(NetworkError, match=r"802\.1Q") as err:
        drv.ensure_network(spec)
    assert err.value.permanent
    assert drv.list_owned().networks == {}


def test_vlan_data_path(make_ns: Callable[[], str]) -> None:
    host = make_ns()
    with IPRoute(netns=host, flags=0) as ip:
        ip.link("add", ifname="uplink0", kind="veth", peer="uplink1")
    drv = LinuxNetwork(SITE, namespace=host, physnet_uplinks={"physnet1": "uplink0"})
    caps = drv.probe()
    if not caps.vlan:
        skip(f"VLAN data path: {caps.vlan_reason}")
    spec = NetworkSpec("net-vlan0000", "provider", "vlan", 100, "physnet1", 1500)
    drv.ensure_network(spec)
    drv.ensure_network(spec)
    assert link(host, "uplink0.100")["master"] == link(host, bridge_name(spec.id))["index"]
    drv.delete_network(spec.id)
    with IPRoute(netns=host, flags=0) as ip:
        assert ip.link_lookup(ifname="uplink0.100") == []


def test_sriov_bed_vfs_are_real_veths(make_ns: Callable[[], str], tmp_path: Path) -> None:
    """The simulated SR-IOV bed: a sysfs tree whose VF netdevs are real veth links."""
    host = make_ns()
    pf_dev = tmp_path / "devices" / "pci0000:00" / "0000:3b:00.0"
    pf_dev.mkdir(parents=True)
    (pf_dev / "sriov_totalvfs").write_text("4\n")
    (pf_dev / "sriov_numvfs").write_text("2\n")
    (pf_dev / "numa_node").write_text("0\n")
    with IPRoute(netns=host, flags=0) as ip:
        for n in range(2):
            ip.link("add", ifname=f"vf{n}", kind="veth", peer=f"vf{n}peer")
            vf_dev = pf_dev.parent / f"0000:3b:00.{n + 1}"
            (vf_dev / "net" / f"vf{n}").mkdir(parents=True)
            os.symlink(vf_dev, pf_dev / f"virtfn{n}")
    (tmp_path / "class" / "net" / "pf0").mkdir(parents=True)
    os.symlink(pf_dev, tmp_path / "class" / "net" / "pf0" / "device")

    inv = SriovInventory(tmp_path, parse_physnets("physnet1=pf0"))
    vf = allocate_vf(inv.scan(), "physnet1", 0, [])
    assert inv.inventory([vf.pci])["physnet1"][0].free == 1
    assert vf.netdev == "vf0"
    assert link(host, vf.netdev)["index"] > 0  # the VF's netdev is a real link
