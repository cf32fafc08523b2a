"""SR-IOV inventory read from a sysfs tree built in tmp_path (no VF hardware here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edged.drivers.sriov import (
    NodeCount,
    SriovError,
    SriovInventory,
    allocate_vf,
    parse_physnets,
    read_pf,
)


def make_pf(root: Path, name: str, bus: int, numa: int, vfs: int, total: int = 8) -> None:
    """A PF as the kernel shows it: class/net/<pf>/device -> devices/..., virtfnN -> VF."""
    pci = root / "devices" / "pci0000:00"
    pf_dev = pci / f"0000:{bus:02x}:00.0"
    pf_dev.mkdir(parents=True)
    (pf_dev / "sriov_totalvfs").write_text(f"{total}\n")
    (pf_dev / "sriov_numvfs").write_text(f"{vfs}\n")
    (pf_dev / "numa_node").write_text(f"{numa}\n")
    for n in range(vfs):
        vf_dev = pci / f"0000:{bus:02x}:00.{n + 1}"
        (vf_dev / "net" / f"{name}v{n}").mkdir(parents=True)
        os.symlink(os.path.relpath(vf_dev, pf_dev), pf_dev / f"virtfn{n}")
    net = root / "class" / "net" / name
    net.mkdir(parents=True)
    os.symlink(os.path.relpath(pf_dev, net), net / "device")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    make_pf(tmp_path, "pf0", 0x3B, numa=0, vfs=4)
    make_pf(tmp_path, "pf1", 0x5E, numa=1, vfs=4)
    return tmp_path


def test_reads_pf_and_vfs(root: Path) -> None:
    pf = read_pf(root, "pf0")
    assert (pf.pci, pf.numa_node, pf.totalvfs, pf.numvfs) == ("0000:3b:00.0", 0, 8, 4)
    assert [vf.pci for vf in pf.vfs] == [f"0000:3b:00.{n}" for n in range(1, 5)]
    assert [vf.netdev for vf in pf.vfs] == ["pf0v0", "pf0v1", "pf0v2", "pf0v3"]


def test_inventory_counts_per_physnet_and_node(root: Path) -> None:
    inv = SriovInventory(root, parse_physnets("physnet1=pf0,pf1"))
    assert inv.inventory() == {"physnet1": {0: NodeCount(4, 4), 1: NodeCount(4, 4)}}
    used = ["0000:5e:00.1", "0000:5e:00.2"]
    assert inv.inventory(used)["physnet1"][1] == NodeCount(4, 2)


def test_allocation_prefers_numa_node(root: Path) -> None:
    pfs = SriovInventory(root, parse_physnets("physnet1=pf0,pf1")).scan()
    vf = allocate_vf(pfs, "physnet1", 1, [])
    assert (vf.pf, vf.numa_node, vf.pci) == ("pf1", 1, "0000:5e:00.1")
    node1 = [f"0000:5e:00.{n}" for n in range(1, 5)]
    assert allocate_vf(pfs, "physnet1", 1, node1).numa_node == 0  # falls back
    with pytest.raises(SriovError, match=r"physnet 'physnet1' on NUMA node 1"):
        allocate_vf(pfs, "physnet1", 1, node1, strict=True)


def test_exhaustion_names_physnet_and_node(root: Path) -> None:
    inv = SriovInventory(root, parse_physnets("physnet1=pf0;physnet2=pf1"))
    used: list[str] = []
    for _ in range(4):
        used.append(inv.allocate("physnet2", 1, used).pci)
    assert len(set(used)) == 4
    with pytest.raises(SriovError, match=r"no free VF on physnet 'physnet2' on NUMA node 1"):
        inv.allocate("physnet2", 1, used)
    with pytest.raises(SriovError, match="physnet 'physnet9' has no SR-IOV PFs"):
        inv.allocate("physnet9", 0, used)


def test_uevent_gives_pci_address_when_device_is_a_directory(tmp_path: Path) -> None:
    dev = tmp_path / "class" / "net" / "pf9" / "device"
    dev.mkdir(parents=True)
    (dev / "sriov_totalvfs").write_text("2")
    (dev / "sriov_numvfs").write_text("0")
    (dev / "uevent").write_text("DRIVER=ixgbe\nPCI_SLOT_NAME=0000:af:00.0\n")
    pf = read_pf(tmp_path, "pf9")
    assert (pf.pci, pf.numa_node, pf.vfs) == ("0000:af:00.0", 0, ())


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no_totalvfs", "has no sriov_totalvfs"),
        ("garbage_numvfs", "sriov_numvfs: not an integer"),
        ("too_many", "sriov_numvfs 9 outside 0..8"),
        ("missing_virtfn", "sriov_numvfs is 4 but 3 virtfn links exist"),
        ("virtfn_dir", "virtfn0 is not a link"),
    ],
)
def test_malformed_tree_gives_clear_error(root: Path, breakage: str, message: str) -> None:
    dev = root / "class" / "net" / "pf0" / "device"
    if breakage == "no_totalvfs":
        (dev / "sriov_totalvfs").unlink()
    elif breakage == "garbage_numvfs":
        (dev / "sriov_numvfs").write_text("four\n")
    elif breakage == "too_many":
        (dev / "sriov_numvfs").write_text("9\n")
    elif breakage == "missing_virtfn":
        (dev / "virtfn3").unlink()
    else:
        (dev / "virtfn0").unlink()
        (dev / "virtfn0").mkdir()
    with pytest.raises(SriovError, match=message):
        read_pf(root, "pf0")


def test_missing_pf_and_bad_mapping(root: Path) -> None:
    with pytest.raises(SriovError, match=r"PF eth7: .* does not exist"):
        SriovInventory(root, {"physnet1": ("eth7",)}).inventory()
    with pytest.raises(SriovError, match="expected 'physnet=pf"):
        parse_physnets("physnet1")
    assert parse_physnets("") == {}
    assert parse_physnets(" a=pf0, pf1 ; b=pf2 ") == {"a": ("pf0", "pf1"), "b": ("pf2",)}
