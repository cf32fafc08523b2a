"""The domain XML builder: NICs, kernel command line, CPU/NUMA/hugepage placement.

Pure: the XML is parsed back and checked element by element. That libvirt
accepts it is checked in test_compute_libvirt_testdriver.py (test driver) and
tests/integration/test_compute_libvirt_qemu.py (qemu driver).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from edged.drivers.compute import GuestCell, Nic, Placement, ServerSpec
from edged.drivers.domain_xml import (
    build_domain_xml,
    cpuset,
    guest_cells,
    kernel_cmdline,
    nic_port_ids,
    nic_xml,
    parse_ownership,
    parse_pci,
    with_nic,
    without_nic,
)
from tests.unit.compute_support import SITE, spec, tap_nic

VF = Nic("p-vf", "52:54:00:00:00:aa", kind="hostdev", pci="0000:3b:02.1", vlan=42)


def build(s: ServerSpec, nics: list[Nic] | None = None, placement: Placement | None = None) -> str:
    return build_domain_xml(
        s,
        site=SITE,
        virt_type="qemu",
        state_dir=Path("/st"),
        image_dir=Path("/img"),
        nics=nics or [],
        placement=placement,
    )


def attrs(root: ET.Element, path: str) -> list[dict[str, str]]:
    return [dict(el.attrib) for el in root.iterfind(path)]


def test_tap_nic_is_an_unmanaged_ethernet_interface() -> None:
    el = ET.fromstring(nic_xml(tap_nic("p1", 1, tap="sk-t-abc", mtu=1450)))
    assert el.tag == "interface"
    assert el.attrib == {"type": "ethernet"}
    assert attrs(el, "mac") == [{"address": "52:54:00:00:00:01"}]
    assert attrs(el, "target") == [{"dev": "sk-t-abc", "managed": "no"}]
    assert attrs(el, "model") == [{"type": "virtio"}]
    assert attrs(el, "mtu") == [{"size": "1450"}]
    assert attrs(el, "alias") == [{"name": "ua-sk-p1"}]
    assert el.find("source") is None  # libvirt must not look for a bridge


def test_hostdev_nic_passes_the_vf_by_pci_address() -> None:
    el = ET.fromstring(nic_xml(VF))
    assert el.attrib == {"type": "hostdev", "managed": "yes"}
    assert attrs(el, "mac") == [{"address": "52:54:00:00:00:aa"}]
    pci = {"type": "pci", "domain": "0x0000", "bus": "0x3b", "slot": "0x02", "function": "0x1"}
    assert attrs(el, "source/address") == [pci]
    assert attrs(el, "vlan/tag") == [{"id": "42"}]
    assert attrs(el, "alias") == [{"name": "ua-sk-p-vf"}]
    untagged = ET.fromstring(nic_xml(Nic("p2", "52:54:00:00:00:ab", kind="hostdev", pci=VF.pci)))
    assert untagged.find("vlan") is None


def test_parse_pci() -> None:
    assert parse_pci("0000:AF:1f.7") == {
        "type": "pci", "domain": "0x0000", "bus": "0xaf", "slot": "0x1f", "function": "0x7",
    }  # fmt: skip
    for bad in ("", "3b:02.1", "0000:3b:02", "0000:3b:20.1", "0000:3b:02.8", "0000:3b:02.1 "):
        with pytest.raises(ValueError, match="bad PCI address") as err:
            parse_pci(bad)
        assert repr(bad) in str(err.value)


@pytest.mark.parametrize(
    ("nic", "message"),
    [
        (Nic("p1", "52:54:00:00:00:aa", kind="hostdev", pci="3b:02.1"), "'3b:02.1'"),
        (Nic("p 1", "52:54:00:00:00:01", tap="t1"), "port id 'p 1'"),
        (Nic("p1", "52:54:00:00:01", tap="t1"), "bad MAC"),
        (Nic("p1", "52:54:00:00:00:01", tap=""), "bad tap name"),
        (Nic("p1", "52:54:00:00:00:01", tap="a-very-long-tap-name"), "bad tap name"),
    ],
)
def test_bad_nics_are_value_errors(nic: Nic, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        nic_xml(nic)
    with pytest.raises(ValueError, match=message):
        build(spec(), [nic])


def test_cmdline_carries_every_address_of_every_nic() -> None:
    nics = [
        Nic("p1", "52:54:00:00:00:0A", tap="t1", addresses=("198.51.100.5/24", "2001:db8::5/64")),
        tap_nic("p2", 2),  # no addresses: nothing on the command line
        tap_nic("p3", 3, addresses=("203.0.113.9/28",)),
    ]
    assert kernel_cmdline(spec(), nics).split()[3:] == [
        "skerry.hostname=vm-s1",
        "skerry.ip=52:54:00:00:00:0a,198.51.100.5/24",
        "skerry.ip=52:54:00:00:00:0a,2001:db8::5/64",
        "skerry.ip=52:54:00:00:00:03,203.0.113.9/28",
    ]
    root = ET.fromstring(build(spec(), nics))
    assert root.findtext("os/cmdline") == kernel_cmdline(spec(), nics)
    for bad in ("198.51.100.5", "198.51.100.5/24 init=/bin/sh", "nonsense/24"):
        with pytest.raises(ValueError, match="address"):
            kernel_cmdline(spec(), [tap_nic("p1", 1, addresses=(bad,))])


def test_cmdline_carries_metadata() -> None:
    s = spec(metadata=(("ping", "10.0.0.1,10.0.0.2"), ("role", "")))
    assert kernel_cmdline(s).split()[4:] == ["skerry.ping=10.0.0.1,10.0.0.2", "skerry.role="]
    assert "skerry.ping=10.0.0.1,10.0.0.2 skerry.role=" in build(s)
    for key, value in [("ip", "x"), ("hostname", "x"), ("a b", "x"), ("k", "a b"),
                       ("k", 'say"hi'), ("k", "line\n"), ("k\n", "v")]:  # fmt: skip
        with pytest.raises(ValueError, match="cannot go on the kernel command line"):
            kernel_cmdline(spec(metadata=((key, value),)))


def test_nic_port_ids_round_trip() -> None:
    nics = [tap_nic("p-b", 2), VF, tap_nic("p-a", 1)]
    xml = build(spec(), nics)
    assert nic_port_ids(xml) == ["p-b", "p-vf", "p-a"]
    assert nic_port_ids(build(spec())) == []
    with pytest.raises(ValueError, match="twice"):
        build(spec(), [tap_nic("p1", 1), tap_nic("p1", 2)])

    added = with_nic(xml, tap_nic("p-c", 3))
    assert nic_port_ids(added) == ["p-b", "p-vf", "p-a", "p-c"]
    assert with_nic(added, tap_nic("p-c", 3)) == added
    removed = without_nic(added, "p-vf")
    assert nic_port_ids(removed) == ["p-b", "p-a", "p-c"]
    assert without_nic(removed, "p-vf") == removed
    assert parse_ownership(removed) == parse_ownership(xml)  # metadata survives the edit


def test_no_placement_no_tuning() -> None:
    root = ET.fromstring(build(spec(vcpus=2)))
    assert attrs(root, "vcpu") == [{"placement": "static"}]
    assert root.findtext("vcpu") == "2"
    for absent in ("cputune", "numatune", "cpu", "memoryBacking"):
        assert root.find(absent) is None


def test_dedicated_two_cells_with_hugepages() -> None:
    s = spec(vcpus=4, ram_mb=1024, cpu_policy="dedicated", mem_page_size="2MB",
             numa_nodes=2, numa_placement=(1, 0))  # fmt: skip
    cells = (GuestCell(1, (9, 8, 10), 3, 768), GuestCell(0, (2,), 1, 256))
    root = ET.fromstring(build(s, placement=Placement(cells, dedicated=True, page_size_kb=2048)))

    assert attrs(root, "vcpu") == [{"placement": "static"}]
    pins = [(p["vcpu"], p["cpuset"]) for p in attrs(root, "cputune/vcpupin")]
    assert pins == [("0", "9"), ("1", "8"), ("2", "10"), ("3", "2")]
    assert attrs(root, "numatune/memory") == [{"mode": "strict", "nodeset": "0-1"}]
    assert attrs(root, "numatune/memnode") == [
        {"cellid": "0", "mode": "strict", "nodeset": "1"},
        {"cellid": "1", "mode": "strict", "nodeset": "0"},
    ]
    assert attrs(root, "cpu/numa/cell") == [
        {"id": "0", "cpus": "0-2", "memory": "768", "unit": "MiB"},
        {"id": "1", "cpus": "3", "memory": "256", "unit": "MiB"},
    ]
    assert attrs(root, "memoryBacking/hugepages/page") == [{"size": "2048", "unit": "KiB"}]


def test_hugepages_without_placement_follow_the_flavor() -> None:
    root = ET.fromstring(build(spec(mem_page_size="1GB", ram_mb=2048)))
    assert attrs(root, "memoryBacking/hugepages/page") == [{"size": "1048576", "unit": "KiB"}]
    assert root.find("numatune") is None


def test_shared_one_cell_floats_over_the_nodes_cpus() -> None:
    s = spec(vcpus=2, ram_mb=512, numa_placement=(1,))
    cells = (GuestCell(1, (8, 9, 10, 11, 14), 2, 512),)
    root = ET.fromstring(build(s, placement=Placement(cells, dedicated=False)))
    assert attrs(root, "vcpu") == [{"placement": "static", "cpuset": "8-11,14"}]
    assert root.find("cputune") is None
    assert attrs(root, "numatune/memory") == [{"mode": "strict", "nodeset": "1"}]
    assert root.find("numatune/memnode") is None  # no guest NUMA topology
    assert root.find("cpu") is None
    assert root.find("memoryBacking") is None


def test_guest_numa_without_placement_splits_evenly() -> None:
    assert guest_cells(spec(vcpus=3, ram_mb=1000, numa_nodes=2), None) == [(2, 500), (1, 500)]
    root = ET.fromstring(build(spec(vcpus=4, ram_mb=1024, numa_nodes=2)))
    assert [c["cpus"] for c in attrs(root, "cpu/numa/cell")] == ["0-1", "2-3"]
    assert root.find("numatune") is None
    with pytest.raises(ValueError, match="numa_nodes"):
        build(spec(vcpus=1, numa_nodes=2))


@pytest.mark.parametrize(
    ("s", "placement", "message"),
    [
        (spec(vcpus=2, numa_nodes=2), Placement((GuestCell(0, (0, 1), 2, 128),), True), "cells"),
        (spec(vcpus=2), Placement((GuestCell(0, (0,), 1, 128),), True), "add up"),
        (spec(vcpus=2), Placement((GuestCell(0, (0,), 2, 128),), True), "2 vCPUs but 1"),
        (spec(vcpus=1), Placement((GuestCell(0, (), 1, 128),), False), "no host CPUs"),
    ],
)
def test_placement_that_does_not_fit_the_spec(
    s: ServerSpec, placement: Placement, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build(s, placement=placement)


def test_cpuset() -> None:
    assert cpuset([]) == ""
    assert cpuset([3]) == "3"
    assert cpuset([5, 0, 1, 2, 2, 7, 8]) == "0-2,5,7-8"


# --- volume disks --------------------------------------------------------------------


def test_volume_disk_element_and_serial_prefix() -> None:
    from edged.drivers.compute import Disk
    from edged.drivers.domain_xml import disk_element, disk_serial

    vid = "0b5c3a2e-7d7e-4a43-9f6f-6c1f2f8f1a10"
    el = disk_element(Disk(vid, Path("/v/x.qcow2"), "5e0b3c1a-0000-4000-8000-000000000001"), "vdc")
    assert el.find("target").attrib == {"dev": "vdc", "bus": "virtio"}  # type: ignore[union-attr]
    assert el.findtext("serial") == disk_serial(vid) == "0b5c3a2e-7d7e-4a43-9"
    assert el.find("alias").get("name") == f"ua-vol-{vid}"  # type: ignore[union-attr]
    enc = el.find("source/encryption")
    assert enc is not None and enc.get("format") == "luks"
    assert enc.find("secret").attrib == {  # type: ignore[union-attr]
        "type": "passphrase", "uuid": "5e0b3c1a-0000-4000-8000-000000000001"
    }  # fmt: skip
    plain = disk_element(Disk("v1", Path("/v/v1.qcow2")), "vdb")
    assert plain.find("source/encryption") is None
    for bad_target in ("sda", "vd", "vdaa"):
        with pytest.raises(ValueError):
            disk_element(Disk("v1", Path("/v")), bad_target)
    with pytest.raises(ValueError):
        disk_element(Disk("a/b", Path("/v")), "vdb")


def test_disks_added_found_and_removed_by_volume_id() -> None:
    from edged.drivers.compute import Disk
    from edged.drivers.domain_xml import disk_volume_ids, free_target, with_disk, without_disk

    xml = build_domain_xml(spec("s1"), site="s", virt_type="test", state_dir=Path("/st"),
                           image_dir=Path("/img"))  # fmt: skip
    assert disk_volume_ids(xml) == [] and free_target(xml) == "vdb"
    one = with_disk(xml, Disk("v1", Path("/v/v1.qcow2")), "vdb")
    assert with_disk(one, Disk("v1", Path("/v/v1.qcow2")), "vdc") == one
    assert disk_volume_ids(one) == ["v1"] and free_target(one) == "vdc"
    # A target taken in either definition (live or persistent) is not given.
    two = with_disk(xml, Disk("v2", Path("/v/v2.qcow2")), "vdc")
    assert free_target(one, two) == "vdd"
    assert disk_volume_ids(without_disk(one, "v1")) == []
    assert without_disk(xml, "v1") == ET.tostring(ET.fromstring(xml), encoding="unicode")


def test_boot_volume_is_vda() -> None:
    from edged.drivers.compute import Disk

    xml = build_domain_xml(spec("s1", boot_volume="root"), site="s", virt_type="test",
                           state_dir=Path("/st"), image_dir=Path("/img"),
                           root_disk=Disk("root", Path("/v/root.qcow2")))  # fmt: skip
    disks = ET.fromstring(xml).findall("devices/disk")
    assert len(disks) == 1
    assert disks[0].find("source").get("file") == "/v/root.qcow2"  # type: ignore[union-attr]
    assert disks[0].find("target").get("dev") == "vda"  # type: ignore[union-attr]
