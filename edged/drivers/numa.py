"""Host NUMA topology read from sysfs, and the host CPUs of a server's guest cells.

:func:`read_topology` reads ``<sysfs_root>/devices/system/node/node<N>/``
(``cpulist``, ``meminfo``, ``hugepages/hugepages-<kb>kB/{nr,free}_hugepages``).
A kernel without NUMA has no node directories: the host is then one node 0
holding ``devices/system/cpu/online``, the online memory blocks of
``devices/system/memory`` and the hugepages of ``kernel/mm/hugepages``.

:func:`assign_cells` is pure: central picks the host node of each guest cell
(``numa_placement``), edged picks the host CPUs of each cell here.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from edged.drivers.compute import GuestCell

NODE_DIR = re.compile(r"^node(\d+)$")
HUGEPAGE_DIR = re.compile(r"^hugepages-(\d+)kB$")
MEMTOTAL = re.compile(r"^Node\s+(\d+)\s+MemTotal:\s+(\d+)\s+kB$")
MEMORY_BLOCK = re.compile(r"^memory\d+$")


class NumaError(Exception):
    """The NUMA tree cannot be read, or a placement cannot be met; names what and where."""


@dataclass(frozen=True)
class HostNode:
    """One host NUMA node; ``hugepages`` maps page size in KiB to ``(total, free)``."""

    id: int
    cpus: tuple[int, ...]
    memory_mb: int
    hugepages: dict[int, tuple[int, int]]


# -- CPU lists --------------------------------------------------------------------------


def parse_cpulist(text: str) -> tuple[int, ...]:
    """``"0-3,8,10-11"`` -> ``(0, 1, 2, 3, 8, 10, 11)``; ``""`` -> ``()``."""
    cpus: set[int] = set()
    for item in filter(None, (part.strip() for part in text.strip().split(","))):
        first, sep, last = item.partition("-")
        if not first.isdigit() or (sep and not last.isdigit()):
            raise NumaError(f"not a CPU list: {text.strip()!r}")
        low, high = int(first), int(last) if sep else int(first)
        if high < low:
            raise NumaError(f"not a CPU list (range {item} runs backwards): {text.strip()!r}")
        cpus.update(range(low, high + 1))
    return tuple(sorted(cpus))


def format_cpulist(cpus: Iterable[int]) -> str:
    """``(0, 1, 2, 3, 8, 10, 11)`` -> ``"0-3,8,10-11"`` (the kernel's own form)."""
    ranges: list[list[int]] = []
    for cpu in sorted(set(cpus)):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


# -- reading sysfs ----------------------------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise NumaError(f"{path}: missing") from None
    except OSError as exc:
        raise NumaError(f"{path}: cannot read: {exc.strerror}") from None


def _read_int(path: Path) -> int:
    text = _read(path).strip()
    try:
        return int(text)
    except ValueError:
        raise NumaError(f"{path}: not an integer: {text!r}") from None


def _read_cpulist(path: Path) -> tuple[int, ...]:
    text = _read(path)
    try:
        return parse_cpulist(text)
    except NumaError as exc:
        raise NumaError(f"{path}: {exc}") from None


def _node_memory_mb(path: Path, node: int) -> int:
    for line in _read(path).splitlines():
        match = MEMTOTAL.match(line.strip())
        if match:
            if int(match.group(1)) != node:
                raise NumaError(f"{path}: MemTotal is for node {match.group(1)}, not {node}")
            return int(match.group(2)) // 1024
    raise NumaError(f"{path}: no 'Node {node} MemTotal: <n> kB' line")


def _hugepages(directory: Path) -> dict[int, tuple[int, int]]:
    """``hugepages-<kb>kB/{nr_hugepages,free_hugepages}`` under ``directory``; none -> {}."""
    if not directory.is_dir():
        return {}
    pages: dict[int, tuple[int, int]] = {}
    for entry in directory.iterdir():
        match = HUGEPAGE_DIR.match(entry.name)
        if match:
            total = _read_int(entry / "nr_hugepages")
            pages[int(match.group(1))] = (total, _read_int(entry / "free_hugepages"))
    return dict(sorted(pages.items()))


def _online_memory_mb(memory: Path) -> int:
    """Online memory blocks of ``devices/system/memory``; 0 when the kernel shows none."""
    if not (memory / "block_size_bytes").is_file():
        return 0
    text = _read(memory / "block_size_bytes").strip()
    try:
        block = int(text, 16)
    except ValueError:
        raise NumaError(f"{memory / 'block_size_bytes'}: not a hex integer: {text!r}") from None
    online = sum(
        1
        for entry in memory.iterdir()
        if MEMORY_BLOCK.match(entry.name)
        and (entry / "state").is_file()
        and _read(entry / "state").strip() == "online"
    )
    return online * block // (1024 * 1024)


def _read_node(directory: Path, node: int) -> HostNode:
    return HostNode(
        node,
        _read_cpulist(directory / "cpulist"),
        _node_memory_mb(directory / "meminfo", node),
        _hugepages(directory / "hugepages"),
    )


def read_topology(sysfs_root: Path) -> tuple[HostNode, ...]:
    """The host's NUMA nodes by id; one node 0 when the kernel shows no nodes."""
    node_root = sysfs_root / "devices" / "system" / "node"
    found = (
        sorted(
            (int(m.group(1)), entry)
            for entry in node_root.iterdir()
            if (m := NODE_DIR.match(entry.name))
        )
        if node_root.is_dir()
        else []
    )
    if found:
        return tuple(_read_node(directory, node) for node, directory in found)
    system = sysfs_root / "devices" / "system"
    return (
        HostNode(
            0,
            _read_cpulist(system / "cpu" / "online"),
            _online_memory_mb(system / "memory"),
            _hugepages(sysfs_root / "kernel" / "mm" / "hugepages"),
        ),
    )


# -- placement --------------------------------------------------------------------------


def _split(amount: int, parts: int) -> list[int]:
    """Even split; the remainder goes to the first parts."""
    base, rest = divmod(amount, parts)
    return [base + (i < rest) for i in range(parts)]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def assign_cells(
    nodes: Iterable[HostNode],
    placement: tuple[int, ...],
    vcpus: int,
    memory_mb: int,
    dedicated: bool,
    claimed: Collection[int],
) -> tuple[GuestCell, ...]:
    """One guest cell per host node id in ``placement``, with its vCPUs' host CPUs.

    vCPUs and memory are split evenly (the remainder to the first cells).
    Dedicated: each vCPU gets its own host CPU of the cell's node, lowest first,
    never one in ``claimed`` (other servers' pinned CPUs) or given to an earlier
    cell. Shared: a cell floats over all CPUs of its node.
    """
    if not placement:
        return ()
    by_id = {node.id: node for node in nodes}
    if vcpus < len(placement):
        raise NumaError(f"{_plural(vcpus, 'vCPU')} cannot fill {len(placement)} NUMA cells")
    if memory_mb < len(placement):
        raise NumaError(f"{memory_mb} MB of memory cannot fill {len(placement)} NUMA cells")
    taken = set(claimed)
    shares = zip(
        placement, _split(vcpus, len(placement)), _split(memory_mb, len(placement)), strict=True
    )
    cells = []
    for cell, (node_id, cell_vcpus, cell_mb) in enumerate(shares):
        node = by_id.get(node_id)
        if node is None:
            known = ", ".join(str(n) for n in sorted(by_id)) or "none"
            raise NumaError(f"NUMA node {node_id} does not exist on this host (nodes: {known})")
        if not node.cpus:
            raise NumaError(f"NUMA node {node_id} has no CPUs, cell {cell} needs {cell_vcpus}")
        if not dedicated:
            cells.append(GuestCell(node_id, node.cpus, cell_vcpus, cell_mb))
            continue
        free = [cpu for cpu in node.cpus if cpu not in taken]
        if len(free) < cell_vcpus:
            raise NumaError(
                f"NUMA node {node_id} has {_plural(len(free), 'free dedicated CPU')}, "
                f"cell {cell} needs {cell_vcpus}"
            )
        pinned = tuple(free[:cell_vcpus])
        taken.update(pinned)
        cells.append(GuestCell(node_id, pinned, cell_vcpus, cell_mb))
    return tuple(cells)


def inventory_section(nodes: Iterable[HostNode]) -> list[dict]:
    """The ``numa`` part of the inventory reported to central (see docs/networking.md)."""
    return [
        {
            "node": node.id,
            "cpus": list(node.cpus),
            "memory_mb": node.memory_mb,
            "hugepages": {
                str(size): {"total": total, "free": free}
                for size, (total, free) in sorted(node.hugepages.items())
            },
        }
        for node in nodes
    ]
