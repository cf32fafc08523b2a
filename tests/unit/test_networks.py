"""/v1/networks and their subnets through the real app: segmentation, VNIs, subnets, documents,
what the site's inventory allows, and status as the site reports it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from central import orchestrator
from tests.unit.identity_support import make_app, ok, store_of
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
    app = make_app(tmp_path, monkeypatch, vxlan_vni_min=5000, vxlan_vni_max=5002)
    async with app.test_app():
        made = await make_cloud(app)
        for site in ("edge-a", "edge-b"):
            report_inventory(app, site, inventory())
        yield made


async def test_tenant_vxlan_gets_lowest_free_vni_fleet_wide(cloud: Cloud) -> None:
    first = await network(cloud.member, name="n1")
    assert first["kind"] == "tenant" and first["segmentation"] == "vxlan"
    assert first["segmentation_id"] == 5000 and first["mtu"] == 1450
    assert first["physnet"] is None and first["subnets"] == []
    assert first["status"] == "BUILD" and first["reason"] == ""
    second = await network(cloud.other, name="n2")
    assert second["segmentation_id"] == 5001
    # Sites may share a host (one VXLAN device per VNI there): unique across sites too.
    elsewhere = await network(cloud.member, name="n3", site="edge-b")
    assert elsewhere["segmentation_id"] == 5002
    resp = await cloud.member.delete(f"/v1/networks/{first['id']}")
    assert resp.status_code == 204
    again = await network(cloud.member, name="n4", site="edge-b")
    assert again["segmentation_id"] == 5000  # the freed VNI is given again
    for site in ("edge-a", "edge-b"):
        body = await refused(
            cloud.member,
            "POST",
            "/v1/networks",
            409,
            "segmentation_id",
            json={"name": "n6", "site": site},
        )
        assert body["error"]["message"] == "no free VNI in 5000..5002"


async def test_tenant_vlan_and_provider_networks(cloud: Cloud) -> None:
    vlan = await network(cloud.member, segmentation="vlan", segmentation_id=100, mtu=9000)
    assert vlan["segmentation_id"] == 100 and vlan["mtu"] == 9000
    prov = await network(
        cloud.admin, kind="provider", segmentation="vlan", segmentation_id=100, physnet="phys0"
    )
    assert prov["mtu"] == 1500 and prov["physnet"] == "phys0"
    flat = await network(cloud.admin, kind="provider", segmentation="flat", physnet="phys0")
    assert flat["segmentation_id"] is None
    # Provider networks are visible to (and usable by) every project; tenant ones are not.
    listed = await ok(await cloud.other.get("/v1/networks"))
    assert {n["id"] for n in listed["networks"]} == {prov["id"], flat["id"]}
    listed = await ok(await cloud.admin.get("/v1/networks"))
    assert len(listed["networks"]) == 3
    await ok(await cloud.other.get(f"/v1/networks/{prov['id']}"))
    resp = await cloud.other.get(f"/v1/networks/{vlan['id']}")
    assert resp.status_code == 404
    # ...but only the cloud admin changes them.
    resp = await cloud.member.delete(f"/v1/networks/{prov['id']}")
    assert resp.status_code == 403


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({"segmentation": "vlan", "segmentation_id": 0}, "segmentation_id", 400),
        ({"segmentation": "vlan", "segmentation_id": 4095}, "segmentation_id", 400),
        ({"segmentation": "vlan"}, "segmentation_id", 400),
        ({"segmentation_id": 7}, "segmentation_id", 400),  # vxlan: central chooses
        ({"segmentation": "flat"}, "segmentation", 400),
        ({"physnet": "phys0"}, "physnet", 400),  # vxlan
        ({"mtu": 67}, "mtu", 400),
        ({"mtu": 9001}, "mtu", 400),
        ({"kind": "provider", "segmentation": "flat", "physnet": "phys0"}, None, 403),
    ],
)
async def test_bad_tenant_networks(
    cloud: Cloud, body: dict, field: str | None, status: int
) -> None:
    if field is None:
        resp = await cloud.member.post("/v1/networks", json={"name": "n", "site": "edge-a", **body})
        assert resp.status_code == status
        assert (await resp.get_json())["error"]["code"] == "forbidden"
        return
    await refused(
        cloud.member,
        "POST",
        "/v1/networks",
        status,
        field,
        json={"name": "n", "site": "edge-a", **body},
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"segmentation": "vlan", "segmentation_id": 10}, "physnet"),
        ({"segmentation": "flat"}, "physnet"),
        ({"segmentation": "vxlan", "physnet": "phys0"}, "segmentation"),
        ({"segmentation": "flat", "physnet": "phys0", "segmentation_id": 3}, "segmentation_id"),
    ],
)
async def test_bad_provider_networks(cloud: Cloud, body: dict, field: str) -> None:
    await refused(
        cloud.admin,
        "POST",
        "/v1/networks",
        400,
        field,
        json={"name": "p", "site": "edge-a", "kind": "provider", **body},
    )


async def test_segment_in_use_409(cloud: Cloud) -> None:
    await network(cloud.member, segmentation="vlan", segmentation_id=200)
    await refused(
        cloud.other,
        "POST",
        "/v1/networks",
        409,
        "segmentation_id",
        json={"name": "n", "site": "edge-a", "segmentation": "vlan", "segmentation_id": 200},
    )
    await network(cloud.admin, kind="provider", segmentation="flat", physnet="phys0")
    await refused(
        cloud.admin,
        "POST",
        "/v1/networks",
        409,
        "physnet",
        json={
            "name": "n",
            "site": "edge-a",
            "kind": "provider",
            "segmentation": "flat",
            "physnet": "phys0",
        },
    )


async def test_unknown_site_404(cloud: Cloud) -> None:
    resp = await cloud.member.post("/v1/networks", json={"name": "n", "site": "nowhere"})
    assert resp.status_code == 404


async def test_subnet_defaults_and_pools(cloud: Cloud) -> None:
    net = await network(cloud.member)
    sub = await subnet(cloud.member, net["id"], "10.0.0.0/24")
    assert sub["gateway"] == "10.0.0.1" and sub["ip_version"] == 4
    assert sub["allocation_pools"] == [{"start": "10.0.0.2", "end": "10.0.0.254"}]
    mid = await subnet(cloud.member, net["id"], "10.1.0.0/28", gateway="10.1.0.5")
    assert mid["allocation_pools"] == [
        {"start": "10.1.0.1", "end": "10.1.0.4"},
        {"start": "10.1.0.6", "end": "10.1.0.14"},
    ]
    pools = [
        {"start": "10.2.0.100", "end": "10.2.0.110"},
        {"start": "10.2.0.10", "end": "10.2.0.20"},
    ]
    given = await subnet(cloud.member, net["id"], "10.2.0.0/24", allocation_pools=pools)
    assert given["allocation_pools"] == sorted(pools, key=lambda p: int(p["start"].split(".")[3]))
    v6 = await subnet(cloud.member, net["id"], "fd00::/64")
    assert v6["gateway"] == "fd00::1" and v6["ip_version"] == 6
    listed = await ok(await cloud.member.get(f"/v1/networks/{net['id']}/subnets"))
    assert len(listed["subnets"]) == 4
    shown = await ok(await cloud.member.get(f"/v1/networks/{net['id']}"))
    assert [s["id"] for s in shown["subnets"]] == [s["id"] for s in listed["subnets"]]


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({"cidr": "10.0.0.128/25"}, "cidr", 409),  # overlaps 10.0.0.0/24
        ({"cidr": "10.0.0.0/16"}, "cidr", 409),
        ({"cidr": "10.5.0.1/24"}, "cidr", 400),  # host bits set
        ({"cidr": "banana"}, "cidr", 400),
        ({"cidr": "10.5.0.0/31"}, "cidr", 400),
        ({"cidr": "10.5.0.0/24", "gateway": "10.6.0.1"}, "gateway", 400),
        ({"cidr": "10.5.0.0/24", "gateway": "10.5.0.255"}, "gateway", 400),
        ({"cidr": "10.5.0.0/24", "gateway": "fd00::1"}, "gateway", 400),
        (
            {
                "cidr": "10.5.0.0/24",
                "allocation_pools": [{"start": "10.5.0.10", "end": "10.5.1.5"}],
            },
            "allocation_pools",
            400,
        ),
        (
            {"cidr": "10.5.0.0/24", "allocation_pools": [{"start": "10.5.0.9", "end": "10.5.0.3"}]},
            "allocation_pools",
            400,
        ),
        (
            {
                "cidr": "10.5.0.0/24",
                "allocation_pools": [
                    {"start": "10.5.0.10", "end": "10.5.0.20"},
                    {"start": "10.5.0.20", "end": "10.5.0.30"},
                ],
            },
            "allocation_pools",
            400,
        ),
        (
            {"cidr": "10.5.0.0/24", "allocation_pools": [{"start": "10.5.0.1", "end": "10.5.0.9"}]},
            "allocation_pools",  # holds the gateway
            400,
        ),
        ({"cidr": "10.5.0.0/24", "pools": []}, "pools", 400),
    ],
)
async def test_bad_subnets(cloud: Cloud, body: dict, field: str, status: int) -> None:
    net = await network(cloud.member)
    await subnet(cloud.member, net["id"], "10.0.0.0/24")
    await refused(
        cloud.member, "POST", f"/v1/networks/{net['id']}/subnets", status, field, json=body
    )


async def test_delete_refused_while_in_use(cloud: Cloud) -> None:
    net = await network(cloud.member)
    sub = await subnet(cloud.member, net["id"], "10.0.0.0/24")
    p = await port(cloud.member, net["id"])
    await refused(cloud.member, "DELETE", f"/v1/networks/{net['id']}", 409, "ports")
    await refused(
        cloud.member, "DELETE", f"/v1/networks/{net['id']}/subnets/{sub['id']}", 409, "fixed_ips"
    )
    assert (await cloud.member.delete(f"/v1/ports/{p['id']}")).status_code == 204
    assert (
        await cloud.member.delete(f"/v1/networks/{net['id']}/subnets/{sub['id']}")
    ).status_code == 204
    await subnet(cloud.member, net["id"], "10.0.0.0/24")
    assert (await cloud.member.delete(f"/v1/networks/{net['id']}")).status_code == 204
    assert (await cloud.member.get(f"/v1/networks/{net['id']}")).status_code == 404


async def test_reader_and_other_project(cloud: Cloud) -> None:
    net = await network(cloud.member)
    resp = await cloud.reader.post("/v1/networks", json={"name": "n", "site": "edge-a"})
    assert resp.status_code == 403
    await ok(await cloud.reader.get(f"/v1/networks/{net['id']}"))
    for method, path in [
        ("GET", f"/v1/networks/{net['id']}"),
        ("DELETE", f"/v1/networks/{net['id']}"),
        ("POST", f"/v1/networks/{net['id']}/subnets"),
    ]:
        resp = await cloud.other.open(path, method=method, json={"cidr": "10.0.0.0/24"})
        assert resp.status_code == 404, (method, path)


async def test_document_sections_and_one_generation_per_change(cloud: Cloud) -> None:
    gen0, _ = document(cloud.app)
    net = await network(cloud.member)
    gen1, doc = document(cloud.app)
    assert gen1 == gen0 + 1
    assert doc["networks"] == [
        {
            "id": net["id"],
            "kind": "tenant",
            "segmentation": "vxlan",
            "segmentation_id": 5000,
            "physnet": None,
            "mtu": 1450,
            "subnets": [],
        }
    ]
    sub = await subnet(cloud.member, net["id"], "10.0.0.0/29")
    gen2, doc = document(cloud.app)
    assert gen2 == gen1 + 1
    assert doc["networks"][0]["subnets"] == [
        {"id": sub["id"], "cidr": "10.0.0.0/29", "gateway": "10.0.0.1", "ip_version": 4}
    ]
    _, other_site = document(cloud.app, "edge-b")
    assert other_site["networks"] == [] and other_site["ports"] == []
    # A refused change publishes nothing.
    await cloud.member.post(f"/v1/networks/{net['id']}/subnets", json={"cidr": "10.0.0.0/30"})
    assert document(cloud.app)[0] == gen2
    assert (
        await cloud.member.delete(f"/v1/networks/{net['id']}/subnets/{sub['id']}")
    ).status_code == 204
    assert (await cloud.member.delete(f"/v1/networks/{net['id']}")).status_code == 204
    gen4, doc = document(cloud.app)
    assert gen4 == gen2 + 2 and doc["networks"] == []


# -- what the site's inventory allows --------------------------------------------------------


async def test_tenant_vlan_may_name_a_physnet_the_site_has(cloud: Cloud) -> None:
    net = await network(cloud.member, segmentation="vlan", segmentation_id=30, physnet="fast")
    assert net["physnet"] == "fast"
    _, doc = document(cloud.app)
    assert doc["networks"][0]["physnet"] == "fast"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (
            {"kind": "provider", "segmentation": "flat", "physnet": "phys9"},
            "physnet",
            "site edge-a has no physnet 'phys9' (it has: fast, phys0)",
        ),
        (
            {"kind": "provider", "segmentation": "vlan", "segmentation_id": 7, "physnet": "x"},
            "physnet",
            "site edge-a has no physnet 'x' (it has: fast, phys0)",
        ),
        (
            {"segmentation": "vlan", "segmentation_id": 7, "physnet": "phys9"},
            "physnet",
            "site edge-a has no physnet 'phys9' (it has: fast, phys0)",
        ),
    ],
)
async def test_physnet_the_site_lacks_409(
    cloud: Cloud, body: dict[str, Any], field: str, message: str
) -> None:
    refusal = await refused(
        cloud.admin,
        "POST",
        "/v1/networks",
        409,
        field,
        json={"name": "p", "site": "edge-a", **body},
    )
    assert refusal["error"]["message"] == message


async def test_vlan_at_a_site_without_8021q_409(cloud: Cloud) -> None:
    reason = "kernel has no 802.1Q VLAN support"
    report_inventory(cloud.app, "edge-a", inventory(vlan=False, vlan_reason=reason))
    for client, body in [
        (cloud.member, {"segmentation": "vlan", "segmentation_id": 5}),
        (
            cloud.admin,
            {"kind": "provider", "segmentation": "vlan", "segmentation_id": 5, "physnet": "phys0"},
        ),
    ]:
        refusal = await refused(
            client,
            "POST",
            "/v1/networks",
            409,
            "segmentation",
            json={"name": "v", **body, "site": "edge-a"},
        )
        assert refusal["error"]["message"] == f"site edge-a cannot carry VLAN networks: {reason}"
    # Flat and VXLAN need no 802.1Q.
    await network(cloud.admin, kind="provider", segmentation="flat", physnet="phys0")
    await network(cloud.member)


async def test_site_that_never_reported_409(cloud: Cloud) -> None:
    report_inventory(cloud.app, "edge-b", {})
    for client, body, field, message in [
        (
            cloud.admin,
            {"kind": "provider", "segmentation": "flat", "physnet": "phys0"},
            "physnet",
            "site edge-b has not reported its physnets yet",
        ),
        (
            cloud.member,
            {"segmentation": "vlan", "segmentation_id": 5},
            "segmentation",
            "site edge-b has not reported its VLAN support yet",
        ),
    ]:
        refusal = await refused(
            client, "POST", "/v1/networks", 409, field, json={"name": "n", "site": "edge-b", **body}
        )
        assert refusal["error"]["message"] == message
    assert (await network(cloud.member, site="edge-b"))["segmentation"] == "vxlan"


# -- status as the site reports it -----------------------------------------------------------


async def test_status_folds_network_reports(cloud: Cloud) -> None:
    store = store_of(cloud.app)
    up = await network(cloud.member, name="up")
    bad = await network(cloud.member, name="bad")
    await network(cloud.member, name="unseen", segmentation="vlan", segmentation_id=5)
    far = await network(cloud.member, name="far", site="edge-b")
    orchestrator.apply_status(
        store,
        "edge-a",
        3,
        {
            "servers": {},
            "networks": {
                up["id"]: {"state": "active", "reason": ""},
                bad["id"]: {"state": "error", "reason": "name taken by a link that is not ours"},
                far["id"]: {"state": "active"},  # another site's network: not this report's
            },
        },
    )
    shown = {n["name"]: n for n in (await ok(await cloud.member.get("/v1/networks")))["networks"]}
    assert (shown["up"]["status"], shown["up"]["reason"]) == ("ACTIVE", "")
    assert shown["bad"]["status"] == "ERROR"
    assert shown["bad"]["reason"] == "name taken by a link that is not ours"
    assert shown["unseen"]["status"] == "BUILD" and shown["far"]["status"] == "BUILD"
    # Seen no longer: back to BUILD.
    orchestrator.apply_status(store, "edge-a", 4, {"servers": {}, "networks": {}})
    one = await ok(await cloud.member.get(f"/v1/networks/{up['id']}"))
    assert one["status"] == "BUILD"


@pytest.mark.parametrize(
    "resources",
    [
        {},
        {"networks": None, "ports": None},
        {"networks": [], "ports": "nope"},
        {"networks": {"x": 1}, "ports": {"y": [1, 2]}},
        {"networks": {"ID": "active"}},
        {"networks": {"ID": {"state": ["active"], "reason": {"a": 1}}}},
        {"networks": {"ID": {"state": None}}},
        {"servers": [1], "networks": {"ID": {"state": "exploded"}}},
        [],
        None,
    ],
)
async def test_status_garbage_never_raises(cloud: Cloud, resources: Any) -> None:
    net = await network(cloud.member)
    if isinstance(resources, dict) and "ID" in str(resources.get("networks")):
        resources = {**resources, "networks": {net["id"]: resources["networks"]["ID"]}}
    orchestrator.apply_status(store_of(cloud.app), "edge-a", 5, resources)
    shown = await ok(await cloud.member.get(f"/v1/networks/{net['id']}"))
    assert shown["status"] == "BUILD" and isinstance(shown["reason"], str)
    assert (
        store_of(cloud.app).one("SELECT observed_generation FROM sites WHERE name = 'edge-a'")[
            "observed_generation"
        ]
        == 5
    )
