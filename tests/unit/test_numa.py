"""Host NUMA topology from a sysfs tree built in tmp_path, and guest cell assignment."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.drivers.compute import GuestCell
from edged.drivers.numa import (
    HostNode,
    NumaError,
    assign_cells,
    format_cpulist,
    inventory_section,
    parse_cpulist,
    read_topology,
)
from tests.host import skip


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_node(
    root: Path, node: int, cpulist: str, mem_kb: int, hugepages: dict[int, tuple[int, int]]
) -> Path:
    """node<N>/{cpulist,meminfo,hugepages/...} as the kernel writes them."""
    ndir = root / "devices" / "system" / "node" / f"node{node}"
    write(ndir / "cpulist", f"{cpulist}\n")
    write(
        ndir / "meminfo",
        f"Node {node} MemTotal:       {mem_kb} kB\nNode {node} MemFree:        1024 kB\n",
    )
    for size, (total, free) in hugepages.items():
        write(ndir / "hugepages" / f"hugepages-{size}kB" / "nr_hugepages", f"{total}\n")
        write(ndir / "hugepages" / f"hugepages-{size}kB" / "free_hugepages", f"{free}\n")
    return ndir


@pytest.fixture
def two_nodes(tmp_path: Path) -> Path:
    make_node(tmp_path, 0, "0-3,8", 8 * 1024 * 1024, {2048: (512, 500), 1048576: (0, 0)})
    make_node(tmp_path, 1, "4-7,9-11", 4 * 1024 * 1024 + 1000, {2048: (16, 16)})
    write(tmp_path / "devices" / "system" / "node" / "online", "0-1\n")
    return tmp_path


NODES = (
    HostNode(0, (0, 1, 2, 3), 8192, {}),
    HostNode(1, (4, 5, 6, 7), 8192, {}),
)


# -- cpulist -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("0", (0,)),
        ("0-3", (0, 1, 2, 3)),
        ("0-3,8,10-11\n", (0, 1, 2, 3, 8, 10, 11)),
        ("", ()),
        ("\n", ()),
        ("5,1,3-4", (1, 3, 4, 5)),
        ("1,1-2", (1, 2)),
    ],
)
def test_parse_cpulist(text: str, cpus: tuple[int, ...]) -> None:
    assert parse_cpulist(text) == cpus


@pytest.mark.parametrize("text", ["a", "0-", "-3", "3-1", "0,,x", "1-2-3", "0 1"])
def test_parse_cpulist_refuses_garbage(text: str) -> None:
    with pytest.raises(NumaError, match="not a CPU list"):
        parse_cpulist(text)


@pytest.mark.parametrize(
    ("cpus", "text"),
    [((), ""), ((0,), "0"), ((0, 1, 2, 3, 8, 10, 11), "0-3,8,10-11"), ((3, 1, 2, 2), "1-3")],
)
def test_format_cpulist(cpus: tuple[int, ...], text: str) -> None:
    assert format_cpulist(cpus) == text
    assert parse_cpulist(text) == tuple(sorted(set(cpus)))


# -- read_topology -------------------------------------------------------------------------


def test_reads_nodes(two_nodes: Path) -> None:
    nodes = read_topology(two_nodes)
    assert nodes == (
        HostNode(0, (0, 1, 2, 3, 8), 8192, {2048: (512, 500), 1048576: (0, 0)}),
        HostNode(1, (4, 5, 6, 7, 9, 10, 11), 4096, {2048: (16, 16)}),
    )


def test_nodes_sorted_numerically_and_memory_only_node(tmp_path: Path) -> None:
    for node in (10, 2, 0):
        make_node(tmp_path, node, "" if node == 10 else str(node), 2048 * 1024, {})
    nodes = read_topology(tmp_path)
    assert [n.id for n in nodes] == [0, 2, 10]
    assert nodes[2].cpus == ()
    assert nodes[0].hugepages == {}


def test_no_node_directory_gives_one_node(tmp_path: Path) -> None:
    system = tmp_path / "devices" / "system"
    write(system / "cpu" / "online", "0-5\n")
    write(system / "memory" / "block_size_bytes", "8000000\n")  # 128 MiB, hex
    for n, state in enumerate(["online", "online", "offline", "online"]):
        write(system / "memory" / f"memory{n}" / "state", f"{state}\n")
    write(tmp_path / "kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "4\n")
    write(tmp_path / "kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "3\n")
    assert read_topology(tmp_path) == (HostNode(0, (0, 1, 2, 3, 4, 5), 384, {2048: (4, 3)}),)


def test_no_node_directory_and_no_memory_blocks(tmp_path: Path) -> None:
    write(tmp_path / "devices" / "system" / "cpu" / "online", "0\n")
    (tmp_path / "devices" / "system" / "node").mkdir()  # present but without node<N>
    assert read_topology(tmp_path) == (HostNode(0, (0,), 0, {}),)


def test_reads_this_machines_sysfs() -> None:
    if not Path("/sys/devices/system/cpu/online").is_file():
        skip("no /sys/devices/system/cpu/online on this machine")
    nodes = read_topology(Path("/sys"))
    online = parse_cpulist(Path("/sys/devices/system/cpu/online").read_text())
    assert nodes
    assert sorted(cpu for node in nodes for cpu in node.cpus) == list(online)
    assert all(node.memory_mb > 0 for node in nodes if node.cpus)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no_cpulist", r"node1/cpulist: missing"),
        ("bad_cpulist", r"node1/cpulist: not a CPU list: 'four'"),
        ("no_meminfo", r"node1/meminfo: missing"),
        ("bad_meminfo", r"node1/meminfo: no 'Node 1 MemTotal: <n> kB' line"),
        ("wrong_node_meminfo", r"node1/meminfo: MemTotal is for node 0, not 1"),
        ("bad_hugepages", r"hugepages-2048kB/free_hugepages: not an integer: 'lots'"),
        ("no_free_hugepages", r"hugepages-2048kB/free_hugepages: missing"),
    ],
)
def test_malformed_tree_names_the_path(two_nodes: Path, breakage: str, message: str) -> None:
    ndir = two_nodes / "devices" / "system" / "node" / "node1"
    free = ndir / "hugepages" / "hugepages-2048kB" / "free_hugepages"
    if breakage == "no_cpulist":
        (ndir / "cpulist").unlink()
    elif breakage == "bad_cpulist":
        (ndir / "cpulist").write_text("four\n")
    elif breakage == "no_meminfo":
        (ndir / "meminfo").unlink()
    elif breakage == "bad_meminfo":
        (ndir / "meminfo").write_text("Node 1 MemTotal: lots\n")
    elif breakage == "wrong_node_meminfo":
        (ndir / "meminfo").write_text("Node 0 MemTotal: 1024 kB\n")
    elif breakage == "bad_hugepages":
        free.write_text("lots\n")
    else:
        free.unlink()
    with pytest.raises(NumaError, match=message):
        read_topology(two_nodes)


def test_missing_everything_names_cpu_online(tmp_path: Path) -> None:
    with pytest.raises(NumaError, match=r"devices/system/cpu/online: missing"):
        read_topology(tmp_path)


# -- assign_cells --------------------------------------------------------------------------


def test_empty_placement_gives_no_cells() -> None:
    assert assign_cells(NODES, (), 4, 4096, True, ()) == ()


def test_dedicated_single_cell_takes_lowest_free_cpus() -> None:
    cells = assign_cells(NODES, (1,), 2, 2048, True, claimed={4})
    assert cells == (GuestCell(1, (5, 6), 2, 2048),)


def test_dedicated_skips_claimed_cpus() -> None:
    cells = assign_cells(NODES, (0,), 2, 1024, True, claimed=[0, 2])
    assert cells[0].cpus == (1, 3)


def test_shared_cell_floats_over_the_whole_node() -> None:
    cells = assign_cells(NODES, (1,), 8, 1024, False, claimed={4, 5, 6, 7})
    assert cells == (GuestCell(1, (4, 5, 6, 7), 8, 1024),)


def test_two_cells_split_evenly_with_remainder_first() -> None:
    cells = assign_cells(NODES, (0, 1), 5, 3001, True, ())
    assert cells == (
        GuestCell(0, (0, 1, 2), 3, 1501),
        GuestCell(1, (4, 5), 2, 1500),
    )
    assert sum(c.vcpus for c in cells) == 5
    assert sum(c.memory_mb for c in cells) == 3001


def test_two_cells_on_one_node_never_share_a_cpu() -> None:
    cells = assign_cells(NODES, (0, 0), 4, 2048, True, ())
    assert [c.cpus for c in cells] == [(0, 1), (2, 3)]


def test_three_cells_shared() -> None:
    cells = assign_cells(NODES, (1, 0, 1), 7, 3000, False, ())
    assert [(c.host_node, c.vcpus, c.memory_mb) for c in cells] == [
        (1, 3, 1000),
        (0, 2, 1000),
        (1, 2, 1000),
    ]
    assert cells[0].cpus == cells[2].cpus == (4, 5, 6, 7)


def test_not_enough_free_cpus_names_node_and_counts() -> None:
    with pytest.raises(NumaError, match=r"^NUMA node 1 has 1 free dedicated CPU, cell 0 needs 2$"):
        assign_cells(NODES, (1,), 2, 1024, True, claimed={4, 5, 6})
    with pytest.raises(NumaError, match=r"^NUMA node 0 has 0 free dedicated CPUs, cell 1 needs 2$"):
        assign_cells(NODES, (1, 0), 4, 1024, True, claimed={0, 1, 2, 3})
    with pytest.raises(NumaError, match=r"NUMA node 0 has 1 free dedicated CPU, cell 1 needs 2"):
        assign_cells(NODES, (0, 0), 4, 1024, True, claimed={0})


def test_unknown_node_and_impossible_splits() -> None:
    with pytest.raises(NumaError, match=r"NUMA node 3 does not exist on this host \(nodes: 0, 1\)"):
        assign_cells(NODES, (0, 3), 2, 1024, False, ())
    with pytest.raises(NumaError, match="1 vCPU cannot fill 2 NUMA cells"):
        assign_cells(NODES, (0, 1), 1, 1024, True, ())
    with pytest.raises(NumaError, match="1 MB of memory cannot fill 2 NUMA cells"):
        assign_cells(NODES, (0, 1), 2, 1, True, ())
    cpuless = (*NODES, HostNode(2, (), 1024, {}))
    with pytest.raises(NumaError, match="NUMA node 2 has no CPUs, cell 0 needs 1"):
        assign_cells(cpuless, (2,), 1, 512, False, ())


# -- inventory -----------------------------------------------------------------------------


def test_inventory_section_has_the_documented_shape(two_nodes: Path) -> None:
    section = inventory_section(read_topology(two_nodes))
    assert section[0] == {
        "node": 0,
        "cpus": [0, 1, 2, 3, 8],
        "memory_mb": 8192,
        "hugepages": {"2048": {"total": 512, "free": 500}, "1048576": {"total": 0, "free": 0}},
    }
    assert [s["node"] for s in section] == [0, 1]
    assert section[1]["hugepages"] == {"2048": {"total": 16, "free": 16}}
