"""Guest NICs on real libvirtd/QEMU (TCG): tap NICs on a bridge, addresses, ping, hot-plug.

The test makes its own bridge and taps (``skt-g*``, host namespace) as edged's
network driver would, and deletes them and every domain afterwards. The guests
are judged by what they print on their serial console (the tiny image's
``SKERRY-NET`` and ``SKERRY-PING`` lines). Skips with the reason when libvirtd,
QEMU or a recent enough tiny guest is missing.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from edged.drivers.compute import Nic
from edged.drivers.compute_libvirt import LibvirtCompute
from edged.drivers.domain_xml import domain_name, nic_port_ids
from tests.unit.compute_support import (
    IMAGE_DIR,
    QEMU_URI,
    require_qemu_host,
    skip,
    spec,
    wait_console,
)

pytestmark = pytest.mark.libvirtd

NET_IMAGE_VERSION = 2  # the first tiny guest with skerry.ip / skerry.ping
ADDR = {"a": "198.51.100.11", "b": "198.51.100.12"}
UNPLUG_TIMEOUT_S = 30.0


@dataclass
class Pair:
    """Two running guests, ``a`` and ``b``, each with one tap NIC on bridge ``<prefix>br``."""

    drv: LibvirtCompute
    prefix: str
    nics: dict[str, Nic]


def make_links(prefix: str, taps: list[str]) -> None:
    """A bridge ``<prefix>br`` and taps ``<prefix><t>`` enslaved to it, all up."""
    with IPRoute() as ip:
        ip.link("add", ifname=f"{prefix}br", kind="bridge")
        br = ip.link_lookup(ifname=f"{prefix}br")[0]
        ip.link("set", index=br, state="up")
        for t in taps:
            add_tap(ip, f"{prefix}{t}", br)


def add_tap(ip: IPRoute, name: str, bridge: int) -> None:
    """A persistent tap like edged's (QEMU opens it by name), up on ``bridge``."""
    ip.link("add", ifname=name, kind="tuntap", mode="tap")
    ip.link("set", index=ip.link_lookup(ifname=name)[0], master=bridge, state="up")


def delete_links(prefix: str) -> None:
    """Delete every link whose name starts with ``prefix`` (taps first, then the bridge)."""
    with IPRoute() as ip:
        names = [link.get_attr("IFLA_IFNAME") for link in ip.get_links()]
        ours = sorted((n for n in names if n.startswith(prefix)), key=lambda n: n.endswith("br"))
        for name in ours:
            for index in ip.link_lookup(ifname=name):
                ip.link("del", index=index)


def live_xml(drv: LibvirtCompute, server_id: str) -> str:
    return drv.connection().lookupByName(domain_name(drv.site, server_id)).XMLDesc(0)


def operstate(name: str) -> str:
    with IPRoute() as ip:
        return ip.get_links(ifname=name)[0].get_attr("IFLA_OPERSTATE")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Guests a and b on one bridge, each pinging the other (booting in parallel)."""
    if os.geteuid() != 0:
        skip("needs root to make a bridge and taps")
    require_qemu_host(NET_IMAGE_VERSION)
    suffix = uuid.uuid4().hex[:4]
    prefix = f"skt-g{suffix}-"
    state = Path(tmp_path_factory.mktemp("guest-net")) / "state"
    drv = LibvirtCompute(f"itest-{suffix}", QEMU_URI, state, IMAGE_DIR, stop_grace_s=1.0)
    nics = {
        g: Nic(port_id=f"port-{g}", mac=f"52:54:00:5e:00:{i:02x}", tap=f"{prefix}{g}",
               addresses=(f"{ADDR[g]}/24",))
        for i, g in enumerate("ab", start=1)
    }  # fmt: skip
    try:
        make_links(prefix, ["a", "b", "c"])
        for g, peer in (("a", "b"), ("b", "a")):
            ping = (("ping", ADDR[peer]),)  # metadata: skerry.ping= on the command line
            drv.create(spec(g, name=f"guest-{g}", metadata=ping), nics=[nics[g]])
        yield Pair(drv=drv, prefix=prefix, nics=nics)
    finally:
        for server_id in drv.list_owned():
            drv.delete(server_id)
        drv.close()
        delete_links(prefix)


def test_tap_guest_gets_its_address(pair: Pair) -> None:
    for g in "ab":
        nic = pair.nics[g]
        line = wait_console(pair.drv, g, rf"SKERRY-NET mac={nic.mac} dev=(\S+) addr=(\S+)")
        assert line.group(2) == f"{ADDR[g]}/24"
        assert line.group(1) == "eth0"
        wait_console(pair.drv, g, f"SKERRY-GUEST-UP hostname=guest-{g}")
        assert pair.drv.list_owned()[g].ports == {nic.port_id}
        assert operstate(nic.tap) == "UP"  # QEMU holds the tap open


def test_guests_on_one_bridge_ping_each_other(pair: Pair) -> None:
    for g, peer in (("a", "b"), ("b", "a")):
        wait_console(pair.drv, g, rf"SKERRY-PING {ADDR[peer]} ok")


def test_hot_plug_nic_into_running_guest(pair: Pair) -> None:
    drv = pair.drv
    wait_console(drv, "a", "SKERRY-GUEST-UP")  # a guest still booting may miss the hot-plug
    nic = Nic(port_id="port-c", mac="52:54:00:5e:00:0c", tap=f"{pair.prefix}c")
    assert operstate(nic.tap) == "DOWN"  # nobody holds it yet

    drv.attach_nic("a", nic)
    drv.attach_nic("a", nic)  # already there: success, no second NIC
    assert nic_port_ids(live_xml(drv, "a")) == ["port-a", "port-c"]
    assert f"dev='{nic.tap}'" in live_xml(drv, "a")
    assert drv.list_owned()["a"].ports == {"port-a", "port-c"}
    assert operstate(nic.tap) == "UP"

    drv.detach_nic("a", "port-c")
    seen = drv.list_owned()["a"]
    # Gone from the persistent definition at once; live until the guest lets go of it.
    assert seen.ports - seen.half_plugged == {"port-a"}
    assert seen.half_plugged <= {"port-c"}
    deadline = time.monotonic() + UNPLUG_TIMEOUT_S
    while "port-c" in nic_port_ids(live_xml(drv, "a")) and time.monotonic() < deadline:
        time.sleep(0.2)  # the guest acknowledges the unplug (ACPI) before QEMU removes it
    assert nic_port_ids(live_xml(drv, "a")) == ["port-a"]
    drv.detach_nic("a", "port-c")  # already gone: success
    seen = drv.list_owned()["a"]
    assert (seen.ports, seen.half_plugged) == ({"port-a"}, frozenset())
    pings = f"SKERRY-PING {ADDR['b']} ok"
    seen = drv.console_tail("a", 65536).count(pings)
    deadline = time.monotonic() + 10.0
    while drv.console_tail("a", 65536).count(pings) <= seen and time.monotonic() < deadline:
        time.sleep(0.3)
    assert drv.console_tail("a", 65536).count(pings) > seen  # the boot NIC still works
