"""NUMA/SR-IOV placement: the pure decisions (central.placement), then through the real app."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import Any

import pytest

from central import orchestrator
from central.placement import (
    Books,
    Placed,
    Refused,
    Shape,
    SiteInventory,
    check_network,
    flavor_problem,
    parse_inventory,
    place_port,
    place_server,
)
from tests.unit.identity_support import FLAVOR, make_app, ok, store_of
from tests.unit.network_api_support import inventory, numa_node, report_inventory
from tests.unit.network_support import Cloud, document, make_cloud, network, port, refused

DEDICATED = {"cpu_policy": "dedicated"}


def inv(**kw: Any) -> SiteInventory:
    return parse_inventory("edge-a", inventory(**kw))


def books(site: SiteInventory | None = None, servers=(), vfs=()) -> Books:
    return Books(site or inv(), list(servers), list(vfs))


def shape(vcpus: int = 1, ram_mb: int = 128, **kw: Any) -> Shape:
    return Shape(vcpus=vcpus, ram_mb=ram_mb, **kw)


def refusal(call: Any, *args: Any) -> tuple[str, str]:
    with pytest.raises(Refused) as caught:
        call(*args)
    return caught.value.field, caught.value.message


# -- flavors ----------------------------------------------------------------------------------


def test_cells_split_evenly_first_cells_take_the_remainder() -> None:
    cells = shape(5, 1025, numa_nodes=2).cells()
    assert [(c.vcpus, c.ram_mb) for c in cells] == [(3, 513), (2, 512)]
    assert [c.vcpus for c in shape(4, 1024, numa_nodes=4).cells()] == [1, 1, 1, 1]


@pytest.mark.parametrize(
    ("flavor", "problem"),
    [
        ({"vcpus": 2, "numa_nodes": 3}, "numa_nodes"),
        ({"ram_mb": 1023, "mem_page_size": "2MB"}, "ram_mb"),
        ({"ram_mb": 2048, "mem_page_size": "1GB", "vcpus": 2, "numa_nodes": 2}, None),
        ({"ram_mb": 3072, "mem_page_size": "1GB", "vcpus": 2, "numa_nodes": 2}, "ram_mb"),
        ({"ram_mb": 1004, "mem_page_size": "2MB", "vcpus": 4, "numa_nodes": 4}, "ram_mb"),
        ({"ram_mb": 1024, "mem_page_size": "2MB", "vcpus": 4, "numa_nodes": 4}, None),
        ({"ram_mb": 129, "vcpus": 8, "numa_nodes": 8}, None),  # normal pages: any split
    ],
)
def test_flavor_problem(flavor: dict[str, Any], problem: str | None) -> None:
    found = flavor_problem(Shape(**{"vcpus": 1, "ram_mb": 128, **flavor}))
    assert (found[0] if found else None) == problem


def test_server_without_needs_is_never_placed_nor_refused() -> None:
    for site in (inv(), parse_inventory("edge-a", {}), inv(nodes=[])):
        assert place_server(books(site), shape(4, 4096)).numa_placement == ()


# -- dedicated CPUs ---------------------------------------------------------------------------


def test_dedicated_packs_lowest_node_first() -> None:
    placed: list[Placed] = []
    two = shape(2, **DEDICATED)
    for expected in [(0,), (0,), (1,), (1,)]:
        choice = place_server(books(servers=placed), two)
        assert choice.numa_placement == expected
        placed.append(Placed(two, choice.numa_placement))
    assert refusal(place_server, books(servers=placed), two) == (
        "flavor",
        "needs 2 dedicated CPUs on one NUMA node; free: node 0: 0, node 1: 0",
    )
    # Shared servers pin nothing, even when placed.
    assert place_server(books(servers=placed), shape(2, numa_nodes=2)).numa_placement == (0, 1)


def test_dedicated_refusal_lists_free_cpus_per_node() -> None:
    placed = [Placed(shape(2, **DEDICATED), (0,)), Placed(shape(3, **DEDICATED), (1,))]
    assert refusal(place_server, books(servers=placed), shape(4, **DEDICATED)) == (
        "flavor",
        "needs 4 dedicated CPUs on one NUMA node; free: node 0: 2, node 1: 1",
    )


def test_multi_cell_takes_distinct_nodes_and_backtracks() -> None:
    three_nodes = inv(nodes=[numa_node(0), numa_node(1), numa_node(2)])
    assert place_server(books(three_nodes), shape(4, numa_nodes=2, **DEDICATED)).numa_placement == (
        0,
        1,
    )
    # Cells of 3 and 2 vCPUs: node 0 has 2 free, so the first cell goes to node 1.
    placed = [Placed(shape(2, **DEDICATED), (0,))]
    choice = place_server(books(three_nodes, placed), shape(5, numa_nodes=2, **DEDICATED))
    assert choice.numa_placement == (1, 0)
    placed.append(Placed(shape(5, numa_nodes=2, **DEDICATED), choice.numa_placement))
    # Free now: node 0: 0, node 1: 1, node 2: 4.
    assert refusal(
        place_server, books(three_nodes, placed), shape(4, numa_nodes=2, **DEDICATED)
    ) == (
        "flavor",
        "needs 2 dedicated CPUs on each of 2 NUMA nodes; free: node 0: 0, node 1: 1, node 2: 4",
    )


def test_more_cells_than_host_nodes() -> None:
    assert refusal(place_server, books(), shape(3, numa_nodes=3)) == (
        "flavor",
        "flavor asks for 3 NUMA nodes; site edge-a has 2",
    )


# -- hugepages ----------------------------------------------------------------------------------


def test_hugepages_are_counted_per_node_and_size() -> None:
    site = inv(nodes=[numa_node(0, pages_2m=100, pages_1g=2), numa_node(1, pages_2m=512)])
    gig = shape(1, 1024, mem_page_size="2MB")  # 512 pages of 2MB
    assert place_server(books(site), gig).numa_placement == (1,)
    placed = [Placed(gig, (1,))]
    assert refusal(place_server, books(site, placed), gig) == (
        "flavor",
        "needs 512 2MB hugepages on one NUMA node; free: node 0: 100, node 1: 0",
    )
    # Other sizes are separate pools; small pages use none.
    assert place_server(
        books(site, placed), shape(1, 2048, mem_page_size="1GB")
    ).numa_placement == (0,)
    assert place_server(books(site, placed), shape(1, 200, mem_page_size="2MB")).numa_placement == (
        0,
    )


def test_cpus_and_pages_must_fit_on_the_same_node() -> None:
    site = inv(nodes=[numa_node(0, cpus=4), numa_node(1, cpus=1, pages_2m=512)])
    want = shape(2, 1024, mem_page_size="2MB", **DEDICATED)
    assert refusal(place_server, books(site), want) == (
        "flavor",
        "needs 2 dedicated CPUs and 512 2MB hugepages on one NUMA node together; "
        "free: node 0: 4 CPUs, 0 2MB pages; node 1: 1 CPUs, 512 2MB pages",
    )


# -- VFs ----------------------------------------------------------------------------------------


def test_direct_ports_take_vfs_on_the_servers_node() -> None:
    site = inv(vfs={"fast": {0: 1, 1: 2}})
    choice = place_server(books(site), shape(), ["fast"])
    assert choice.numa_placement == (0,) and choice.port_nodes == (0,)
    # Two ports: node 0 has one VF, so the server goes where both fit.
    choice = place_server(books(site), shape(), ["fast", "fast"])
    assert choice.numa_placement == (1,) and choice.port_nodes == (1, 1)
    # Multi-cell: ports may use any of the server's nodes.
    choice = place_server(books(site), shape(2, numa_nodes=2), ["fast"] * 3)
    assert choice.port_nodes == (0, 1, 1)


def test_vf_exhaustion_per_node() -> None:
    site = inv(vfs={"fast": {0: 1, 1: 1}})
    assert place_port(books(site), "fast", (1,)) == 1
    used = [("fast", 1)]
    assert refusal(place_port, books(site, vfs=used), "fast", (1,)) == (
        "server_id",
        "no free VF on physnet 'fast' on NUMA node 1",
    )
    # A server without placement takes any node's VF.
    assert place_port(books(site, vfs=used), "fast", ()) == 0
    used.append(("fast", 0))
    assert refusal(place_port, books(site, vfs=used), "fast", ()) == (
        "server_id",
        "no free VF on physnet 'fast' at site edge-a",
    )
    # VFs of another physnet are another pool.
    assert place_port(books(inv(vfs={"fast": {0: 1}, "slow": {0: 1}}), vfs=used), "slow", ()) == 0


def test_numa_mismatch_cpus_on_one_node_vfs_on_the_other() -> None:
    site = inv(nodes=[numa_node(0, cpus=4), numa_node(1, cpus=2)], vfs={"fast": {0: 0, 1: 4}})
    want = shape(4, **DEDICATED)
    assert refusal(place_server, books(site), want, ["fast"]) == (
        "ports",
        "no free VF on physnet 'fast' on NUMA node 0",
    )
    two_vfs = inv(nodes=[numa_node(0), numa_node(1)], vfs={"fast": {0: 1, 1: 1}})
    assert refusal(place_server, books(two_vfs), shape(), ["fast", "fast"]) == (
        "ports",
        "needs 2 VFs on physnet 'fast' on one NUMA node; free: node 0: 1, node 1: 1",
    )
    assert refusal(place_server, books(two_vfs), shape(2, numa_nodes=2), ["fast"] * 3) == (
        "ports",
        "needs 3 VFs on physnet 'fast' on the server's 2 NUMA nodes; free: node 0: 1, node 1: 1",
    )


def test_physnet_without_vfs() -> None:
    assert refusal(place_server, books(), shape(), ["phys0"]) == (
        "ports",
        "site edge-a has no SR-IOV VFs on physnet 'phys0'",
    )
    assert refusal(place_port, books(), "phys0", ()) == (
        "vnic_type",
        "site edge-a has no SR-IOV VFs on physnet 'phys0'",
    )


# -- inventory ----------------------------------------------------------------------------------


def test_unreported_inventory() -> None:
    never = parse_inventory("edge-a", {})
    assert never.numa is None and never.physnets is None and never.vlan is None
    message = "site edge-a has not reported its NUMA/SR-IOV inventory yet"
    assert refusal(place_server, books(never), shape(2, **DEDICATED)) == ("flavor", message)
    assert refusal(place_server, books(never), shape(), ["fast"]) == ("ports", message)
    assert refusal(place_port, books(never), "fast", ()) == ("vnic_type", message)
    # An older edged's inventory (no NUMA section) counts as not reported.
    old = parse_inventory("edge-a", {"cpus": 8, "ram_mb": 1024})
    assert refusal(place_server, books(old), shape(numa_nodes=1, **DEDICATED))[1] == message
    # A site that reports its networking but could not read its NUMA topology says so.
    no_numa = parse_inventory("edge-a", {"physnets": ["fast"], "sriov": {"fast": {"0": {}}}})
    assert refusal(place_server, books(no_numa), shape(**DEDICATED)) == (
        "flavor",
        "site edge-a reports no NUMA topology",
    )


@pytest.mark.parametrize(
    "raw",
    [
        None,
        [],
        "numa",
        {"numa": {"0": {}}},
        {"numa": [None, 1, {"node": "x"}, {"node": -1, "cpus": []}, {"node": True, "cpus": []}]},
        {"numa": [{"node": 0, "cpus": "0-3", "hugepages": []}]},
        {"numa": [{"node": 0, "cpus": [0], "hugepages": {"x": 1, "2048": {"total": "many"}}}]},
        {"sriov": {"fast": {"zero": {"total": 1}, "0": 5}, "slow": [1]}, "physnets": "fast"},
        {"network": {"vlan": "yes", "vlan_reason": ["no"]}, "physnets": [1, "a", None]},
    ],
)
def test_garbage_inventory_never_raises(raw: Any) -> None:
    site = parse_inventory("edge-a", raw)
    with contextlib.suppress(Refused):
        place_server(books(site), shape(2, numa_nodes=2, **DEDICATED), ["fast"])


def test_inventory_parse() -> None:
    site = inv(nodes=[numa_node(1, cpus=2, pages_1g=4), numa_node(0, cpus=3)])
    assert [(n.node, n.cpus, dict(n.hugepages)) for n in site.numa or ()] == [
        (0, 3, {2048: 0, 1048576: 0}),
        (1, 2, {2048: 0, 1048576: 4}),
    ]
    assert site.sriov == {"fast": {0: 2, 1: 2}}
    assert site.physnets == ("fast", "phys0") and site.vlan is True


def test_deterministic_whatever_the_order_of_the_books() -> None:
    nodes = [numa_node(i, cpus=4, pages_2m=256) for i in range(4)]
    placed = [
        Placed(shape(3, **DEDICATED), (0,)),
        Placed(shape(2, 256, mem_page_size="2MB"), (1,)),
        Placed(shape(2, numa_nodes=2, **DEDICATED), (2, 3)),
    ]
    vfs = [("fast", 0), ("fast", 2)]
    want = shape(4, 512, mem_page_size="2MB", numa_nodes=2, **DEDICATED)
    first = place_server(books(inv(nodes=nodes, vfs={"fast": {0: 1, 2: 2}}), placed, vfs), want)
    rng = random.Random(7)
    for _ in range(20):
        rng.shuffle(nodes)
        rng.shuffle(placed)
        rng.shuffle(vfs)
        again = books(inv(nodes=list(nodes), vfs={"fast": {2: 2, 0: 1}}), placed, vfs)
        assert place_server(again, want, ["fast"]) == place_server(again, want, ["fast"])
        assert place_server(again, want).numa_placement == first.numa_placement


def test_check_network() -> None:
    check_network(inv(), "vxlan", None)
    check_network(parse_inventory("edge-a", {}), "vxlan", None)  # VXLAN needs nothing reported
    check_network(inv(), "flat", "phys0")
    assert refusal(check_network, inv(), "flat", "phys9") == (
        "physnet",
        "site edge-a has no physnet 'phys9' (it has: fast, phys0)",
    )
    assert refusal(check_network, inv(physnets=[], vfs={}), "flat", "p") == (
        "physnet",
        "site edge-a has no physnet 'p' (it has: none)",
    )
    assert refusal(check_network, inv(vlan=False, vlan_reason="no 8021q"), "vlan", None) == (
        "segmentation",
        "site edge-a cannot carry VLAN networks: no 8021q",
    )
    no_driver = parse_inventory("edge-a", {"physnets": []})
    assert refusal(check_network, no_driver, "vlan", None) == (
        "segmentation",
        "site edge-a reports no VLAN support (no network driver)",
    )


# -- through the API ----------------------------------------------------------------------------


@pytest.fixture
async def cloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    app = make_app(tmp_path, monkeypatch)
    async with app.test_app():
        made = await make_cloud(app)
        # edge-a: 2 nodes of 4 CPUs; 2MB pages: 512 on node 0, 1024 on node 1;
        # VFs on physnet fast: 1 on node 0, 2 on node 1.
        nodes = [numa_node(0, pages_2m=512), numa_node(1, pages_2m=1024)]
        report_inventory(app, "edge-a", inventory(nodes=nodes, vfs={"fast": {0: 1, 1: 2}}))
        yield made


def body(name: str = "vm1", ports: list[str] | None = None, **flavor: Any) -> dict[str, Any]:
    return {
        "name": name,
        "site": "edge-a",
        "flavor": {**FLAVOR, **flavor},
        "image": "tiny",
        "ports": ports or [],
    }


async def server(cloud: Cloud, name: str = "vm1", ports: Any = None, **flavor: Any) -> dict:
    return await ok(await cloud.member.post("/v1/servers", json=body(name, ports, **flavor)), 202)


async def fast_ports(cloud: Cloud, count: int) -> list[dict[str, Any]]:
    net = await network(
        cloud.admin, kind="provider", segmentation="vlan", segmentation_id=40, physnet="fast"
    )
    return [await port(cloud.member, net["id"], vnic_type="direct") for _ in range(count)]


async def test_placed_server_view_and_document(cloud: Cloud) -> None:
    vm = await server(cloud, vcpus=4, ram_mb=2048, numa_nodes=2, mem_page_size="2MB", **DEDICATED)
    assert vm["flavor"] == {
        **FLAVOR,
        "vcpus": 4,
        "ram_mb": 2048,
        "cpu_policy": "dedicated",
        "mem_page_size": "2MB",
        "numa_nodes": 2,
    }
    assert vm["numa_placement"] == [0, 1]
    _, doc = document(cloud.app)
    sent = doc["servers"][0]
    assert (sent["cpu_policy"], sent["mem_page_size"], sent["numa_nodes"]) == (
        "dedicated",
        "2MB",
        2,
    )
    assert sent["numa_placement"] == [0, 1] and sent["ports"] == []
    plain = await server(cloud, "plain")
    assert plain["numa_placement"] == []
    # The choice is stored: it stays when the site's inventory changes later.
    report_inventory(cloud.app, "edge-a", inventory(nodes=[numa_node(0)]))
    shown = await ok(await cloud.member.get(f"/v1/servers/{vm['id']}"))
    assert shown["numa_placement"] == [0, 1]


async def test_server_with_direct_ports_is_placed_on_their_node(cloud: Cloud) -> None:
    p1, p2 = await fast_ports(cloud, 2)
    vm = await server(cloud, ports=[p1["id"], p2["id"]])
    assert vm["numa_placement"] == [1]  # node 0 has a single VF
    for p in (p1, p2):
        assert (await ok(await cloud.member.get(f"/v1/ports/{p['id']}")))["numa_node"] == 1
    _, doc = document(cloud.app)
    assert [p["numa_node"] for p in doc["ports"]] == [1, 1]
    assert doc["servers"][0]["numa_placement"] == [1]


async def test_vf_exhaustion_409_creates_nothing(cloud: Cloud) -> None:
    ports = await fast_ports(cloud, 4)
    await server(cloud, "vm1", ports=[ports[0]["id"], ports[1]["id"]])  # node 1: both VFs
    await server(cloud, "vm2", vcpus=2, **DEDICATED)  # node 0
    gen, _ = document(cloud.app)
    # Node 0 has a VF left, but a 2-port server needs both on its one node.
    answer = await refused(
        cloud.member,
        "POST",
        "/v1/servers",
        409,
        "ports",
        json=body("vm3", [ports[2]["id"], ports[3]["id"]]),
    )
    assert answer["error"]["message"] == (
        "needs 2 VFs on physnet 'fast' on one NUMA node; free: node 0: 1, node 1: 0"
    )
    assert document(cloud.app)[0] == gen
    names = [s["name"] for s in (await ok(await cloud.member.get("/v1/servers")))["servers"]]
    assert names == ["vm1", "vm2"]
    assert (await ok(await cloud.member.get(f"/v1/ports/{ports[2]['id']}")))["server_id"] is None


async def test_numa_mismatch_409(cloud: Cloud) -> None:
    p0, p1 = await fast_ports(cloud, 2)
    await server(cloud, "left", vcpus=2, **DEDICATED)  # node 0: 2 CPUs left
    await server(cloud, "right", vcpus=4, **DEDICATED)  # node 1: none left
    eater = await server(cloud, "eater", ports=[p0["id"]])  # node 0's only VF
    assert eater["numa_placement"] == [0]
    # 2 dedicated CPUs fit node 0 only; the free VFs are on node 1.
    answer = await refused(
        cloud.member,
        "POST",
        "/v1/servers",
        409,
        "ports",
        json=body("vm", [p1["id"]], vcpus=2, **DEDICATED),
    )
    assert answer["error"]["message"] == "no free VF on physnet 'fast' on NUMA node 0"
    # The same server without the port is placed; attaching the port later meets the same wall.
    vm = await server(cloud, "vm", vcpus=2, **DEDICATED)
    assert vm["numa_placement"] == [0]
    answer = await refused(
        cloud.member,
        "POST",
        f"/v1/ports/{p1['id']}/attach",
        409,
        "server_id",
        json={"server_id": vm["id"]},
    )
    assert answer["error"]["message"] == "no free VF on physnet 'fast' on NUMA node 0"
    # A server without placement takes a VF wherever one is free.
    plain = await server(cloud, "plain")
    attached = await ok(
        await cloud.member.post(f"/v1/ports/{p1['id']}/attach", json={"server_id": plain["id"]})
    )
    assert attached["numa_node"] == 1


async def test_flavor_refusals_409(cloud: Cloud) -> None:
    answer = await refused(
        cloud.member, "POST", "/v1/servers", 409, "flavor", json=body(vcpus=3, numa_nodes=3)
    )
    assert answer["error"]["message"] == "flavor asks for 3 NUMA nodes; site edge-a has 2"
    answer = await refused(
        cloud.member,
        "POST",
        "/v1/servers",
        409,
        "flavor",
        json=body(ram_mb=4096, mem_page_size="2MB"),
    )
    assert answer["error"]["message"] == (
        "needs 2048 2MB hugepages on one NUMA node; free: node 0: 512, node 1: 1024"
    )
    report_inventory(cloud.app, "edge-a", {})
    answer = await refused(
        cloud.member, "POST", "/v1/servers", 409, "flavor", json=body(**DEDICATED)
    )
    assert answer["error"]["message"] == (
        "site edge-a has not reported its NUMA/SR-IOV inventory yet"
    )
    assert (await server(cloud))["numa_placement"] == []  # needs nothing: never refused


async def test_deleted_server_frees_its_cpus_once_gone(cloud: Cloud) -> None:
    first = await server(cloud, "a", vcpus=4, **DEDICATED)
    second = await server(cloud, "b", vcpus=4, **DEDICATED)
    assert (first["numa_placement"], second["numa_placement"]) == ([0], [1])
    await refused(
        cloud.member, "POST", "/v1/servers", 409, "flavor", json=body("c", vcpus=4, **DEDICATED)
    )
    assert (await cloud.member.delete(f"/v1/servers/{first['id']}")).status_code == 202
    # Deleting: the site still runs it.
    await refused(
        cloud.member, "POST", "/v1/servers", 409, "flavor", json=body("c", vcpus=4, **DEDICATED)
    )
    orchestrator.apply_status(
        store_of(cloud.app), "edge-a", 5, {"servers": {second["id"]: {"state": "running"}}}
    )
    assert (await server(cloud, "c", vcpus=4, **DEDICATED))["numa_placement"] == [0]
