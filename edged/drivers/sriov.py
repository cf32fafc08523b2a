"""SR-IOV inventory: physical functions and their virtual functions, read from sysfs.

Reads ``<sysfs_root>/class/net/<pf>/device/`` for every PF named in
``sriov_physnets``: ``sriov_totalvfs``, ``sriov_numvfs``, ``numa_node``, the
PF's PCI address (the basename of the ``device`` link, or ``PCI_SLOT_NAME``
in its ``uevent``) and one ``virtfn<N>`` link per enabled VF (its PCI address,
and its netdev name from ``virtfn<N>/net/<name>`` when it has one).

The sysfs root is configurable because machines without SR-IOV hardware (the
development and CI machines among them) have no ``sriov_totalvfs`` anywhere:
tests build such a tree in a temporary directory, and the integration tests
back each VF with a real veth link so the data path stays real.

Parsing and allocation are pure functions; :class:`SriovInventory` only ties
them to a root and a physnet mapping.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

VIRTFN = re.compile(r"^virtfn(\d+)$")
# Values of the ``sriov_vf_config`` key (see edged.drivers.sriov_vf).
VF_CONFIG_MODES = ("netlink", "simulated")


class SriovError(Exception):
    """The SR-IOV tree or mapping cannot be used, or no VF is free; names what and where."""


@dataclass(frozen=True)
class VirtualFunction:
    pf: str
    index: int
    pci: str
    netdev: str | None
    numa_node: int


@dataclass(frozen=True)
class PhysicalFunction:
    name: str
    pci: str
    numa_node: int
    totalvfs: int
    numvfs: int
    vfs: tuple[VirtualFunction, ...]


@dataclass(frozen=True)
class NodeCount:
    total: int
    free: int


def parse_physnets(text: str) -> dict[str, tuple[str, ...]]:
    """``"physnet1=pf0,pf1;physnet2=pf2"`` -> ``{"physnet1": ("pf0", "pf1"), ...}``."""
    result: dict[str, tuple[str, ...]] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        physnet, sep, pfs = (s.strip() for s in item.partition("="))
        names = tuple(filter(None, (p.strip() for p in pfs.split(","))))
        if not sep or not physnet or not names:
            raise SriovError(f"sriov_physnets: expected 'physnet=pf[,pf...]', got {item!r}")
        if physnet in result:
            raise SriovError(f"sriov_physnets: physnet {physnet!r} given twice")
        result[physnet] = names
    return result


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except FileNotFoundError:
        raise SriovError(f"{path}: missing") from None
    except ValueError:
        raise SriovError(f"{path}: not an integer: {path.read_text().strip()!r}") from None


def _pci_address(device: Path) -> str:
    if device.is_symlink():
        return os.path.basename(os.readlink(device).rstrip("/"))
    uevent = device / "uevent"
    if uevent.is_file():
        for line in uevent.read_text().splitlines():
            key, _, value = line.partition("=")
            if key == "PCI_SLOT_NAME" and value:
                return value
    raise SriovError(f"{device}: no PCI address (not a link, no PCI_SLOT_NAME in uevent)")


def _numa_node(device: Path) -> int:
    path = device / "numa_node"
    if not path.exists():
        return 0
    node = _read_int(path)
    # -1: the platform reports no NUMA affinity (single-node hosts); count it as node 0.
    return max(node, 0)


def read_pf(sysfs_root: Path, name: str) -> PhysicalFunction:
    """One PF and its enabled VFs; :class:`SriovError` naming the path when unusable."""
    device = sysfs_root / "class" / "net" / name / "device"
    if not device.exists():
        raise SriovError(f"PF {name}: {device} does not exist")
    if not (device / "sriov_totalvfs").exists():
        raise SriovError(f"PF {name}: {device} has no sriov_totalvfs (not SR-IOV capable)")
    totalvfs = _read_int(device / "sriov_totalvfs")
    numvfs = _read_int(device / "sriov_numvfs")
    if not 0 <= numvfs <= totalvfs:
        raise SriovError(f"PF {name}: sriov_numvfs {numvfs} outside 0..{totalvfs}")
    numa = _numa_node(device)
    vfs = []
    for entry in sorted(device.iterdir(), key=lambda p: p.name):
        match = VIRTFN.match(entry.name)
        if not match:
            continue
        if not entry.is_symlink():
            raise SriovError(f"PF {name}: {entry} is not a link to the VF's PCI device")
        netdevs = (
            sorted(p.name for p in (entry / "net").iterdir()) if (entry / "net").is_dir() else []
        )
        vfs.append(
            VirtualFunction(
                name,
                int(match.group(1)),
                _pci_address(entry),
                netdevs[0] if netdevs else None,
                numa,
            )
        )
    vfs.sort(key=lambda vf: vf.index)
    if len(vfs) != numvfs:
        raise SriovError(f"PF {name}: sriov_numvfs is {numvfs} but {len(vfs)} virtfn links exist")
    return PhysicalFunction(name, _pci_address(device), numa, totalvfs, numvfs, tuple(vfs))


def count(
    pfs: dict[str, tuple[PhysicalFunction, ...]], allocated: Iterable[str] = ()
) -> dict[str, dict[int, NodeCount]]:
    """Per physnet, per NUMA node: total and free VFs (``allocated`` holds VF PCI addresses)."""
    used = set(allocated)
    result: dict[str, dict[int, NodeCount]] = {}
    for physnet, functions in pfs.items():
        nodes: dict[int, NodeCount] = {}
        for vf in (vf for pf in functions for vf in pf.vfs):
            old = nodes.get(vf.numa_node, NodeCount(0, 0))
            nodes[vf.numa_node] = NodeCount(old.total + 1, old.free + (vf.pci not in used))
        result[physnet] = dict(sorted(nodes.items()))
    return result


def allocate_vf(
    pfs: dict[str, tuple[PhysicalFunction, ...]],
    physnet: str,
    numa_node: int | None,
    allocated: Iterable[str],
    *,
    strict: bool = False,
) -> VirtualFunction:
    """A free VF of ``physnet``, on ``numa_node`` when one is free there.

    Falls back to other nodes unless ``strict``; the same inputs always give the
    same VF (PFs in mapping order, VFs by index).
    """
    if physnet not in pfs:
        known = ", ".join(sorted(pfs)) or "none"
        raise SriovError(f"physnet {physnet!r} has no SR-IOV PFs (known: {known})")
    used = set(allocated)
    free = [vf for pf in pfs[physnet] for vf in pf.vfs if vf.pci not in used]
    preferred = [vf for vf in free if numa_node is None or vf.numa_node == numa_node]
    if preferred:
        return preferred[0]
    if free and not strict:
        return free[0]
    where = "any NUMA node" if numa_node is None else f"NUMA node {numa_node}"
    raise SriovError(f"no free VF on physnet {physnet!r} on {where}")


class SriovInventory:
    """The VFs of the PFs mapped to physnets under one sysfs root."""

    def __init__(self, sysfs_root: Path, physnets: dict[str, tuple[str, ...]]) -> None:
        self.sysfs_root = sysfs_root
        self.physnets = physnets

    def scan(self) -> dict[str, tuple[PhysicalFunction, ...]]:
        """PFs per physnet, read now."""
        return {
            physnet: tuple(read_pf(self.sysfs_root, name) for name in names)
            for physnet, names in self.physnets.items()
        }

    def inventory(self, allocated: Iterable[str] = ()) -> dict[str, dict[int, NodeCount]]:
        """Per physnet, per NUMA node: total and free VFs."""
        return count(self.scan(), allocated)
