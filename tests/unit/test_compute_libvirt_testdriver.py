"""LibvirtCompute against libvirt's test driver (no libvirtd, no QEMU).

Each test opens ``test:///<tmp>/node.xml``: a fresh, empty host per connection
(``test:///default`` is shared by every open in the process and leaks state).
Disks are still made with the real ``qemu-img``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import libvirt
import pytest

from edged.drivers.compute import ComputeError, GuestCell, Nic, Placement
from edged.drivers.compute_libvirt import LibvirtCompute, map_state
from edged.drivers.domain_xml import (
    NS,
    build_domain_xml,
    console_path,
    disk_path,
    domain_name,
    nic_port_ids,
    parse_ownership,
)
from tests.unit.compute_support import SITE, spec, tap_nic

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img not installed")


def foreign_xml(name: str, metadata: str = "") -> str:
    """A domain that is not this site's (no or foreign metadata)."""
    meta = f"<metadata>{metadata}</metadata>" if metadata else ""
    return (
        f"<domain type='test'><name>{name}</name>{meta}"
        "<memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64'>hvm</type></os></domain>"
    )


def state_of(drv: LibvirtCompute, server_id: str) -> str:
    return drv.list_owned()[server_id].state


def persistent_xml(drv: LibvirtCompute, server_id: str) -> str:
    dom = drv.connection().lookupByName(domain_name(SITE, server_id))
    return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)


VF = Nic("p-vf", "52:54:00:00:00:aa", kind="hostdev", pci="0000:3b:02.1", vlan=7)


def test_virt_type_auto(tmp_path: Path) -> None:
    assert LibvirtCompute(SITE, "test:///x.xml", tmp_path, tmp_path).virt_type == "test"
    assert LibvirtCompute(SITE, "qemu:///system", tmp_path, tmp_path).virt_type == "qemu"
    assert LibvirtCompute(SITE, "qemu:///system", tmp_path, tmp_path, "kvm").virt_type == "kvm"


def test_domain_xml_roundtrip(tmp_path: Path) -> None:
    s = spec()
    xml = build_domain_xml(
        s, site=SITE, virt_type="qemu", state_dir=tmp_path / "st", image_dir=tmp_path / "img"
    )
    owner = parse_ownership(xml)
    assert owner is not None
    assert (owner.site, owner.id, owner.name, owner.build) == (SITE, "s1", "vm-s1", s.build_hash())
    assert f"<name>{domain_name(SITE, 's1')}</name>" in xml
    assert "skerry.hostname=vm-s1" in xml
    assert str(tmp_path / "st" / "disks" / "s1.qcow2") in xml
    assert parse_ownership("<domain><name>x</name></domain>") is None
    assert parse_ownership("not xml") is None


def test_map_state() -> None:
    assert map_state(libvirt.VIR_DOMAIN_RUNNING, 1) == "running"
    assert map_state(libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN) == "shutoff"
    assert map_state(libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED) == "crashed"
    assert map_state(libvirt.VIR_DOMAIN_CRASHED, 0) == "crashed"
    assert map_state(libvirt.VIR_DOMAIN_PAUSED, 0) == "paused"
    assert map_state(libvirt.VIR_DOMAIN_NOSTATE, 0) == "other"


def test_create_runs_and_is_idempotent(drv: LibvirtCompute) -> None:
    s = spec()
    drv.create(s)
    owned = drv.list_owned()
    assert set(owned) == {"s1"}
    assert owned["s1"].state == "running"
    assert owned["s1"].build_hash == s.build_hash()
    assert disk_path(drv.state_dir, "s1").is_file()

    drv.create(s)  # same build: success, nothing changes
    assert drv.list_owned() == owned
    assert len(drv.connection().listAllDomains()) == 1


def test_create_stopped_defines_only(drv: LibvirtCompute) -> None:
    drv.create(spec(power="stopped"))
    assert state_of(drv, "s1") == "shutoff"
    drv.create(spec(power="running"))  # same build hash: starts it
    assert state_of(drv, "s1") == "running"


def test_create_with_other_build_fails(drv: LibvirtCompute) -> None:
    drv.create(spec())
    with pytest.raises(ComputeError) as err:
        drv.create(spec(ram_mb=256))
    assert err.value.server_id == "s1"
    assert not err.value.permanent


def test_stop_start_idempotent(drv: LibvirtCompute) -> None:
    drv.create(spec())
    drv.stop("s1")
    assert state_of(drv, "s1") == "shutoff"
    drv.stop("s1")
    assert state_of(drv, "s1") == "shutoff"
    drv.start("s1")
    assert state_of(drv, "s1") == "running"
    drv.start("s1")
    assert state_of(drv, "s1") == "running"


def test_start_paused_resumes(drv: LibvirtCompute) -> None:
    drv.create(spec())
    drv.connection().lookupByName(domain_name(SITE, "s1")).suspend()
    assert state_of(drv, "s1") == "paused"
    drv.start("s1")
    assert state_of(drv, "s1") == "running"


def test_start_stop_missing_server(drv: LibvirtCompute) -> None:
    for op in (drv.start, drv.stop):
        with pytest.raises(ComputeError) as err:
            op("nope")
        assert err.value.server_id == "nope"


def test_delete_removes_everything_and_is_idempotent(drv: LibvirtCompute) -> None:
    drv.create(spec())
    console = console_path(drv.state_dir, "s1")
    console.write_text("boot log\n")  # the test driver writes no console
    drv.delete("s1")
    assert drv.list_owned() == {}
    assert drv.connection().listAllDomains() == []
    assert not disk_path(drv.state_dir, "s1").exists()
    assert not console.exists()
    drv.delete("s1")
    drv.delete("never-existed")


def test_foreign_domains_are_invisible(drv: LibvirtCompute) -> None:
    conn = drv.connection()
    # Named like ours but without metadata, and named like ours but of another site.
    no_meta = conn.defineXML(foreign_xml(domain_name(SITE, "x1")))
    other_meta = f'<o:server xmlns:o="{NS}" site="site-b" id="x2" name="n" build="b"/>'
    other = conn.defineXML(foreign_xml(domain_name(SITE, "x2"), other_meta))
    other.create()
    unrelated = f'<u:thing xmlns:u="https://example.com/x" site="{SITE}" id="x3"/>'
    conn.defineXML(foreign_xml("unrelated", unrelated))
    drv.create(spec("mine"))

    assert set(drv.list_owned()) == {"mine"}
    for server_id in ("x1", "x2"):
        drv.delete(server_id)
        with pytest.raises(ComputeError):
            drv.stop(server_id)
    assert no_meta.isActive() == 0
    assert other.isActive() == 1
    names = {d.name() for d in conn.listAllDomains()}
    assert names == {domain_name(SITE, n) for n in ("x1", "x2", "mine")} | {"unrelated"}
    # A name clash with a domain we do not own is an error, never a takeover.
    with pytest.raises(ComputeError):
        drv.create(spec("x1"))
    assert not disk_path(drv.state_dir, "x1").exists()


def test_other_site_driver_sees_only_its_own(drv: LibvirtCompute, image_dir: Path) -> None:
    drv.create(spec("a1"))
    other = LibvirtCompute("site-b", drv.uri, drv.state_dir.parent / "b", image_dir)
    other._conn = drv.connection()  # the test driver's state lives in one connection
    other.create(spec("a1"))
    assert set(other.list_owned()) == {"a1"}
    other.delete("a1")
    assert set(drv.list_owned()) == {"a1"}
    assert state_of(drv, "a1") == "running"


def test_leftovers_after_half_create(drv: LibvirtCompute) -> None:
    drv.create(spec("ok"))
    # A create that crashed after making the disk, before defining the domain.
    half = disk_path(drv.state_dir, "half")
    half.write_bytes(b"")
    console_path(drv.state_dir, "orphan").write_text("old log")
    assert drv.list_leftovers() == {"half", "orphan"}
    drv.delete("half")
    drv.delete("orphan")
    assert drv.list_leftovers() == set()
    assert set(drv.list_owned()) == {"ok"}


def test_failed_create_cleans_up(drv: LibvirtCompute) -> None:
    with pytest.raises(ComputeError) as err:
        drv.create(spec("bad", vcpus=0))
    assert err.value.server_id == "bad"
    assert drv.list_owned() == {}
    assert drv.list_leftovers() == set()


def test_missing_image_is_permanent(drv: LibvirtCompute, image_dir: Path) -> None:
    with pytest.raises(ComputeError) as err:
        drv.create(spec(image="nonexistent"))
    assert err.value.permanent
    assert str(image_dir / "nonexistent" / "vmlinuz") in str(err.value)

    (image_dir / "tiny" / "initrd.gz").unlink()
    with pytest.raises(ComputeError) as err:
        drv.create(spec())
    assert err.value.permanent
    assert "initrd.gz" in err.value.reason
    assert drv.list_owned() == {}
    assert drv.list_leftovers() == set()


def test_invalid_server_id_is_permanent(drv: LibvirtCompute) -> None:
    with pytest.raises(ComputeError) as err:
        drv.delete("../etc")
    assert err.value.permanent


def test_inventory(drv: LibvirtCompute) -> None:
    inv = drv.inventory()
    assert inv.cpus == 4
    assert inv.ram_mb == 8192
    assert inv.disk_gb == shutil.disk_usage(drv.state_dir).total // 2**30
    assert inv.disk_gb > 0
    assert inv.hypervisor == "test"


def test_console_tail(drv: LibvirtCompute) -> None:
    assert drv.console_tail("s1") == ""
    path = console_path(drv.state_dir, "s1")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"a" * 100 + b"\xff" + b"END")
    assert drv.console_tail("s1", max_bytes=4) == "\ufffdEND"
    assert len(drv.console_tail("s1")) == 104


def test_reconnects_when_closed(drv: LibvirtCompute) -> None:
    assert drv.list_owned() == {}
    drv.close()
    assert drv.list_owned() == {}
    drv.create(spec())
    assert set(drv.list_owned()) == {"s1"}


def test_create_with_nics_and_placement(drv: LibvirtCompute) -> None:
    s = spec(vcpus=2, ram_mb=256, cpu_policy="dedicated", mem_page_size="2MB",
             numa_nodes=2, numa_placement=(0, 0))  # fmt: skip
    cells = (GuestCell(0, (3,), 1, 128), GuestCell(0, (1,), 1, 128))
    nics = [tap_nic("p-tap", 1, addresses=("198.51.100.5/24",)), VF]
    drv.create(s, nics, Placement(cells, dedicated=True, page_size_kb=2048))

    assert drv.list_owned()["s1"].ports == {"p-tap", "p-vf"}
    xml = persistent_xml(drv, "s1")
    assert nic_port_ids(xml) == ["p-tap", "p-vf"]
    assert "skerry.ip=52:54:00:00:00:01,198.51.100.5/24" in xml
    assert "<page size='2048' unit='KiB'/>" in xml
    dom = drv.connection().lookupByName(domain_name(SITE, "s1"))
    pinned = [tuple(i for i, on in enumerate(m) if on) for m in dom.vcpuPinInfo(0)]
    assert pinned == [(3,), (1,)]


def test_list_owned_ports_empty_without_nics(drv: LibvirtCompute) -> None:
    drv.create(spec())
    assert drv.list_owned()["s1"].ports == frozenset()


def test_attach_detach_on_shut_off_domain(drv: LibvirtCompute) -> None:
    drv.create(spec(power="stopped"), [tap_nic("p1", 1)])
    nic = tap_nic("p2", 2)
    for _ in range(2):  # the second attach finds the port there: nothing changes
        drv.attach_nic("s1", nic)
        assert nic_port_ids(persistent_xml(drv, "s1")) == ["p1", "p2"]
    drv.attach_nic("s1", VF)
    assert drv.list_owned()["s1"].ports == {"p1", "p2", "p-vf"}
    assert "<address type='pci' domain='0x0000' bus='0x3b' slot='0x02' function='0x1'/>" in (
        persistent_xml(drv, "s1")
    )

    for _ in range(2):  # the second detach finds nothing to remove
        drv.detach_nic("s1", "p1")
        assert nic_port_ids(persistent_xml(drv, "s1")) == ["p2", "p-vf"]
    drv.detach_nic("s1", "never-attached")
    assert drv.list_owned()["s1"].ports == {"p2", "p-vf"}
    assert state_of(drv, "s1") == "shutoff"

    drv.start("s1")  # the domain boots with what was attached while it was off
    dom = drv.connection().lookupByName(domain_name(SITE, "s1"))
    assert nic_port_ids(dom.XMLDesc(0)) == ["p2", "p-vf"]


def test_running_domain_without_hotplug_is_a_temporary_error(drv: LibvirtCompute) -> None:
    drv.create(spec(), [tap_nic("p1", 1)])
    with pytest.raises(ComputeError, match="cannot hot-plug") as err:
        drv.attach_nic("s1", tap_nic("p2", 2))
    assert err.value.server_id == "s1"
    assert not err.value.permanent
    with pytest.raises(ComputeError, match="cannot hot-plug"):
        drv.detach_nic("s1", "p1")
    # Already as wanted: no hot-plug needed, so success.
    drv.attach_nic("s1", tap_nic("p1", 1))
    drv.detach_nic("s1", "p2")
    assert drv.list_owned()["s1"].ports == {"p1"}


def test_bad_pci_address_is_permanent_and_leaves_nothing(drv: LibvirtCompute) -> None:
    bad = Nic("p-vf", "52:54:00:00:00:aa", kind="hostdev", pci="0000:3b:02")
    with pytest.raises(ComputeError, match="'0000:3b:02'") as err:
        drv.create(spec(), [bad])
    assert err.value.permanent
    assert err.value.server_id == "s1"
    assert drv.list_owned() == {}
    assert drv.list_leftovers() == set()

    drv.create(spec(power="stopped"))
    with pytest.raises(ComputeError, match="'0000:3b:02'") as err:
        drv.attach_nic("s1", bad)
    assert err.value.permanent
    assert drv.list_owned()["s1"].ports == frozenset()


def test_nic_ops_on_missing_server(drv: LibvirtCompute) -> None:
    with pytest.raises(ComputeError, match="no such server") as err:
        drv.attach_nic("nope", tap_nic("p1", 1))
    assert err.value.server_id == "nope"
    with pytest.raises(ComputeError, match="no such server"):
        drv.detach_nic("nope", "p1")
