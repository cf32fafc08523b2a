"""/v1/ports through the real app: MACs, IPAM, attach/detach, direct ports' VFs, status,
and the site's document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from central import orchestrator
from tests.unit.identity_support import FLAVOR, dump, make_app, ok, store_of
from tests.unit.network_api_support import inventory, report_inventory
from tests.unit.network_support import (
    Cloud,
    document,
    make_cloud,
    network,
    port,
    refused,
    subnet,
)


@pytest.fixture
async def cloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    app = make_app(tmp_path, monkeypatch)
    async with app.test_app():
        made = await make_cloud(app)
        for site in ("edge-a", "edge-b"):
            report_inventory(app, site, inventory())  # VFs: physnet fast, 2 on each of 2 nodes
        yield made


async def fast_network(cloud: Cloud, site: str = "edge-a") -> dict[str, Any]:
    """A provider VLAN network on physnet ``fast`` (the site's SR-IOV physnet), with a subnet."""
    net = await network(
        cloud.admin,
        site=site,
        kind="provider",
        segmentation="vlan",
        segmentation_id=40,
        physnet="fast",
    )
    await subnet(cloud.admin, net["id"], "10.40.0.0/24")
    return await ok(await cloud.member.get(f"/v1/networks/{net['id']}"))


async def server(client: Any, site: str = "edge-a", name: str = "vm1") -> dict[str, Any]:
    body = {"name": name, "site": site, "flavor": FLAVOR, "image": "tiny"}
    return await ok(await client.post("/v1/servers", json=body), 202)


def ips(p: dict[str, Any]) -> list[str]:
    return [f["ip_address"] for f in p["fixed_ips"]]


async def test_port_gets_mac_and_one_address_per_subnet(cloud: Cloud) -> None:
    net = await network(cloud.member)
    s4 = await subnet(cloud.member, net["id"], "10.0.0.0/24")
    s6 = await subnet(cloud.member, net["id"], "fd00::/64")
    p = await port(cloud.member, net["id"], name="eth0")
    assert p["mac_address"].startswith("fa:16:3e:")
    assert p["fixed_ips"] == [
        {"subnet_id": s4["id"], "ip_address": "10.0.0.2"},
        {"subnet_id": s6["id"], "ip_address": "fd00::2"},
    ]
    assert p["vnic_type"] == "normal" and p["server_id"] is None and p["site"] == "edge-a"
    assert (p["status"], p["reason"], p["binding"], p["numa_node"]) == ("BUILD", "", None, None)
    second = await port(cloud.member, net["id"], fixed_ips=[{"subnet_id": s4["id"]}])
    assert ips(second) == ["10.0.0.3"]
    assert second["mac_address"] != p["mac_address"]
    given = await port(
        cloud.member,
        net["id"],
        mac_address="02:AA:bb:cc:dd:ee",
        fixed_ips=[{"ip_address": "10.0.0.200"}],
    )
    assert given["mac_address"] == "02:aa:bb:cc:dd:ee" and ips(given) == ["10.0.0.200"]
    none = await port(cloud.member, net["id"], fixed_ips=[])
    assert none["fixed_ips"] == []
    listed = await ok(await cloud.member.get("/v1/ports"))
    assert len(listed["ports"]) == 4
    assert (await ok(await cloud.member.get(f"/v1/ports/{p['id']}")))["id"] == p["id"]


async def test_ipam_exhausts_a_slash_29_then_reuses_released(cloud: Cloud) -> None:
    net = await network(cloud.member)
    await subnet(cloud.member, net["id"], "10.0.0.0/29")  # hosts .1-.6, gateway .1
    ports = [await port(cloud.member, net["id"]) for _ in range(5)]
    assert [ips(p)[0] for p in ports] == [f"10.0.0.{i}" for i in range(2, 7)]
    body = await refused(
        cloud.member, "POST", "/v1/ports", 409, "fixed_ips", json={"network_id": net["id"]}
    )
    assert "no free address" in body["error"]["message"]
    assert (await cloud.member.delete(f"/v1/ports/{ports[2]['id']}")).status_code == 204
    again = await port(cloud.member, net["id"])
    assert ips(again) == ["10.0.0.4"]
    rows = store_of(cloud.app).query("SELECT address FROM ip_allocations ORDER BY address")
    addresses = [r["address"] for r in rows]
    assert len(addresses) == len(set(addresses)) == 5


async def test_never_the_same_address_twice_even_in_the_store(tmp_path: Path) -> None:
    import sqlite3

    from central.store import Store

    # The primary key refuses a second allocation of one address, whatever the code does.
    st = Store(tmp_path / "central.db")
    try:
        st.conn.execute("PRAGMA foreign_keys=OFF")
        st.conn.execute("INSERT INTO ip_allocations VALUES ('s', '10.0.0.2', 'p1')")
        with pytest.raises(sqlite3.IntegrityError):
            st.conn.execute("INSERT INTO ip_allocations VALUES ('s', '10.0.0.2', 'p2')")
    finally:
        st.close()


@pytest.mark.parametrize(
    ("extra", "field", "status", "words"),
    [
        ({"fixed_ips": [{"ip_address": "10.9.0.5"}]}, "fixed_ips", 400, "no subnet"),
        ({"fixed_ips": [{"ip_address": "10.0.0.2"}]}, "fixed_ips", 409, "in use"),
        ({"fixed_ips": [{"ip_address": "10.0.0.1"}]}, "fixed_ips", 409, "gateway"),
        ({"fixed_ips": [{"ip_address": "10.0.0.255"}]}, "fixed_ips", 400, "not a host"),
        ({"fixed_ips": [{"ip_address": "nonsense"}]}, "fixed_ips", 400, "not an IP"),
        ({"fixed_ips": [{"subnet_id": "nope"}]}, "fixed_ips", 400, "not on the port"),
        ({"fixed_ips": [{}]}, "fixed_ips", 400, "names a subnet_id"),
        (
            {"fixed_ips": [{"ip_address": "10.0.0.9"}, {"ip_address": "10.0.0.9"}]},
            "fixed_ips",
            409,
            "in use",
        ),
        ({"mac_address": "fa:16:3e:00:00:01"}, "mac_address", 409, "mac in use"),
        ({"mac_address": "FA:16:3E:00:00:01"}, "mac_address", 409, "mac in use"),
        ({"mac_address": "01:00:5e:00:00:01"}, "mac_address", 400, "multicast"),
        ({"mac_address": "00:00:00:00:00:00"}, "mac_address", 400, "not a usable"),
        ({"mac_address": "fa:16:3e:00:00"}, "mac_address", 400, "not a MAC"),
        ({"mac_address": "zz:16:3e:00:00:01"}, "mac_address", 400, "not a MAC"),
        ({"vnic_type": "macvtap"}, "vnic_type", 400, ""),
        ({"vnic_type": "direct"}, "vnic_type", 409, "needs a network with a physnet"),
        ({"network_id": "nope"}, None, 404, "does not exist"),
    ],
)
async def test_bad_ports_refused_whole(
    cloud: Cloud, extra: dict, field: str | None, status: int, words: str
) -> None:
    net = await network(cloud.member)
    await subnet(cloud.member, net["id"], "10.0.0.0/24")
    await port(cloud.member, net["id"], mac_address="fa:16:3e:00:00:01")  # holds 10.0.0.2
    body = {"network_id": net["id"], **extra}
    if field is None:
        before = dump(cloud.app)
        resp = await cloud.member.post("/v1/ports", json=body)
        assert resp.status_code == status
        assert words in (await resp.get_json())["error"]["message"]
        assert dump(cloud.app) == before
        return
    refusal = await refused(cloud.member, "POST", "/v1/ports", status, field, json=body)
    assert words in refusal["error"]["message"]


async def test_networks_a_project_may_use(cloud: Cloud) -> None:
    mine = await network(cloud.member)
    prov = await network(
        cloud.admin, kind="provider", segmentation="vlan", segmentation_id=10, physnet="phys0"
    )
    await subnet(cloud.admin, prov["id"], "192.0.2.0/24")
    shared = await port(cloud.other, prov["id"])
    assert shared["project_id"] != mine["project_id"] and ips(shared) == ["192.0.2.2"]
    before = dump(cloud.app)
    resp = await cloud.other.post("/v1/ports", json={"network_id": mine["id"]})
    assert resp.status_code == 404
    assert dump(cloud.app) == before
    resp = await cloud.reader.post("/v1/ports", json={"network_id": mine["id"]})
    assert resp.status_code == 403
    resp = await cloud.other.get("/v1/ports")
    assert [p["id"] for p in (await resp.get_json())["ports"]] == [shared["id"]]
    mine_port = await port(cloud.member, mine["id"])
    for method, path in [
        ("GET", f"/v1/ports/{mine_port['id']}"),
        ("DELETE", f"/v1/ports/{mine_port['id']}"),
        ("POST", f"/v1/ports/{mine_port['id']}/detach"),
    ]:
        assert (await cloud.other.open(path, method=method)).status_code == 404


async def test_attach_detach_and_create_attached(cloud: Cloud) -> None:
    net = await network(cloud.member)
    await subnet(cloud.member, net["id"], "10.0.0.0/24")
    vm = await server(cloud.member)
    p = await port(cloud.member, net["id"])
    attached = await ok(
        await cloud.member.post(f"/v1/ports/{p['id']}/attach", json={"server_id": vm["id"]})
    )
    assert attached["server_id"] == vm["id"]
    gen, doc = document(cloud.app)
    assert doc["servers"][0]["ports"] == [p["id"]]
    # Attaching again to the same server changes nothing; to another is refused.
    await ok(await cloud.member.post(f"/v1/ports/{p['id']}/attach", json={"server_id": vm["id"]}))
    assert document(cloud.app)[0] == gen
    vm2 = await server(cloud.member, name="vm2")
    await refused(
        cloud.member,
        "POST",
        f"/v1/ports/{p['id']}/attach",
        409,
        "server_id",
        json={"server_id": vm2["id"]},
    )
    detached = await ok(await cloud.member.post(f"/v1/ports/{p['id']}/detach"))
    assert detached["server_id"] is None
    assert document(cloud.app)[1]["servers"][0]["ports"] == []
    created = await port(cloud.member, net["id"], server_id=vm2["id"])
    assert created["server_id"] == vm2["id"]


async def test_attach_needs_same_project_and_site(cloud: Cloud) -> None:
    net = await network(cloud.member)
    p = await port(cloud.member, net["id"])
    theirs = await server(cloud.other)
    far = await server(cloud.member, site="edge-b")
    for target in (theirs["id"], far["id"], "no-such-server"):
        await refused(
            cloud.member,
            "POST",
            f"/v1/ports/{p['id']}/attach",
            409,
            "server_id",
            json={"server_id": target},
        )
        await refused(
            cloud.member,
            "POST",
            "/v1/ports",
            409,
            "server_id",
            json={"network_id": net["id"], "server_id": target},
        )


async def test_document_carries_ports_one_generation_per_change(cloud: Cloud) -> None:
    net = await fast_network(cloud)
    sub_id = net["subnets"][0]["id"]
    vm = await server(cloud.member)
    gen0, _ = document(cloud.app)
    p = await port(cloud.member, net["id"], server_id=vm["id"], vnic_type="direct")
    assert p["numa_node"] == 0  # the server has no placement: the lowest node with a free VF
    gen1, doc = document(cloud.app)
    assert gen1 == gen0 + 1
    assert doc["ports"] == [
        {
            "id": p["id"],
            "network_id": net["id"],
            "mac": p["mac_address"],
            "fixed_ips": [{"subnet_id": sub_id, "ip_address": "10.40.0.2"}],
            "vnic_type": "direct",
            "server_id": vm["id"],
            "numa_node": 0,
        }
    ]
    assert doc["servers"][0]["ports"] == [p["id"]]
    assert document(cloud.app, "edge-b")[1]["ports"] == []
    await cloud.member.post(
        "/v1/ports", json={"network_id": net["id"], "mac_address": p["mac_address"]}
    )
    assert document(cloud.app)[0] == gen1  # refused: no generation
    assert (await cloud.member.post(f"/v1/ports/{p['id']}/detach")).status_code == 200
    gen2, doc = document(cloud.app)
    assert gen2 == gen1 + 1 and doc["ports"][0]["numa_node"] is None
    assert (await cloud.member.delete(f"/v1/ports/{p['id']}")).status_code == 204
    gen3, doc = document(cloud.app)
    assert gen3 == gen1 + 2 and doc["ports"] == []


async def test_server_gone_detaches_its_ports(cloud: Cloud) -> None:
    net = await fast_network(cloud)
    vm = await server(cloud.member)
    p = await port(cloud.member, net["id"], server_id=vm["id"], vnic_type="direct")
    assert p["numa_node"] == 0
    assert (await cloud.member.delete(f"/v1/servers/{vm['id']}")).status_code == 202
    # Until the site reports it gone, the deleting server keeps its VF.
    assert (await ok(await cloud.member.get(f"/v1/ports/{p['id']}")))["numa_node"] == 0
    orchestrator.apply_status(store_of(cloud.app), "edge-a", 9, {"servers": {}})
    shown = await ok(await cloud.member.get(f"/v1/ports/{p['id']}"))
    assert shown["server_id"] is None and shown["numa_node"] is None


async def test_server_create_with_ports(cloud: Cloud) -> None:
    net = await network(cloud.member)
    p1 = await port(cloud.member, net["id"])
    p2 = await port(cloud.member, net["id"])
    body = {"name": "vm1", "site": "edge-a", "flavor": FLAVOR, "image": "tiny"}
    vm = await ok(await cloud.member.post("/v1/servers", json={**body, "ports": [p1["id"]]}), 202)
    assert (await ok(await cloud.member.get(f"/v1/ports/{p1['id']}")))["server_id"] == vm["id"]
    _, doc = document(cloud.app)
    assert doc["servers"][0]["ports"] == [p1["id"]]
    far = await network(cloud.member, site="edge-b")
    p3 = await port(cloud.member, far["id"])
    theirs = await port(cloud.other, (await network(cloud.other))["id"])
    for bad in ([p1["id"]], [p2["id"], p3["id"]], [theirs["id"]], ["nope"]):
        await refused(
            cloud.member,
            "POST",
            "/v1/servers",
            409,
            "ports",
            json={**body, "name": "vm2", "ports": bad},
        )


# -- direct ports: VFs -----------------------------------------------------------------------


async def test_direct_port_needs_vfs_on_its_physnet(cloud: Cloud) -> None:
    phys0 = await network(
        cloud.admin, kind="provider", segmentation="flat", physnet="phys0"
    )  # an uplink, no VFs
    body = await refused(
        cloud.member,
        "POST",
        "/v1/ports",
        409,
        "vnic_type",
        json={"network_id": phys0["id"], "vnic_type": "direct"},
    )
    assert body["error"]["message"] == "site edge-a has no SR-IOV VFs on physnet 'phys0'"
    vxlan = await network(cloud.member)
    body = await refused(
        cloud.member,
        "POST",
        "/v1/ports",
        409,
        "vnic_type",
        json={"network_id": vxlan["id"], "vnic_type": "direct"},
    )
    assert "has none" in body["error"]["message"]
    # A tenant VLAN network on the SR-IOV physnet takes direct ports.
    tenant = await network(cloud.member, segmentation="vlan", segmentation_id=9, physnet="fast")
    assert (await port(cloud.member, tenant["id"], vnic_type="direct"))["numa_node"] is None


async def test_direct_port_at_a_site_that_never_reported(cloud: Cloud) -> None:
    net = await fast_network(cloud)
    report_inventory(cloud.app, "edge-a", {})
    body = await refused(
        cloud.member,
        "POST",
        "/v1/ports",
        409,
        "vnic_type",
        json={"network_id": net["id"], "vnic_type": "direct"},
    )
    assert body["error"]["message"] == (
        "site edge-a has not reported its NUMA/SR-IOV inventory yet"
    )


async def test_vfs_are_counted_per_node_and_released_on_detach(cloud: Cloud) -> None:
    net = await fast_network(cloud)
    vm = await server(cloud.member)
    ports = [await port(cloud.member, net["id"], vnic_type="direct") for _ in range(5)]
    assert [p["numa_node"] for p in ports] == [None] * 5  # unbound: no VF yet
    nodes = []
    for p in ports[:4]:
        attached = await ok(
            await cloud.member.post(f"/v1/ports/{p['id']}/attach", json={"server_id": vm["id"]})
        )
        nodes.append(attached["numa_node"])
    assert nodes == [0, 0, 1, 1]
    body = await refused(
        cloud.member,
        "POST",
        f"/v1/ports/{ports[4]['id']}/attach",
        409,
        "server_id",
        json={"server_id": vm["id"]},
    )
    assert body["error"]["message"] == "no free VF on physnet 'fast' at site edge-a"
    body = await refused(
        cloud.member,
        "POST",
        "/v1/ports",
        409,
        "server_id",
        json={"network_id": net["id"], "vnic_type": "direct", "server_id": vm["id"]},
    )
    assert body["error"]["message"] == "no free VF on physnet 'fast' at site edge-a"
    detached = await ok(await cloud.member.post(f"/v1/ports/{ports[1]['id']}/detach"))
    assert detached["numa_node"] is None
    again = await ok(
        await cloud.member.post(f"/v1/ports/{ports[4]['id']}/attach", json={"server_id": vm["id"]})
    )
    assert again["numa_node"] == 0
    # Normal ports never take a VF.
    normal = await port(cloud.member, net["id"], server_id=vm["id"])
    assert normal["numa_node"] is None


# -- status as the site reports it -----------------------------------------------------------


async def test_status_folds_port_reports(cloud: Cloud) -> None:
    net = await fast_network(cloud)
    vm = await server(cloud.member)
    tap = await port(cloud.member, net["id"], server_id=vm["id"])
    vf = await port(cloud.member, net["id"], server_id=vm["id"], vnic_type="direct")
    down = await port(cloud.member, net["id"])
    broken = await port(cloud.member, net["id"])
    unseen = await port(cloud.member, net["id"])
    tap_binding = {"kind": "tap", "tap": "sk-t-12345678", "bridge": "sk-b-12345678"}
    vf_binding = {"kind": "vf", "pci": "0000:3b:02.1", "pf": "pf0", "vf": 1, "numa_node": 0}
    report = {
        "servers": {},
        "networks": {net["id"]: {"state": "active", "reason": ""}},
        "ports": {
            tap["id"]: {"state": "active", "reason": "", "binding": tap_binding},
            vf["id"]: {"state": "active", "reason": "", "binding": vf_binding},
            down["id"]: {"state": "down", "reason": "no server"},
            broken["id"]: {"state": "error", "reason": "no free VF", "binding": "garbage"},
        },
    }
    orchestrator.apply_status(store_of(cloud.app), "edge-a", 7, report)
    shown = {p["id"]: p for p in (await ok(await cloud.member.get("/v1/ports")))["ports"]}
    assert (shown[tap["id"]]["status"], shown[tap["id"]]["binding"]) == ("ACTIVE", tap_binding)
    assert (shown[vf["id"]]["status"], shown[vf["id"]]["binding"]) == ("ACTIVE", vf_binding)
    assert (shown[down["id"]]["status"], shown[down["id"]]["reason"]) == ("DOWN", "no server")
    assert shown[down["id"]]["binding"] is None
    assert (shown[broken["id"]]["status"], shown[broken["id"]]["reason"]) == (
        "ERROR",
        "no free VF",
    )
    assert shown[broken["id"]]["binding"] is None
    assert shown[unseen["id"]]["status"] == "BUILD"
    assert (await ok(await cloud.member.get(f"/v1/networks/{net['id']}")))["status"] == "ACTIVE"
    # A report that no longer lists a port: BUILD again, binding forgotten.
    before = dump(cloud.app)
    orchestrator.apply_status(store_of(cloud.app), "edge-a", 8, {**report, "ports": {}})
    assert (await ok(await cloud.member.get(f"/v1/ports/{tap['id']}")))["binding"] is None
    assert dump(cloud.app) != before


@pytest.mark.parametrize(
    "ports",
    [
        None,
        [],
        "x",
        {"ID": None},
        {"ID": "active"},
        {"ID": {"state": 3, "reason": None, "binding": []}},
        {"ID": {"state": "active", "binding": {"kind": "tap", "x": float("nan")}}},
        {"ID": {"state": "active", "binding": {"kind": "tap", "blob": "x" * 10000}}},
    ],
)
async def test_port_status_garbage_never_raises(cloud: Cloud, ports: Any) -> None:
    net = await network(cloud.member)
    p = await port(cloud.member, net["id"])
    if isinstance(ports, dict):
        ports = {p["id"]: ports["ID"]}
    orchestrator.apply_status(store_of(cloud.app), "edge-a", 2, {"servers": {}, "ports": ports})
    shown = await ok(await cloud.member.get(f"/v1/ports/{p['id']}"))
    assert shown["status"] in ("BUILD", "ACTIVE") and isinstance(shown["reason"], str)
    assert shown["binding"] is None or shown["binding"]["kind"] == "tap"
