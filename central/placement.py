"""NUMA and SR-IOV placement at central: the host node of each guest cell and of each VF.

Pure: inventory and books in, a choice or a :class:`Refused` out; the API reads
the books from the store and writes the choice back, in the change's transaction.

Guest cells. A server's vCPUs and memory split over ``numa_nodes`` cells as
evenly as possible, the first cells taking the remainder (:meth:`Shape.cells`);
with hugepages every cell must hold a whole number of pages.

Accounting. Central counts the *totals* the site reports (``numa[].cpus``,
``numa[].hugepages[size].total``, ``sriov[physnet][node].total``) and subtracts
what it has promised itself: the vCPUs of every placed ``dedicated`` server's
cells on their nodes, the hugepages of every placed server's cells, and one VF
per ``direct`` port bound to a server (``ports.numa_node``). Servers being
deleted still count until their site reports them gone. The site's ``free``
counts are not used: once edged builds what central placed they would count
it twice. So what runs on the host outside this site (another site sharing the
host, host processes) is not seen, and a site whose inventory shrinks keeps
its placed servers while new ones are refused until the books fit again.

Choice. Cells go to distinct host nodes, in order, each to the lowest node id
that fits (backtracking): the lexicographically smallest feasible placement,
so the same books always give the same answer. A server's ``direct`` ports
take VFs on its own nodes, lowest node first; a ``direct`` port of a server
without placement takes the lowest node with a free VF on its physnet.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from central.refusal import Refusal

# Flavor page size -> KiB (the inventory's hugepage keys); 0: normal pages.
PAGE_KB: dict[str, int] = {"small": 0, "2MB": 2048, "1GB": 1048576}


class Refused(Refusal):
    """Placement is impossible with what the site has; ``message`` names what is missing."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message, 409)


@dataclass(frozen=True)
class Cell:
    vcpus: int
    ram_mb: int


@dataclass(frozen=True)
class Shape:
    """The part of a server's flavor placement looks at."""

    vcpus: int
    ram_mb: int
    cpu_policy: str = "shared"
    mem_page_size: str = "small"
    numa_nodes: int = 1

    @property
    def dedicated(self) -> bool:
        return self.cpu_policy == "dedicated"

    @property
    def page_kb(self) -> int:
        return PAGE_KB.get(self.mem_page_size, 0)

    def cells(self) -> list[Cell]:
        """vCPUs and memory of each guest cell; the first cells take the remainder."""
        n = max(1, self.numa_nodes)
        return [
            Cell(
                self.vcpus // n + (1 if i < self.vcpus % n else 0),
                self.ram_mb // n + (1 if i < self.ram_mb % n else 0),
            )
            for i in range(n)
        ]

    def pages(self, cell: Cell) -> int:
        """Hugepages a cell takes (0 with normal pages)."""
        return cell.ram_mb * 1024 // self.page_kb if self.page_kb else 0


def flavor_problem(shape: Shape) -> tuple[str, str] | None:
    """The flavor field that cannot be split into cells, with why; None when it can."""
    if shape.numa_nodes > shape.vcpus:
        return "numa_nodes", (
            f"numa_nodes ({shape.numa_nodes}) exceeds vcpus ({shape.vcpus}): "
            "every NUMA cell needs at least one vCPU"
        )
    page_mb = shape.page_kb // 1024
    if page_mb and any(c.ram_mb % page_mb for c in shape.cells()):
        return "ram_mb", (
            f"ram_mb ({shape.ram_mb}) split over {shape.numa_nodes} NUMA cell(s) is not a "
            f"whole number of {shape.mem_page_size} pages per cell"
        )
    return None


def needs_placement(shape: Shape, direct_ports: int = 0) -> bool:
    """Whether the server gets a NUMA placement (else ``numa_placement`` is ``[]``)."""
    return shape.dedicated or shape.page_kb > 0 or shape.numa_nodes > 1 or direct_ports > 0


# -- what the site reported ---------------------------------------------------------------


@dataclass(frozen=True)
class HostNode:
    node: int
    cpus: int
    hugepages: Mapping[int, int]  # page size in KiB -> total pages


@dataclass(frozen=True)
class SiteInventory:
    """The networking and NUMA parts of a site's inventory; None: not reported (yet)."""

    site: str
    numa: tuple[HostNode, ...] | None = None
    sriov: Mapping[str, Mapping[int, int]] = field(default_factory=dict)  # physnet->node->VFs
    physnets: tuple[str, ...] | None = None
    vlan: bool | None = None
    vlan_reason: str = ""


def _count(value: Any) -> int | None:
    """A non-negative integer from an int or a string of digits, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _total(value: Any) -> int:
    return (_count(value.get("total")) or 0) if isinstance(value, Mapping) else 0


def _numa(raw: Any) -> tuple[HostNode, ...] | None:
    if not isinstance(raw, list):
        return None
    nodes: dict[int, HostNode] = {}
    for entry in raw:
        if not isinstance(entry, Mapping):
            continue
        node = _count(entry.get("node"))
        cpus = entry.get("cpus")
        if node is None or node in nodes or not isinstance(cpus, list):
            continue
        pages = entry.get("hugepages")
        sizes = pages.items() if isinstance(pages, Mapping) else ()
        hugepages = {kb: _total(v) for k, v in sizes if (kb := _count(k))}
        nodes[node] = HostNode(node, len(cpus), hugepages)
    return tuple(nodes[n] for n in sorted(nodes))


def _sriov(raw: Any) -> dict[str, dict[int, int]]:
    if not isinstance(raw, Mapping):
        return {}
    result: dict[str, dict[int, int]] = {}
    for physnet, per_node in raw.items():
        if isinstance(physnet, str) and isinstance(per_node, Mapping):
            counts = {n: _total(v) for k, v in per_node.items() if (n := _count(k)) is not None}
            result[physnet] = dict(sorted(counts.items()))
    return result


def parse_inventory(site: str, raw: Any) -> SiteInventory:
    """The inventory a site reported (``{}`` until it first does); never raises."""
    raw = raw if isinstance(raw, Mapping) else {}
    physnets = raw.get("physnets")
    network = raw.get("network")
    network = network if isinstance(network, Mapping) else {}
    vlan = network.get("vlan")
    return SiteInventory(
        site=site,
        numa=_numa(raw.get("numa")),
        sriov=_sriov(raw.get("sriov")),
        physnets=(
            tuple(sorted({p for p in physnets if isinstance(p, str)}))
            if isinstance(physnets, list)
            else None
        ),
        vlan=vlan if isinstance(vlan, bool) else None,
        vlan_reason=str(network.get("vlan_reason") or "")[:500],
    )


# -- what central gave from it ------------------------------------------------------------


@dataclass(frozen=True)
class Placed:
    """A server at the site and the host node of each of its cells (``()``: no placement)."""

    shape: Shape
    numa_placement: tuple[int, ...] = ()


@dataclass(frozen=True)
class Books:
    """A site's inventory and what central has promised from it."""

    inventory: SiteInventory
    servers: Sequence[Placed] = ()
    vfs: Sequence[tuple[str, int]] = ()  # (physnet, numa node) of each bound direct port

    def free_cpus(self) -> dict[int, int]:
        """Host CPUs per node not pinned to a placed dedicated server."""
        used: Counter[int] = Counter()
        for s in self.servers:
            if s.shape.dedicated:
                for cell, node in zip(s.shape.cells(), s.numa_placement, strict=False):
                    used[node] += cell.vcpus
        return {n.node: max(0, n.cpus - used[n.node]) for n in self.inventory.numa or ()}

    def free_pages(self, page_kb: int) -> dict[int, int]:
        """Hugepages of ``page_kb`` per node not given to a placed server's cells."""
        used: Counter[int] = Counter()
        for s in self.servers:
            if s.shape.page_kb == page_kb:
                for cell, node in zip(s.shape.cells(), s.numa_placement, strict=False):
                    used[node] += s.shape.pages(cell)
        return {
            n.node: max(0, n.hugepages.get(page_kb, 0) - used[n.node])
            for n in self.inventory.numa or ()
        }

    def free_vfs(self, physnet: str) -> dict[int, int]:
        """VFs of ``physnet`` per node not bound to a port."""
        used = Counter(node for p, node in self.vfs if p == physnet)
        totals = self.inventory.sriov.get(physnet, {})
        return {node: max(0, total - used[node]) for node, total in totals.items()}


# -- decisions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerPlacement:
    numa_placement: tuple[int, ...]  # host node of each guest cell; () = no placement
    port_nodes: tuple[int, ...]  # VF node of each direct port, in the order asked


def _not_reported(inv: SiteInventory, field: str) -> Refused:
    if inv.physnets is not None:  # it reports its networking, but its NUMA topology was unreadable
        return Refused(field, f"site {inv.site} reports no NUMA topology")
    return Refused(field, f"site {inv.site} has not reported its NUMA/SR-IOV inventory yet")


def _nodes_text(nodes: Sequence[int]) -> str:
    nodes = sorted(nodes)
    if len(nodes) == 1:
        return f"NUMA node {nodes[0]}"
    return "NUMA nodes " + ", ".join(map(str, nodes))


def _free_text(free: Mapping[int, int]) -> str:
    return ", ".join(f"node {n}: {k}" for n, k in sorted(free.items())) or "no NUMA nodes"


def check_sriov(inv: SiteInventory, physnet: str, field: str = "vnic_type") -> None:
    """A direct port's physnet must have VFs at the site (it reported them)."""
    if inv.numa is None:
        raise _not_reported(inv, field)
    if physnet not in inv.sriov:
        raise Refused(field, f"site {inv.site} has no SR-IOV VFs on physnet {physnet!r}")


def check_network(inv: SiteInventory, segmentation: str, physnet: str | None) -> None:
    """A network's physnet must be one the site has, and VLAN needs the site's 802.1Q."""
    if physnet is not None:
        if inv.physnets is None:
            raise Refused("physnet", f"site {inv.site} has not reported its physnets yet")
        if physnet not in inv.physnets:
            has = ", ".join(inv.physnets) or "none"
            raise Refused("physnet", f"site {inv.site} has no physnet {physnet!r} (it has: {has})")
    if segmentation == "vlan":
        if inv.vlan is None and inv.physnets is None:
            raise Refused("segmentation", f"site {inv.site} has not reported its VLAN support yet")
        if inv.vlan is None:  # reported, without a network section: no driver, or its probe failed
            raise Refused(
                "segmentation", f"site {inv.site} reports no VLAN support (no network driver)"
            )
        if not inv.vlan:
            why = inv.vlan_reason or "no reason given"
            raise Refused("segmentation", f"site {inv.site} cannot carry VLAN networks: {why}")


def _assignments(
    cells: Sequence[Cell], nodes: Sequence[int], fits: Callable[[Cell, int], bool]
) -> Iterator[tuple[int, ...]]:
    """Distinct host nodes for the cells, in order, lexicographically smallest first."""
    chosen: list[int] = []

    def walk(i: int) -> Iterator[tuple[int, ...]]:
        if i == len(cells):
            yield tuple(chosen)
            return
        for node in nodes:
            if node not in chosen and fits(cells[i], node):
                chosen.append(node)
                yield from walk(i + 1)
                chosen.pop()

    return walk(0)


def _ports_on(
    books: Books, nodes: Sequence[int], physnets: Sequence[str]
) -> tuple[int, ...] | None:
    """A VF node among ``nodes`` for each port (lowest first), or None when they do not fit."""
    free = {p: books.free_vfs(p) for p in set(physnets)}
    chosen = []
    for physnet in physnets:
        node = next((n for n in sorted(nodes) if free[physnet].get(n, 0) > 0), None)
        if node is None:
            return None
        free[physnet][node] -= 1
        chosen.append(node)
    return tuple(chosen)


def _no_fit(books: Books, shape: Shape, cells: list[Cell], nodes: list[int]) -> str:
    """Why no set of nodes holds the cells' dedicated CPUs and hugepages."""
    where = "one NUMA node" if len(cells) == 1 else f"each of {len(cells)} NUMA nodes"
    cpus, pages = books.free_cpus(), books.free_pages(shape.page_kb)
    need_cpus = "/".join(sorted({str(c.vcpus) for c in cells}, reverse=True))
    need_pages = "/".join(sorted({str(shape.pages(c)) for c in cells}, reverse=True))
    size = shape.mem_page_size
    if shape.dedicated and not any(_assignments(cells, nodes, lambda c, n: cpus[n] >= c.vcpus)):
        return f"needs {need_cpus} dedicated CPUs on {where}; free: {_free_text(cpus)}"
    if not any(_assignments(cells, nodes, lambda c, n: pages[n] >= shape.pages(c))):
        return f"needs {need_pages} {size} hugepages on {where}; free: {_free_text(pages)}"
    both = "; ".join(f"node {n}: {cpus[n]} CPUs, {pages[n]} {size} pages" for n in nodes)
    return (
        f"needs {need_cpus} dedicated CPUs and {need_pages} {size} hugepages on {where} "
        f"together; free: {both}"
    )


def _vf_shortage(books: Books, fitting: Sequence[tuple[int, ...]], physnets: Sequence[str]) -> str:
    """Which physnet lacks VFs on every set of nodes the server's cells would fit on."""
    nodes = sorted({n for choice in fitting for n in choice})
    cells = len(fitting[0])
    for physnet, wanted in Counter(physnets).items():
        if any(_ports_on(books, choice, [physnet] * wanted) is not None for choice in fitting):
            continue
        free = {n: k for n, k in books.free_vfs(physnet).items() if n in nodes}
        if not any(free.values()):
            return f"no free VF on physnet {physnet!r} on {_nodes_text(nodes)}"
        where = "one NUMA node" if cells == 1 else f"the server's {cells} NUMA nodes"
        shown = _free_text({n: free.get(n, 0) for n in nodes})
        return f"needs {wanted} VFs on physnet {physnet!r} on {where}; free: {shown}"
    return "no NUMA placement of the server leaves a free VF for each of its ports on " + (
        _nodes_text(nodes)
    )


def place_server(books: Books, shape: Shape, port_physnets: Sequence[str] = ()) -> ServerPlacement:
    """Host nodes for a new server's cells, and VF nodes for its direct ports (physnets).

    A server that needs no placement gets ``()`` and is never refused. Refusals
    name ``flavor`` (cells, CPUs, hugepages) or ``ports`` (VFs).
    """
    if not needs_placement(shape, len(port_physnets)):
        return ServerPlacement((), ())
    inv = books.inventory
    flavor_needs = needs_placement(shape)
    if inv.numa is None:
        raise _not_reported(inv, "flavor" if flavor_needs else "ports")
    for physnet in dict.fromkeys(port_physnets):
        check_sriov(inv, physnet, "ports")
    cells = shape.cells()
    nodes = [n.node for n in inv.numa]
    if len(cells) > len(nodes):
        raise Refused(
            "flavor", f"flavor asks for {len(cells)} NUMA nodes; site {inv.site} has {len(nodes)}"
        )
    cpus, pages = books.free_cpus(), books.free_pages(shape.page_kb)

    def fits(cell: Cell, node: int) -> bool:
        cpus_ok = not shape.dedicated or cpus[node] >= cell.vcpus
        return cpus_ok and pages[node] >= shape.pages(cell)

    fitting: list[tuple[int, ...]] = []
    for choice in _assignments(cells, nodes, fits):
        port_nodes = _ports_on(books, choice, port_physnets)
        if port_nodes is not None:
            return ServerPlacement(choice, port_nodes)
        fitting.append(choice)
    if not fitting:
        raise Refused("flavor", _no_fit(books, shape, cells, nodes))
    raise Refused("ports", _vf_shortage(books, fitting, port_physnets))


def place_port(
    books: Books, physnet: str, server_nodes: Sequence[int], field: str = "server_id"
) -> int:
    """The VF node of a direct port bound to a server with ``server_nodes`` (``()``: any node)."""
    check_sriov(books.inventory, physnet, "vnic_type")
    free = books.free_vfs(physnet)
    candidates = sorted(server_nodes) if server_nodes else sorted(free)
    node = next((n for n in candidates if free.get(n, 0) > 0), None)
    if node is None:
        where = (
            f"on {_nodes_text(candidates)}" if server_nodes else f"at site {books.inventory.site}"
        )
        raise Refused(field, f"no free VF on physnet {physnet!r} {where}")
    return node
