"""A simulated SR-IOV and NUMA bed, for machines without SR-IOV hardware.

This is a simulation, used by integration and end-to-end tests; edged never
builds one itself. It has two halves:

* a sysfs tree under a directory of the caller's, laid out as the kernel lays
  out a real one, so that :class:`~edged.drivers.sriov.SriovInventory` and
  :func:`~edged.drivers.numa.read_topology` read it unchanged::

      class/net/<pf>  -> ../../devices/pci0000:00/<pf pci>/net/<pf>
      devices/pci0000:00/<pf pci>/{sriov_totalvfs,sriov_numvfs,numa_node,uevent}
      devices/pci0000:00/<pf pci>/virtfn<N> -> ../<vf pci>
      devices/pci0000:00/<vf pci>/{numa_node,uevent,physfn,net/<pf>v<N>/}
      devices/system/node/node<N>/{cpulist,meminfo,hugepages/hugepages-<kb>kB/}
      devices/system/cpu/online

* real links in an existing (throwaway) network namespace, so the data path
  stays real: per physnet a bridge ``sw-<physnet>``, the "wire" switch the
  PFs' ports plug into; per PF a veth ``<pf>`` whose peer ``<pf>w`` is on that
  bridge (the kernel here has no dummy links); per VF a veth ``<pf>v<N>`` (the
  VF's netdev, the name the tree gives) whose peer ``<pf>v<N>w`` is on the
  bridge. Moving a VF's netdev into another namespace is what passthrough to a
  guest does. Nothing here implements VF semantics (VLAN tagging, spoof
  checking, the PF's VF operations): a PF answers ``EOPNOTSUPP`` to them.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from edged.drivers.numa import format_cpulist

IFNAMSIZ = 15
PHYSNET = re.compile(r"^[A-Za-z0-9_.-]+$")
FIRST_BUS = 0x10
VFS_PER_DEVICE = 8
HUGEPAGE_SIZES_KB = (2048, 1048576)


@dataclass
class SimPf:
    """One simulated PF: its netdev name, NUMA node, number of VFs and physnet."""

    name: str
    numa_node: int
    vfs: int
    physnet: str


# -- names and addresses (pure) ----------------------------------------------------------


def pf_pci(position: int) -> str:
    """PCI address of the PF at ``position`` in the bed: one bus per PF."""
    return f"0000:{FIRST_BUS + position:02x}:00.0"


def vf_pci(position: int, index: int) -> str:
    """PCI address of VF ``index`` of the PF at ``position`` (eight functions per device)."""
    device, function = divmod(index, VFS_PER_DEVICE)
    return f"0000:{FIRST_BUS + position:02x}:{device + 1:02x}.{function}"


def vf_netdev(pf: str, index: int) -> str:
    return f"{pf}v{index}"


def wire_peer(netdev: str) -> str:
    """The switch-side end of a PF's or VF's veth."""
    return f"{netdev}w"


def wire_bridge_name(physnet: str) -> str:
    return f"sw-{physnet}"


def physnets_config(pfs: list[SimPf]) -> str:
    """The ``sriov_physnets`` value for ``pfs``: ``"fast=pf0,pf2;slow=pf1"``."""
    groups: dict[str, list[str]] = {}
    for pf in pfs:
        groups.setdefault(pf.physnet, []).append(pf.name)
    return ";".join(f"{physnet}={','.join(names)}" for physnet, names in groups.items())


def check_bed(pfs: list[SimPf], numa_cpus: dict[int, tuple[int, ...]]) -> None:
    """ValueError naming the first PF or node the bed cannot be built with."""
    names: set[str] = set()
    for position, pf in enumerate(pfs):
        if FIRST_BUS + position > 0xFF:
            raise ValueError(f"too many PFs: at most {0x100 - FIRST_BUS}")
        if pf.numa_node not in numa_cpus:
            raise ValueError(f"PF {pf.name}: NUMA node {pf.numa_node} is not in numa_cpus")
        if not 0 <= pf.vfs <= VFS_PER_DEVICE * 31:
            raise ValueError(f"PF {pf.name}: {pf.vfs} VFs outside 0..{VFS_PER_DEVICE * 31}")
        if not PHYSNET.match(pf.physnet) or len(wire_bridge_name(pf.physnet)) > IFNAMSIZ:
            raise ValueError(f"PF {pf.name}: physnet {pf.physnet!r} empty, too long or not a name")
        made = [pf.name, wire_peer(pf.name)]
        made += [
            n
            for i in range(pf.vfs)
            for n in (vf_netdev(pf.name, i), wire_peer(vf_netdev(pf.name, i)))
        ]
        for name in made:
            if len(name) > IFNAMSIZ or "/" in name or not name:
                raise ValueError(f"PF {pf.name}: link name {name!r} is not a valid link name")
            if name in names:
                raise ValueError(f"PF {pf.name}: link name {name!r} used twice")
            names.add(name)


# -- the sysfs tree -----------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _link(target: Path, link: Path) -> None:
    """A relative symlink, as sysfs has them."""
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, link.parent), link)


def _write_netdev(root: Path, device: Path, name: str) -> None:
    netdir = device / "net" / name
    netdir.mkdir(parents=True)
    # As the kernel writes it: up to the bus, down by name (basename = PCI address).
    os.symlink(f"../../../{device.name}", netdir / "device")
    _link(netdir, root / "class" / "net" / name)


def _write_pf(root: Path, position: int, pf: SimPf) -> None:
    pci = root / "devices" / "pci0000:00"
    dev = pci / pf_pci(position)
    _write(dev / "sriov_totalvfs", f"{pf.vfs}\n")
    _write(dev / "sriov_numvfs", f"{pf.vfs}\n")
    _write(dev / "numa_node", f"{pf.numa_node}\n")
    _write(dev / "uevent", f"DRIVER=skerry-sim\nPCI_SLOT_NAME={pf_pci(position)}\n")
    _write_netdev(root, dev, pf.name)
    for index in range(pf.vfs):
        vf = pci / vf_pci(position, index)
        _write(vf / "numa_node", f"{pf.numa_node}\n")
        _write(vf / "uevent", f"DRIVER=skerry-sim-vf\nPCI_SLOT_NAME={vf_pci(position, index)}\n")
        _link(dev, vf / "physfn")
        _link(vf, dev / f"virtfn{index}")
        _write_netdev(root, vf, vf_netdev(pf.name, index))


def _write_numa(
    root: Path, numa_cpus: dict[int, tuple[int, ...]], hugepages_2m: int, memory_mb: int
) -> None:
    system = root / "devices" / "system"
    for node, cpus in sorted(numa_cpus.items()):
        ndir = system / "node" / f"node{node}"
        _write(ndir / "cpulist", f"{format_cpulist(cpus)}\n")
        free_kb = memory_mb * 1024 - hugepages_2m * 2048
        _write(
            ndir / "meminfo",
            f"Node {node} MemTotal:       {memory_mb * 1024:8d} kB\n"
            f"Node {node} MemFree:        {max(free_kb, 0):8d} kB\n",
        )
        for size in HUGEPAGE_SIZES_KB:
            count = hugepages_2m if size == 2048 else 0
            _write(ndir / "hugepages" / f"hugepages-{size}kB" / "nr_hugepages", f"{count}\n")
            _write(ndir / "hugepages" / f"hugepages-{size}kB" / "free_hugepages", f"{count}\n")
    _write(system / "node" / "online", f"{format_cpulist(numa_cpus)}\n")
    all_cpus = [cpu for cpus in numa_cpus.values() for cpu in cpus]
    _write(system / "cpu" / "online", f"{format_cpulist(all_cpus)}\n")


# -- the links ----------------------------------------------------------------------------


def _open(namespace: str) -> IPRoute:
    return IPRoute(netns=namespace, flags=0)


def _add_veth(ip: IPRoute, name: str, bridge: int, made: list[str]) -> None:
    """A veth ``name`` whose peer is on ``bridge``; both up. Its peer is added to ``made``."""
    ip.link("add", ifname=name, kind="veth", peer=wire_peer(name))
    made.append(wire_peer(name))
    (peer,) = ip.link_lookup(ifname=wire_peer(name))
    ip.link("set", index=peer, master=bridge, state="up")
    (index,) = ip.link_lookup(ifname=name)
    ip.link("set", index=index, state="up")


def _delete_links(namespace: str, names: list[str], timeout_s: float = 5.0) -> None:
    """Delete ``names`` (gone already is fine) and wait until the kernel shows none of them."""
    with _open(namespace) as ip:
        for name in names:
            for index in ip.link_lookup(ifname=name):
                try:
                    ip.link("del", index=index)
                except NetlinkError as exc:
                    if exc.code != errno.ENODEV:
                        raise
        # Deleted veths vanish asynchronously.
        deadline = time.monotonic() + timeout_s
        while any(ip.link_lookup(ifname=name) for name in names):
            if time.monotonic() > deadline:
                left = [n for n in names if ip.link_lookup(ifname=n)]
                raise RuntimeError(f"links still present in {namespace} after delete: {left}")
            time.sleep(0.02)


@dataclass
class SimBed:
    """A built bed: its sysfs tree and the links it made in ``namespace``."""

    sysfs_root: Path
    namespace: str
    pfs: list[SimPf]
    # What teardown deletes: veth switch-side ends (each takes its pair along), PFs, bridges.
    links: list[str] = field(default_factory=list)
    # Top-level entries of the tree this bed wrote (and the root, when it made it).
    paths: list[Path] = field(default_factory=list)

    @property
    def sriov_physnets(self) -> str:
        """The ``sriov_physnets`` configuration value naming this bed's PFs."""
        return physnets_config(self.pfs)

    def wire_bridge(self, physnet: str) -> str:
        """The bridge the PFs and VFs of ``physnet`` are plugged into."""
        if physnet not in {pf.physnet for pf in self.pfs}:
            raise KeyError(f"physnet {physnet!r} is not in this bed")
        return wire_bridge_name(physnet)

    def teardown(self) -> None:
        """Delete every link this bed made and the tree; safe to call twice."""
        _delete_links(self.namespace, self.links)
        self.links = []
        for path in self.paths:
            shutil.rmtree(path, ignore_errors=True)
        self.paths = []


def build_bed(
    root: Path,
    namespace: str,
    pfs: list[SimPf],
    numa_cpus: dict[int, tuple[int, ...]],
    hugepages_2m_per_node: int = 0,
    *,
    memory_mb_per_node: int = 4096,
) -> SimBed:
    """Write the tree under ``root`` and make the links in ``namespace`` (which must exist).

    ``root`` must not exist or be empty. On failure, whatever was made is removed.
    """
    if not namespace:
        raise ValueError("the bed needs a throwaway network namespace, not the host's")
    check_bed(pfs, numa_cpus)
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} is not empty")
    bed = SimBed(root, namespace, list(pfs))
    bed.paths = [root] if not root.exists() else [root / "class", root / "devices"]
    try:
        root.mkdir(parents=True, exist_ok=True)
        for position, pf in enumerate(pfs):
            _write_pf(root, position, pf)
        _write_numa(root, numa_cpus, hugepages_2m_per_node, memory_mb_per_node)
        _make_links(bed)
    except BaseException:
        bed.teardown()
        raise
    return bed


def _make_links(bed: SimBed) -> None:
    """Bridges, PF and VF veths; each is recorded as soon as the kernel made it.

    A name already taken fails the add, so teardown never deletes a link it did not make.
    """
    with _open(bed.namespace) as ip:
        bridges: dict[str, int] = {}
        for pf in bed.pfs:
            name = wire_bridge_name(pf.physnet)
            if pf.physnet not in bridges:
                ip.link("add", ifname=name, kind="bridge")
                bed.links.append(name)
                (bridges[pf.physnet],) = ip.link_lookup(ifname=name)
                ip.link("set", index=bridges[pf.physnet], state="up")
            for netdev in [pf.name] + [vf_netdev(pf.name, i) for i in range(pf.vfs)]:
                _add_veth(ip, netdev, bridges[pf.physnet], bed.links)
