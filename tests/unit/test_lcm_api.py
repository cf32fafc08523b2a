"""/vnflcm/v1 through the app with its real store and hub: instances, instantiate and
terminate driven by the engine from played site reports, FAILED_TEMP and the task
requests, one operation at a time, scoping, RBAC and the audit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from central import orchestrator
from central.vnfd import load_vnfd
from tests.unit.identity_support import make_app, ok, store_of
from tests.unit.lcm_support import (
    LCM,
    TEMPLATES,
    VROUTER,
    add_image,
    counts,
    create_instance,
    engine,
    op,
    site_reports,
    start,
)
from tests.unit.network_support import Cloud, document, make_cloud, network, refused, subnet

EMPTY = {"servers": 0, "ports": 0, "networks": 0, "subnets": 0, "volumes": 0, "vnf_resources": 0}


@pytest.fixture
async def cloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # The engine runs only when woken or ticked by the test: no timing in the assertions.
    app = make_app(tmp_path, monkeypatch, lcm_poll_s=3600.0)
    async with app.test_app():
        yield await make_cloud(app)


async def uplink(cloud: Cloud) -> dict[str, Any]:
    net = await network(cloud.member, name="uplink")
    await subnet(cloud.member, net["id"], "192.0.2.0/24")
    return net


def body(net_id: str, site: str = "edge-a", **kw: Any) -> dict[str, Any]:
    return {
        "flavourId": "default",
        "extVirtualLinks": [{"id": "up", "resourceId": net_id, "extCps": [{"cpdId": "uplink"}]}],
        "additionalParams": {"site": site},
        **kw,
    }


def tick(cloud: Cloud, times: int = 1) -> None:
    for _ in range(times):
        engine(cloud.app).tick()


async def settle(cloud: Cloud, op_id: str, rounds: int = 6) -> dict[str, Any]:
    """The site reports what its document holds and the engine steps, a few rounds (the
    steps are counted, never timed): the occurrence after them."""
    for _ in range(rounds):
        site_reports(cloud.app)
        tick(cloud)
    return await op(cloud.member, op_id)


async def test_create_show_list_delete_shapes(cloud: Cloud) -> None:
    inst = await create_instance(cloud.member, vnfInstanceName="r1", vnfInstanceDescription="d")
    assert inst["vnfdId"] == VROUTER.id
    assert inst["vnfProvider"] == VROUTER.provider
    assert inst["vnfProductName"] == VROUTER.product_name
    assert inst["vnfSoftwareVersion"] == VROUTER.software_version
    assert inst["vnfdVersion"] == VROUTER.descriptor_version
    assert inst["instantiationState"] == "NOT_INSTANTIATED"
    assert inst["vnfInstanceName"] == "r1" and "instantiatedVnfInfo" not in inst
    assert inst["_links"]["self"]["href"] == f"{LCM}/vnf_instances/{inst['id']}"
    listed = await ok(await cloud.member.get(f"{LCM}/vnf_instances"))
    assert [i["id"] for i in listed] == [inst["id"]]
    assert await ok(await cloud.other.get(f"{LCM}/vnf_instances")) == []
    resp = await cloud.other.get(f"{LCM}/vnf_instances/{inst['id']}")
    assert resp.status_code == 404
    resp = await cloud.reader.post(f"{LCM}/vnf_instances", json={"vnfdId": VROUTER.id})
    assert resp.status_code == 403
    await refused(cloud.member, "POST", f"{LCM}/vnf_instances", 409, "vnfdId",
                  json={"vnfdId": "no-such-vnfd"})  # fmt: skip
    await refused(cloud.member, "POST", f"{LCM}/vnf_instances", 400, "vnfdId",
                  json={"vnfdIdx": "x"})  # fmt: skip
    resp = await cloud.member.delete(f"{LCM}/vnf_instances/{inst['id']}")
    assert resp.status_code == 204
    assert await ok(await cloud.member.get(f"{LCM}/vnf_instances")) == []
    audit = await ok(await cloud.admin.get("/v1/audit"))
    actions = [e["action"] for e in audit["events"]]
    assert "POST /vnflcm/v1/vnf_instances" in actions
    assert "DELETE /vnflcm/v1/vnf_instances/{instance_id}" in actions


async def test_no_token_is_401(cloud: Cloud) -> None:
    resp = await cloud.app.test_client().get(f"{LCM}/vnf_instances")
    assert resp.status_code == 401


async def test_instantiate_then_terminate(cloud: Cloud) -> None:
    await add_image(cloud.member)
    net = await uplink(cloud)
    inst = await create_instance(cloud.member, vnfInstanceName="r1")
    path = f"{LCM}/vnf_instances/{inst['id']}"
    occ = await start(cloud.member, f"{path}/instantiate", body(net["id"]))
    assert occ["operation"] == "INSTANTIATE" and occ["vnfInstanceId"] == inst["id"]
    assert occ["operationState"] in ("STARTING", "PROCESSING")
    assert occ["isAutomaticInvocation"] is False and occ["isCancelPending"] is False
    assert occ["operationParams"]["flavourId"] == "default"
    # One at a time.
    await refused(cloud.member, "POST", f"{path}/terminate", 409, "instantiationState",
                  json={"terminationType": "FORCEFUL"})  # fmt: skip
    await refused(
        cloud.member, "POST", f"{path}/instantiate", 409, "operation", json=body(net["id"])
    )
    tick(cloud, 2)
    occ = await op(cloud.member, occ["id"])
    assert occ["operationState"] == "PROCESSING"
    changes = occ["resourceChanges"]
    assert sorted(c["vduId"] for c in changes["affectedVnfcs"]) == ["core", "edge"]
    assert {c["changeType"] for c in changes["affectedVnfcs"]} == {"ADDED"}
    assert sorted(v["vnfVirtualLinkDescId"] for v in changes["affectedVirtualLinks"]) == [
        "transit_a", "transit_b"]  # fmt: skip
    _, doc = document(cloud.app)
    servers = {s["name"]: s for s in doc["servers"]}
    assert sorted(servers) == ["r1-core-0", "r1-edge-0"]
    edge = servers["r1-edge-0"]
    assert edge["metadata"] == {"vnf_instance": inst["id"], "vdu": "edge"}
    assert len(edge["ports"]) == 3 and len(servers["r1-core-0"]["ports"]) == 2
    ports = {p["id"]: p for p in doc["ports"]}
    # The external CP is on the caller's network (NIC order: see docs/vnf-lifecycle.md).
    assert net["id"] in {ports[p]["network_id"] for p in edge["ports"]}
    assert len(doc["networks"]) == 3  # two VLs and the uplink
    site_reports(cloud.app, state="running")
    tick(cloud)
    occ = await op(cloud.member, occ["id"])
    assert occ["operationState"] == "COMPLETED", occ
    inst = await ok(await cloud.member.get(path))
    assert inst["instantiationState"] == "INSTANTIATED"
    info = inst["instantiatedVnfInfo"]
    assert info["flavourId"] == "default" and info["vnfState"] == "STARTED"
    assert sorted(v["vduId"] for v in info["vnfcResourceInfo"]) == ["core", "edge"]
    assert {v["status"] for v in info["vnfcResourceInfo"]} == {"ACTIVE"}
    assert {v["computeResource"]["site"] for v in info["vnfcResourceInfo"]} == {"edge-a"}
    assert [(c["cpdId"], c["networkId"]) for c in info["extCpInfo"]] == [("edge_ext", net["id"])]
    assert len(info["vnfVirtualLinkResourceInfo"]) == 2
    resp = await cloud.member.delete(path)
    assert resp.status_code == 409

    occ = await start(cloud.member, f"{path}/terminate", {"terminationType": "FORCEFUL"})
    tick(cloud, 2)
    _, doc = document(cloud.app)
    assert doc["servers"] == []  # asked to go
    occ = await settle(cloud, occ["id"])
    assert occ["operationState"] == "COMPLETED", occ
    assert {c["changeType"] for c in occ["resourceChanges"]["affectedVnfcs"]} == {"REMOVED"}
    inst = await ok(await cloud.member.get(path))
    assert inst["instantiationState"] == "NOT_INSTANTIATED"
    left = counts(cloud.app)
    assert left == {**EMPTY, "networks": 1, "subnets": 1}  # the uplink is the caller's
    listed = await ok(await cloud.member.get(f"{LCM}/vnf_lcm_op_occs"))
    assert [o["operation"] for o in listed] == ["INSTANTIATE", "TERMINATE"]
    assert await ok(await cloud.other.get(f"{LCM}/vnf_lcm_op_occs")) == []
    resp = await cloud.other.get(f"{LCM}/vnf_lcm_op_occs/{occ['id']}")
    assert resp.status_code == 404
    assert (await cloud.member.delete(path)).status_code == 204


async def test_missing_image_fails_temp_then_retry_rollback_fail(cloud: Cloud) -> None:
    net = await uplink(cloud)
    inst = await create_instance(cloud.member, vnfInstanceName="r2")
    path = f"{LCM}/vnf_instances/{inst['id']}"
    before = counts(cloud.app)
    occ = await start(cloud.member, f"{path}/instantiate", body(net["id"]))
    tick(cloud, 2)
    occ = await op(cloud.member, occ["id"])
    assert occ["operationState"] == "FAILED_TEMP"
    assert "needs image 'tiny-disk'" in occ["error"]["detail"], occ["error"]
    assert occ["error"]["status"] == 409
    assert set(occ["_links"]) >= {"retry", "rollback", "fail"}
    assert counts(cloud.app) == before  # nothing half-made
    # Another operation waits for this one to finish.
    resp = await cloud.member.post(f"{path}/instantiate", json=body(net["id"]))
    assert resp.status_code == 409
    # Retry once the image is there: it completes.
    await add_image(cloud.member)
    await start(cloud.member, f"{LCM}/vnf_lcm_op_occs/{occ['id']}/retry")
    tick(cloud, 2)
    assert (await op(cloud.member, occ["id"]))["operationState"] == "PROCESSING"
    # A server fails at the site: FAILED_TEMP with its reason.
    _, doc = document(cloud.app)
    failing = doc["servers"][0]["id"]
    site_reports(cloud.app, **{failing: "no VF left on physnet x"})
    tick(cloud)
    occ = await op(cloud.member, occ["id"])
    assert occ["operationState"] == "FAILED_TEMP"
    assert "is in ERROR: no VF left on physnet x" in occ["error"]["detail"]
    # Retried: the failed attempt's resources go, new ones are made; a VL the site
    # cannot make fails it too.
    await start(cloud.member, f"{LCM}/vnf_lcm_op_occs/{occ['id']}/retry")
    assert (await op(cloud.member, occ["id"]))["error"] is None
    occ = await settle(cloud, occ["id"])
    assert occ["operationState"] == "COMPLETED"  # everything reported running
    store = store_of(cloud.app)
    assert len(store.query("SELECT id FROM servers")) == 2  # the first attempt's went
    occ = await start(cloud.member, f"{path}/terminate", {"terminationType": "FORCEFUL"})
    assert (await settle(cloud, occ["id"]))["operationState"] == "COMPLETED"
    occ = await start(cloud.member, f"{path}/instantiate", body(net["id"]))
    tick(cloud, 2)
    generation, doc = document(cloud.app)
    vl = (
        doc["networks"][0]["id"]
        if doc["networks"][0]["id"] != net["id"]
        else doc["networks"][1]["id"]
    )
    report = {"networks": {vl: {"state": "error", "reason": "no tunnel"}}}
    orchestrator.apply_status(store, "edge-a", generation, report)
    tick(cloud)
    occ = await op(cloud.member, occ["id"])
    assert occ["operationState"] == "FAILED_TEMP"
    assert f"network {vl}" in occ["error"]["detail"] and "no tunnel" in occ["error"]["detail"]
    await start(cloud.member, f"{LCM}/vnf_lcm_op_occs/{occ['id']}/rollback")
    assert (await op(cloud.member, occ["id"]))["operationState"] == "ROLLING_BACK"
    for action in ("retry", "rollback", "fail"):
        await refused(cloud.member, "POST", f"{LCM}/vnf_lcm_op_occs/{occ['id']}/{action}", 409,
                      "operationState")  # fmt: skip
    occ = await settle(cloud, occ["id"])
    assert occ["operationState"] == "ROLLED_BACK", occ
    assert counts(cloud.app) == before
    # A later instantiate that fails and is given up: FAILED; terminate cleans up.
    store = store_of(cloud.app)
    store.conn.execute("UPDATE images SET status = 'queued'")
    store.conn.commit()
    occ = await start(cloud.member, f"{path}/instantiate", body(net["id"]))
    tick(cloud, 2)
    assert (await op(cloud.member, occ["id"]))["operationState"] == "FAILED_TEMP"
    await start(cloud.member, f"{LCM}/vnf_lcm_op_occs/{occ['id']}/fail")
    assert (await op(cloud.member, occ["id"]))["operationState"] == "FAILED"
    await refused(cloud.member, "POST", f"{LCM}/vnf_lcm_op_occs/{occ['id']}/retry", 409,
                  "operationState")  # fmt: skip
    assert (await cloud.member.delete(path)).status_code == 204


async def test_instantiate_requests_are_checked(cloud: Cloud) -> None:
    net = await uplink(cloud)
    inst = await create_instance(cloud.member)
    path = f"{LCM}/vnf_instances/{inst['id']}/instantiate"
    await refused(cloud.member, "POST", path, 400, "flavourId",
                  json={**body(net["id"]), "flavourId": "gold"})  # fmt: skip
    await refused(cloud.member, "POST", path, 400, "extVirtualLinks",
                  json={**body(net["id"]), "extVirtualLinks": []})  # fmt: skip
    await refused(cloud.member, "POST", path, 400, "additionalParams",
                  json={"flavourId": "default"})  # fmt: skip
    resp = await cloud.member.post(path, json=body(net["id"], site="edge-zz"))
    assert resp.status_code == 404
    await refused(cloud.member, "POST", path, 409, "extVirtualLinks[0].resourceId",
                  json=body(net["id"], site="edge-b"))  # fmt: skip
    other = await network(cloud.other, name="theirs")
    resp = await cloud.member.post(path, json=body(other["id"]))
    assert resp.status_code == 404
    resp = await cloud.other.post(path, json=body(other["id"]))
    assert resp.status_code == 404  # another project's instance
    term = f"{LCM}/vnf_instances/{inst['id']}/terminate"
    await refused(cloud.member, "POST", term, 409, "instantiationState",
                  json={"terminationType": "FORCEFUL"})  # fmt: skip
    await refused(cloud.member, "POST", term, 400, "terminationType",
                  json={"terminationType": "SOFT"})  # fmt: skip


async def test_engine_resumes_from_the_store(cloud: Cloud, tmp_path: Path, monkeypatch) -> None:
    """A new engine (central restarted) takes the PROCESSING operation further."""
    from central.lcm.engine import LcmEngine

    await add_image(cloud.member)
    net = await uplink(cloud)
    inst = await create_instance(cloud.member)
    occ = await start(cloud.member, f"{LCM}/vnf_instances/{inst['id']}/instantiate",
                      body(net["id"]))  # fmt: skip
    tick(cloud, 2)
    site_reports(cloud.app)
    fresh = LcmEngine(cloud.app.extensions["skerry"])
    fresh.tick()
    assert (await op(cloud.member, occ["id"]))["operationState"] == "COMPLETED"


async def test_vfirewall_large_says_what_anti_affinity_it_cannot_honour(cloud: Cloud) -> None:
    await add_image(cloud.member)
    outside = await uplink(cloud)
    vnfd = load_vnfd(TEMPLATES / "vfirewall")
    inst = await create_instance(cloud.member, vnfd.id, vnfInstanceName="fw")
    link = {"id": "o", "resourceId": outside["id"], "extCps": [{"cpdId": "outside"}]}
    req = {"flavourId": "default", "instantiationLevelId": "large", "extVirtualLinks": [link],
           "additionalParams": {"site": "edge-a"}}  # fmt: skip
    occ = await start(cloud.member, f"{LCM}/vnf_instances/{inst['id']}/instantiate", req)
    occ = await settle(cloud, occ["id"])
    assert occ["operationState"] == "COMPLETED", occ
    assert len(occ["warnings"]) == 1 and "filters_apart" in occ["warnings"][0]
    info = (await ok(await cloud.member.get(f"{LCM}/vnf_instances/{inst['id']}")))[
        "instantiatedVnfInfo"
    ]
    assert sorted(v["vduId"] for v in info["vnfcResourceInfo"]) == ["filter"] * 3 + ["manager"]
    assert info["instantiationLevelId"] == "large"


async def test_dns_cache_volume_attached_then_removed(cloud: Cloud) -> None:
    await add_image(cloud.member)
    clients = await uplink(cloud)
    before = counts(cloud.app)
    vnfd = load_vnfd(TEMPLATES / "dns-cache")
    inst = await create_instance(cloud.member, vnfd.id)
    link = {"id": "c", "resourceId": clients["id"], "extCps": [{"cpdId": "clients"}]}
    req = {
        "flavourId": "default",
        "extVirtualLinks": [link],
        "additionalParams": {"site": "edge-a"},
    }
    occ = await start(cloud.member, f"{LCM}/vnf_instances/{inst['id']}/instantiate", req)
    occ = await settle(cloud, occ["id"])
    assert occ["operationState"] == "COMPLETED", occ
    (storage,) = occ["resourceChanges"]["affectedVirtualStorages"]
    assert storage["virtualStorageDescId"] == "cache_volume"
    volume = await ok(await cloud.member.get(f"/v1/volumes/{storage['id']}"))
    (vnfc,) = occ["resourceChanges"]["affectedVnfcs"]
    assert volume["server_id"] == vnfc["id"] and volume["boot"] is False
    assert volume["size_gb"] == 1
    # GRACEFUL: the server is asked to stop first; deleted once SHUTOFF.
    path = f"{LCM}/vnf_instances/{inst['id']}/terminate"
    occ = await start(cloud.member, path, {"terminationType": "GRACEFUL",
                                           "gracefulTerminationTimeout": 600})  # fmt: skip
    tick(cloud, 3)
    server = await ok(await cloud.member.get(f"/v1/servers/{vnfc['id']}"))
    assert server["power"] == "stopped" and server["status"] == "ACTIVE"
    assert (await op(cloud.member, occ["id"]))["operationState"] == "PROCESSING"
    site_reports(cloud.app, state="shutoff")
    tick(cloud, 2)  # on to deleting, then delete
    assert (await ok(await cloud.member.get(f"/v1/servers/{vnfc['id']}")))["status"] == "DELETING"
    occ = await settle(cloud, occ["id"])
    assert occ["operationState"] == "COMPLETED", occ
    assert counts(cloud.app) == before


async def test_upf_direct_ports_on_a_site_without_vfs_fail_temp(cloud: Cloud) -> None:
    await add_image(cloud.member)
    net = await uplink(cloud)
    before = counts(cloud.app)
    vnfd = load_vnfd(TEMPLATES / "upf")
    inst = await create_instance(cloud.member, vnfd.id)
    links = [{"id": n, "resourceId": net["id"], "extCps": [{"cpdId": n}]} for n in ("n3", "n6")]
    req = {"flavourId": "default", "extVirtualLinks": links, "additionalParams": {"site": "edge-a"}}
    occ = await start(cloud.member, f"{LCM}/vnf_instances/{inst['id']}/instantiate", req)
    tick(cloud, 2)
    occ = await op(cloud.member, occ["id"])
    assert occ["operationState"] == "FAILED_TEMP"
    assert "vnic_type 'direct' needs a network with a physnet" in occ["error"]["detail"]
    assert counts(cloud.app) == before
    await start(cloud.member, f"{LCM}/vnf_lcm_op_occs/{occ['id']}/rollback")
    assert (await settle(cloud, occ["id"]))["operationState"] == "ROLLED_BACK"


async def test_timeout_fails_temp_saying_what_it_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(tmp_path, monkeypatch, lcm_poll_s=3600.0, lcm_timeout_s=1e-6)
    async with app.test_app():
        cloud = await make_cloud(app)
        await add_image(cloud.member)
        net = await uplink(cloud)
        inst = await create_instance(cloud.member)
        occ = await start(cloud.member, f"{LCM}/vnf_instances/{inst['id']}/instantiate",
                          body(net["id"]))  # fmt: skip
        tick(cloud, 3)  # create, then the (already passed) deadline
        occ = await op(cloud.member, occ["id"])
        assert occ["operationState"] == "FAILED_TEMP"
        assert occ["error"]["status"] == 504
        assert "waiting for servers ACTIVE" in occ["error"]["detail"]
        assert "BUILD" in occ["error"]["detail"]


async def server_names(cloud: Cloud, info: dict[str, Any]) -> list[str]:
    names = []
    for vnfc in info["vnfcResourceInfo"]:
        names.append((await ok(await cloud.member.get(f"/v1/servers/{vnfc['id']}")))["name"])
    return sorted(names)


async def test_vfirewall_scales_out_and_in(cloud: Cloud) -> None:
    await add_image(cloud.member)
    outside = await uplink(cloud)
    vnfd = load_vnfd(TEMPLATES / "vfirewall")
    inst = await create_instance(cloud.member, vnfd.id, vnfInstanceName="fw")
    path = f"{LCM}/vnf_instances/{inst['id']}"
    link = {"id": "o", "resourceId": outside["id"], "extCps": [{"cpdId": "outside"}]}
    req = {"flavourId": "default", "extVirtualLinks": [link],
           "additionalParams": {"site": "edge-a"}}  # fmt: skip
    await refused(cloud.member, "POST", f"{path}/scale", 409, "instantiationState",
                  json={"type": "SCALE_OUT", "aspectId": "filter_instances"})  # fmt: skip
    occ = await start(cloud.member, f"{path}/instantiate", req)
    assert (await settle(cloud, occ["id"]))["operationState"] == "COMPLETED"
    shown = await ok(await cloud.member.get(path))
    assert shown["instantiatedVnfInfo"]["scaleStatus"] == [
        {"aspectId": "filter_instances", "scaleLevel": 0}
    ]
    before = counts(cloud.app)
    await refused(cloud.member, "POST", f"{path}/scale", 400, "numberOfSteps",
                  json={"type": "SCALE_IN", "aspectId": "filter_instances"})  # fmt: skip
    await refused(cloud.member, "POST", f"{path}/scale", 400, "aspectId",
                  json={"type": "SCALE_OUT", "aspectId": "cpu"})  # fmt: skip
    occ = await start(
        cloud.member,
        f"{path}/scale",
        {"type": "SCALE_OUT", "aspectId": "filter_instances", "numberOfSteps": 2},
    )
    occ = await settle(cloud, occ["id"])
    assert occ["operation"] == "SCALE" and occ["operationState"] == "COMPLETED", occ
    added = occ["resourceChanges"]["affectedVnfcs"]
    assert [c["vduId"] for c in added] == ["filter", "filter"]
    assert counts(cloud.app)["servers"] == before["servers"] + 2
    assert counts(cloud.app)["ports"] == before["ports"] + 4  # inside + outside each
    assert len(occ["warnings"]) == 1  # three filters on one host
    shown = await ok(await cloud.member.get(path))
    info = shown["instantiatedVnfInfo"]
    assert info["scaleStatus"] == [{"aspectId": "filter_instances", "scaleLevel": 2}]
    names = await server_names(cloud, info)
    assert names == ["fw-filter-0", "fw-filter-1", "fw-filter-2", "fw-manager-0"]

    occ = await start(cloud.member, f"{path}/scale",
                      {"type": "SCALE_IN", "aspectId": "filter_instances"})  # fmt: skip
    occ = await settle(cloud, occ["id"])
    assert occ["operationState"] == "COMPLETED", occ
    (gone,) = occ["resourceChanges"]["affectedVnfcs"]
    assert gone["changeType"] == "REMOVED" and gone["vduId"] == "filter"
    assert counts(cloud.app)["servers"] == before["servers"] + 1
    assert counts(cloud.app)["ports"] == before["ports"] + 2
    info = (await ok(await cloud.member.get(path)))["instantiatedVnfInfo"]
    assert info["scaleStatus"] == [{"aspectId": "filter_instances", "scaleLevel": 1}]
    names = await server_names(cloud, info)
    assert names == ["fw-filter-0", "fw-filter-1", "fw-manager-0"]

    # A scale-out whose server fails is rolled back.
    occ = await start(cloud.member, f"{path}/scale",
                      {"type": "SCALE_OUT", "aspectId": "filter_instances"})  # fmt: skip
    tick(cloud, 2)
    new = (await op(cloud.member, occ["id"]))["resourceChanges"]["affectedVnfcs"][0]["id"]
    site_reports(cloud.app, **{new: "boom"})
    tick(cloud)
    assert (await op(cloud.member, occ["id"]))["operationState"] == "FAILED_TEMP"
    await start(cloud.member, f"{LCM}/vnf_lcm_op_occs/{occ['id']}/rollback")
    assert (await settle(cloud, occ["id"]))["operationState"] == "ROLLED_BACK"
    assert counts(cloud.app)["servers"] == before["servers"] + 1
    info = (await ok(await cloud.member.get(path)))["instantiatedVnfInfo"]
    assert info["scaleStatus"] == [{"aspectId": "filter_instances", "scaleLevel": 1}]

    occ = await start(cloud.member, f"{path}/terminate", {"terminationType": "FORCEFUL"})
    assert (await settle(cloud, occ["id"]))["operationState"] == "COMPLETED"
    assert counts(cloud.app) == {**EMPTY, "networks": 1, "subnets": 1}


async def test_heal_recreate_keeps_ports_and_volume_and_restart_cycles_power(cloud: Cloud) -> None:
    await add_image(cloud.member)
    clients = await uplink(cloud)
    vnfd = load_vnfd(TEMPLATES / "dns-cache")
    inst = await create_instance(cloud.member, vnfd.id, vnfInstanceName="dns")
    path = f"{LCM}/vnf_instances/{inst['id']}"
    link = {"id": "c", "resourceId": clients["id"], "extCps": [{"cpdId": "clients"}]}
    req = {
        "flavourId": "default",
        "extVirtualLinks": [link],
        "additionalParams": {"site": "edge-a"},
    }
    occ = await start(cloud.member, f"{path}/instantiate", req)
    occ = await settle(cloud, occ["id"])
    (vnfc,) = occ["resourceChanges"]["affectedVnfcs"]
    (storage,) = occ["resourceChanges"]["affectedVirtualStorages"]
    old = await ok(await cloud.member.get(f"/v1/servers/{vnfc['id']}"))
    ports = [p["id"] for p in (await ok(await cloud.member.get("/v1/ports")))["ports"]
             if p["server_id"] == old["id"]]  # fmt: skip
    before = counts(cloud.app)
    await refused(cloud.member, "POST", f"{path}/heal", 400, "vnfcInstanceId[0]",
                  json={"vnfcInstanceId": [clients["id"]]})  # fmt: skip

    occ = await start(cloud.member, f"{path}/heal", {"vnfcInstanceId": [old["id"]]})
    occ = await settle(cloud, occ["id"])
    assert occ["operation"] == "HEAL" and occ["operationState"] == "COMPLETED", occ
    removed, added = occ["resourceChanges"]["affectedVnfcs"]
    assert (removed["id"], removed["changeType"]) == (old["id"], "REMOVED")
    assert added["changeType"] == "ADDED" and added["vduId"] == "dns"
    new = await ok(await cloud.member.get(f"/v1/servers/{added['id']}"))
    assert new["name"] == old["name"] and new["metadata"] == old["metadata"]
    assert new["image"] == old["image"] and new["flavor"] == old["flavor"]
    volume = await ok(await cloud.member.get(f"/v1/volumes/{storage['id']}"))
    assert volume["server_id"] == new["id"]
    now_ports = [p["id"] for p in (await ok(await cloud.member.get("/v1/ports")))["ports"]
                 if p["server_id"] == new["id"]]  # fmt: skip
    assert now_ports == ports
    assert counts(cloud.app) == before
    info = (await ok(await cloud.member.get(path)))["instantiatedVnfInfo"]
    assert [v["id"] for v in info["vnfcResourceInfo"]] == [new["id"]]

    occ = await start(
        cloud.member,
        f"{path}/heal",
        {"vnfcInstanceId": [new["id"]], "additionalParams": {"healType": "RESTART"}},
    )
    tick(cloud, 2)
    assert (await ok(await cloud.member.get(f"/v1/servers/{new['id']}")))["power"] == "stopped"
    site_reports(cloud.app, state="shutoff")
    tick(cloud)
    assert (await ok(await cloud.member.get(f"/v1/servers/{new['id']}")))["power"] == "running"
    assert (await op(cloud.member, occ["id"]))["operationState"] == "PROCESSING"
    occ = await settle(cloud, occ["id"])
    assert occ["operationState"] == "COMPLETED"
    assert counts(cloud.app) == before


async def test_an_external_network_in_error_fails_the_operation(cloud: Cloud) -> None:
    await add_image(cloud.member)
    net = await uplink(cloud)
    inst = await create_instance(cloud.member)
    occ = await start(cloud.member, f"{LCM}/vnf_instances/{inst['id']}/instantiate",
                      body(net["id"]))  # fmt: skip
    tick(cloud, 2)
    generation, _doc = document(cloud.app)
    report = {"networks": {net["id"]: {"state": "error", "reason": "no tunnel_local_ip"}}}
    orchestrator.apply_status(store_of(cloud.app), "edge-a", generation, report)
    tick(cloud)
    occ = await op(cloud.member, occ["id"])
    assert occ["operationState"] == "FAILED_TEMP"
    assert f"network {net['id']} (uplink) is in ERROR: no tunnel_local_ip" in occ["error"]["detail"]


async def test_an_onboarded_package_is_used_and_its_usage_state_follows(cloud: Cloud) -> None:
    from tests.unit.test_vnf_packages import ROOT, onboarded, template_files, zip_of

    pkg = await onboarded(cloud.member, zip_of(template_files("vrouter")))
    pkg = await ok(await cloud.member.get(f"{ROOT}/{pkg['id']}"))
    assert pkg["onboardingState"] == "ONBOARDED", pkg
    url = f"{ROOT}/{pkg['id']}"
    await ok(await cloud.member.patch(url, json={"operationalState": "DISABLED"}))
    await refused(cloud.member, "POST", f"{LCM}/vnf_instances", 409, "vnfdId",
                  json={"vnfdId": VROUTER.id})  # fmt: skip
    await ok(await cloud.member.patch(url, json={"operationalState": "ENABLED"}))
    await add_image(cloud.member)
    net = await uplink(cloud)
    inst = await create_instance(cloud.member)
    assert store_of(cloud.app).one(
        "SELECT package_id FROM vnf_instances WHERE id = ?", (inst["id"],)
    ) == {"package_id": pkg["id"]}
    path = f"{LCM}/vnf_instances/{inst['id']}"
    occ = await start(cloud.member, f"{path}/instantiate", body(net["id"]))
    assert (await settle(cloud, occ["id"]))["operationState"] == "COMPLETED"
    assert (await ok(await cloud.member.get(url)))["usageState"] == "IN_USE"
    occ = await start(cloud.member, f"{path}/terminate", {"terminationType": "FORCEFUL"})
    assert (await settle(cloud, occ["id"]))["operationState"] == "COMPLETED"
    assert (await ok(await cloud.member.get(url)))["usageState"] == "NOT_IN_USE"
