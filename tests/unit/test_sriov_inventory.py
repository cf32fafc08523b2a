"""SR-IOV inventory, VF settings and the simulated bed's layout, on sysfs trees in tmp_path.

No VF hardware here: the trees are built by hand; netlink is in tests/integration.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edged.config import EdgeConfig
from edged.configfile import ConfigError, from_mapping
from edged.drivers.sriov import (
    NodeCount,
    SriovError,
    SriovInventory,
    VirtualFunction,
    allocate_vf,
    parse_physnets,
    read_pf,
)
from edged.drivers.sriov_simbed import SimPf, check_bed, pf_pci, physnets_config, vf_pci
from edged.drivers.sriov_vf import (
    NetlinkVfConfig,
    SimulatedVfConfig,
    VfSettings,
    make_vf_configurator,
    vf_attributes,
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
        used.append(allocate_vf(inv.scan(), "physnet2", 1, used).pci)
    assert len(set(used)) == 4
    with pytest.raises(SriovError, match=r"no free VF on physnet 'physnet2' on NUMA node 1"):
        allocate_vf(inv.scan(), "physnet2", 1, used)
    with pytest.raises(SriovError, match="physnet 'physnet9' has no SR-IOV PFs"):
        allocate_vf(inv.scan(), "physnet9", 0, used)


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


# -- VF configuration: settings, requests, backend choice ---------------------------------


def test_vf_settings_normalise_and_validate() -> None:
    settings = VfSettings("FA:16:3E:00:00:01", vlan=100)
    assert (settings.mac, settings.vlan, settings.spoofchk, settings.trust) == (
        "fa:16:3e:00:00:01",
        100,
        True,
        False,
    )
    assert VfSettings("fa:16:3e:00:00:01", vlan=4094).vlan == 4094
    for mac, message in [
        ("fa:16:3e:00:00", "six hex octets"),
        ("fa-16-3e-00-00-01", "six hex octets"),
        ("00:00:00:00:00:00", "not a unicast address"),
        ("01:00:5e:00:00:01", "not a unicast address"),
    ]:
        with pytest.raises(SriovError, match=message):
            VfSettings(mac)
    for vlan in (0, 4095, -1):
        with pytest.raises(SriovError, match=rf"VLAN must be 1..4094 or None, got {vlan}"):
            VfSettings("fa:16:3e:00:00:01", vlan=vlan)


def test_vf_attributes_set_mac_first_and_untag_with_vlan_zero() -> None:
    attrs = vf_attributes(3, "fa:16:3e:00:00:01", None, True, False)
    assert [name for name, _ in attrs] == ["mac", "vlan", "spoofchk", "trust"]
    assert dict(attrs) == {
        "mac": {"vf": 3, "mac": "fa:16:3e:00:00:01"},
        "vlan": {"vf": 3, "vlan": {"vlan": 0, "qos": 0}},
        "spoofchk": {"vf": 3, "spoofchk": 1},
        "trust": {"vf": 3, "trust": 0},
    }
    assert dict(vf_attributes(0, "fa:16:3e:00:00:01", 42, False, True))["vlan"]["vlan"] == {
        "vlan": 42,
        "qos": 0,
    }


def test_make_vf_configurator_by_mode(tmp_path: Path) -> None:
    real = make_vf_configurator("netlink", sysfs_root=tmp_path, namespace="ns1")
    assert isinstance(real, NetlinkVfConfig)
    assert real.namespace == "ns1"
    sim = make_vf_configurator("simulated", sysfs_root=tmp_path, namespace="ns1")
    assert isinstance(sim, SimulatedVfConfig)
    assert (sim.sysfs_root, sim.namespace) == (tmp_path, "ns1")
    with pytest.raises(SriovError, match="expected netlink or simulated, got 'sriov'"):
        make_vf_configurator("sriov", sysfs_root=tmp_path, namespace="")


def test_config_refuses_unknown_vf_config_mode() -> None:
    assert from_mapping(EdgeConfig, {"site": "x1"}).sriov_vf_config == "netlink"
    cfg = from_mapping(EdgeConfig, {"site": "x1", "sriov_vf_config": "simulated"})
    assert cfg.sriov_vf_config == "simulated"
    with pytest.raises(ConfigError, match="key 'sriov_vf_config' must be netlink or simulated"):
        from_mapping(EdgeConfig, {"site": "x1", "sriov_vf_config": "hardware"})


def test_simulated_reset_of_unconfigured_vf_only_records(root: Path) -> None:
    """No netdev is touched for a VF never configured, so no namespace is needed."""
    pf = read_pf(root, "pf0")
    sim = SimulatedVfConfig(root, "no-such-namespace")
    assert sim.read_record(pf, pf.vfs[2]) is None
    sim.reset(pf, pf.vfs[2])
    sim.reset(pf, pf.vfs[2])
    record = sim.read_record(pf, pf.vfs[2])
    assert record == {
        "pf": "pf0",
        "vf": 2,
        "pci": "0000:3b:00.3",
        "netdev": "pf0v2",
        "mac": "00:00:00:00:00:00",
        "vlan": None,
        "spoofchk": True,
        "trust": False,
    }
    assert (root / "devices" / "pci0000:00" / "0000:3b:00.3" / "skerry-sim-vf.json").is_file()


def test_simulated_config_errors_name_pf_and_vf(root: Path) -> None:
    pf = read_pf(root, "pf0")
    sim = SimulatedVfConfig(root, "")
    no_netdev = VirtualFunction("pf0", 1, pf.vfs[1].pci, None, 0)
    with pytest.raises(SriovError, match="PF pf0 VF 1: the VF has no netdev"):
        sim.configure(pf, no_netdev, VfSettings("fa:16:3e:00:00:01"))
    ghost = VirtualFunction("pf0", 7, "0000:3b:00.8", "pf0v7", 0)
    with pytest.raises(SriovError, match=r"PF pf0 VF 7: .*virtfn7 does not exist"):
        sim.reset(pf, ghost)
    record = root / "devices" / "pci0000:00" / "0000:3b:00.1" / "skerry-sim-vf.json"
    record.write_text("{not json")
    with pytest.raises(SriovError, match=r"PF pf0 VF 0: .*skerry-sim-vf.json: unreadable"):
        sim.read_record(pf, pf.vfs[0])


# -- the simulated bed's names and addresses ----------------------------------------------


def test_simbed_addresses_unique_and_config_string() -> None:
    pfs = [SimPf("pf0", 0, 20, "fast"), SimPf("pf1", 1, 2, "slow"), SimPf("pf2", 1, 1, "fast")]
    addresses = [pf_pci(p) for p in range(3)] + [
        vf_pci(p, i) for p, pf in enumerate(pfs) for i in range(pf.vfs)
    ]
    assert len(set(addresses)) == len(addresses) == 26
    assert (pf_pci(0), vf_pci(0, 0), vf_pci(0, 9), pf_pci(1)) == (
        "0000:10:00.0",
        "0000:10:01.0",
        "0000:10:02.1",
        "0000:11:00.0",
    )
    assert physnets_config(pfs) == "fast=pf0,pf2;slow=pf1"
    assert parse_physnets(physnets_config(pfs)) == {"fast": ("pf0", "pf2"), "slow": ("pf1",)}


@pytest.mark.parametrize(
    ("pfs", "message"),
    [
        ([SimPf("pf0", 2, 1, "fast")], "NUMA node 2 is not in numa_cpus"),
        ([SimPf("pf0", 0, 1, "averyverylongnet")], "physnet 'averyverylongnet' empty, too long"),
        ([SimPf("pf0", 0, 1, "")], "physnet '' empty, too long"),
        ([SimPf("pf0", 0, 1, "a=b")], "physnet 'a=b' empty, too long or not a name"),
        ([SimPf("enp94s0f0np0x", 0, 1, "fast")], "link name 'enp94s0f0np0xv0w' is not a valid"),
        ([SimPf("pf0", 0, 1, "a"), SimPf("pf0", 0, 1, "b")], "link name 'pf0' used twice"),
        ([SimPf("pf0", 0, 300, "a")], "300 VFs outside 0..248"),
    ],
)
def test_simbed_refuses_impossible_beds(pfs: list[SimPf], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_bed(pfs, {0: (0, 1), 1: (2, 3)})
