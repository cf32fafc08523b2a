"""central's /v1 API through the real app, store and hub (ZeroMQ on loopback)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from quart import Quart

from central import orchestrator
from central.store import MIGRATIONS, Store, dumps, now
from tests.unit.identity_support import FLAVOR, admin_client
from tests.unit.network_api_support import inventory


@pytest.fixture
async def client(app: Quart):
    """Authenticated as the bootstrapped cloud admin."""
    return await admin_client(app)


def store(app: Quart) -> Store:
    return app.extensions["skerry"].store


def assert_error(body: Any, code: str | None = None) -> dict[str, Any]:
    """Every error leaves as {"error": {"code", "message", "details"}}, nothing else."""
    assert isinstance(body, dict)
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"code", "message", "details"}
    assert isinstance(err["code"], str) and err["code"]
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["details"], dict)
    if code is not None:
        assert err["code"] == code
    return err


def fields_named(err: dict[str, Any]) -> list[str]:
    return [f["field"] for f in err["details"].get("fields", [])]


EPA_DEFAULTS = {"cpu_policy": "shared", "mem_page_size": "small", "numa_nodes": 1}


async def make_site(client, name: str = "edge-a") -> dict[str, Any]:
    resp = await client.post("/v1/sites", json={"name": name})
    assert resp.status_code == 201
    return await resp.get_json()


async def make_server(client, site: str = "edge-a", **kw: Any) -> dict[str, Any]:
    body = {"name": "vm1", "site": site, "flavor": FLAVOR, "image": "tiny", **kw}
    resp = await client.post("/v1/servers", json=body)
    assert resp.status_code == 202, await resp.get_data()
    return await resp.get_json()


async def generation(client, site: str = "edge-a") -> int:
    resp = await client.get(f"/v1/sites/{site}")
    return (await resp.get_json())["desired_generation"]


# -- sites --------------------------------------------------------------------------


async def test_site_create_list_show(client) -> None:
    created = await make_site(client, "edge-a")
    assert created["name"] == "edge-a"
    assert created["state"] == "down"
    assert created["desired_generation"] == 1
    assert created["inventory"] == {} and created["health"] == {}
    await make_site(client, "edge-b")

    resp = await client.get("/v1/sites")
    assert resp.status_code == 200
    assert [s["name"] for s in (await resp.get_json())["sites"]] == ["edge-a", "edge-b"]

    resp = await client.get("/v1/sites/edge-b")
    assert resp.status_code == 200
    assert (await resp.get_json())["name"] == "edge-b"


async def test_site_unknown_404(client) -> None:
    resp = await client.get("/v1/sites/nope")
    assert resp.status_code == 404
    assert_error(await resp.get_json(), "not_found")


async def test_site_duplicate_409(client) -> None:
    await make_site(client)
    resp = await client.post("/v1/sites", json={"name": "edge-a"})
    assert resp.status_code == 409
    assert_error(await resp.get_json(), "conflict")
    resp = await client.get("/v1/sites")
    assert len((await resp.get_json())["sites"]) == 1


@pytest.mark.parametrize("name", ["Edge_A", "-edge", "", "a" * 64, 5])
async def test_site_bad_name_400(client, name: Any) -> None:
    resp = await client.post("/v1/sites", json={"name": name})
    assert resp.status_code == 400
    err = assert_error(await resp.get_json(), "invalid_request")
    assert fields_named(err) == ["name"]
    assert "name" in err["message"]


# -- servers ------------------------------------------------------------------------


async def test_server_create_202_build(client, app: Quart) -> None:
    await make_site(client)
    server = await make_server(client, power="stopped")
    assert server["status"] == "BUILD"
    assert server["power"] == "stopped"
    assert server["flavor"] == {**FLAVOR, **EPA_DEFAULTS}
    assert server["numa_placement"] == [] and server["metadata"] == {}
    assert server["site"] == "edge-a"
    assert server["project_id"] == store(app).one("SELECT id FROM projects")["id"]
    assert await generation(client) == 2

    resp = await client.get(f"/v1/servers/{server['id']}")
    assert resp.status_code == 200
    assert (await resp.get_json())["id"] == server["id"]
    resp = await client.get("/v1/servers")
    assert [s["id"] for s in (await resp.get_json())["servers"]] == [server["id"]]

    gen, doc = orchestrator.latest_document(store(app), "edge-a")
    assert gen == 2
    assert doc["generation"] == 2
    assert doc["servers"] == [
        {
            "id": server["id"],
            "name": "vm1",
            "project_id": server["project_id"],
            "vcpus": 1,
            "ram_mb": 128,
            "disk_gb": 1,
            "image": "tiny",
            "power": "stopped",
            **EPA_DEFAULTS,
            "numa_placement": [],
            "metadata": {},
            "ports": [],
        }
    ]


async def test_server_metadata_reaches_the_document(client, app: Quart) -> None:
    await make_site(client)
    server = await make_server(client, metadata={"ping": "10.0.0.1,10.0.0.2", "role": "upf"})
    assert server["metadata"] == {"ping": "10.0.0.1,10.0.0.2", "role": "upf"}
    _gen, doc = orchestrator.latest_document(store(app), "edge-a")
    assert doc["servers"][0]["metadata"] == {"ping": "10.0.0.1,10.0.0.2", "role": "upf"}


async def test_server_unknown_site_404(client, app: Quart) -> None:
    resp = await client.post(
        "/v1/servers", json={"name": "vm1", "site": "nope", "flavor": FLAVOR, "image": "tiny"}
    )
    assert resp.status_code == 404
    err = assert_error(await resp.get_json(), "not_found")
    assert err["details"] == {"kind": "site", "id": "nope"}
    assert store(app).query("SELECT * FROM servers") == []


VALID = {"name": "vm1", "site": "edge-a", "flavor": FLAVOR, "image": "tiny"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({k: v for k, v in VALID.items() if k != "flavor"}, "flavor"),
        ({**VALID, "flavor": {**FLAVOR, "vcpus": 0}}, "flavor.vcpus"),
        ({**VALID, "flavor": {**FLAVOR, "gpus": 1}}, "flavor.gpus"),
        ({**VALID, "flavor": {**FLAVOR, "cpu_policy": "isolated"}}, "flavor.cpu_policy"),
        ({**VALID, "flavor": {**FLAVOR, "mem_page_size": "4KB"}}, "flavor.mem_page_size"),
        ({**VALID, "flavor": {**FLAVOR, "numa_nodes": 0}}, "flavor.numa_nodes"),
        ({**VALID, "flavor": {**FLAVOR, "vcpus": 16, "numa_nodes": 9}}, "flavor.numa_nodes"),
        # Every NUMA cell needs a vCPU of its own.
        ({**VALID, "flavor": {**FLAVOR, "vcpus": 2, "numa_nodes": 3}}, "flavor.numa_nodes"),
        # Hugepages: whole pages in every cell.
        ({**VALID, "flavor": {**FLAVOR, "ram_mb": 129, "mem_page_size": "2MB"}}, "flavor.ram_mb"),
        (
            {**VALID, "flavor": {**FLAVOR, "ram_mb": 1536, "mem_page_size": "1GB"}},
            "flavor.ram_mb",
        ),
        (
            {
                **VALID,
                "flavor": {
                    **FLAVOR,
                    "vcpus": 2,
                    "ram_mb": 3072,
                    "mem_page_size": "1GB",
                    "numa_nodes": 2,
                },
            },
            "flavor.ram_mb",  # three pages, but 1.5 per cell
        ),
        ({**VALID, "colour": "red"}, "colour"),
        ({**VALID, "power": "paused"}, "power"),
        ({**VALID, "metadata": {"ping": "a b"}}, "metadata.ping"),
        ({**VALID, "metadata": {"ping": 'say"hi"'}}, "metadata.ping"),
        ({**VALID, "metadata": {"ping": 5}}, "metadata.ping"),
        ({**VALID, "metadata": {"bad key": "x"}}, "metadata.bad key.[key]"),
        ({**VALID, "metadata": {"hostname": "evil"}}, "metadata"),
        ({**VALID, "metadata": {f"k{i}": "v" * 200 for i in range(6)}}, "metadata"),
        ({**VALID, "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({**VALID, "image": "../etc"}, "image"),
        ([VALID], "(body)"),
    ],
)
async def test_server_invalid_body_400(client, app: Quart, body: Any, field: str) -> None:
    await make_site(client)
    store(app).db["sites"].update("edge-a", {"inventory": dumps(inventory())})
    resp = await client.post("/v1/servers", json=body)
    assert resp.status_code == 400
    err = assert_error(await resp.get_json(), "invalid_request")
    assert field in fields_named(err)
    assert store(app).query("SELECT * FROM servers") == []
    assert await generation(client) == 1


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", "application/x-www-form-urlencoded"]
)
async def test_server_non_json_body_400(client, content_type: str) -> None:
    await make_site(client)
    resp = await client.post(
        "/v1/servers", data=b"{not json", headers={"Content-Type": content_type}
    )
    assert resp.status_code == 400
    err = assert_error(await resp.get_json())
    assert fields_named(err) == ["(body)"]


async def test_start_stop_bump_generation_once_each(client, app: Quart) -> None:
    await make_site(client)
    server = await make_server(client)
    sid = server["id"]
    assert await generation(client) == 2

    resp = await client.post(f"/v1/servers/{sid}/stop")
    assert resp.status_code == 202
    assert (await resp.get_json())["power"] == "stopped"
    assert await generation(client) == 3
    resp = await client.post(f"/v1/servers/{sid}/stop")
    assert resp.status_code == 202
    assert (await resp.get_json())["power"] == "stopped"
    assert await generation(client) == 3
    gen, doc = orchestrator.latest_document(store(app), "edge-a")
    assert gen == 3
    assert doc["servers"][0]["power"] == "stopped"

    resp = await client.post(f"/v1/servers/{sid}/start")
    assert (await resp.get_json())["power"] == "running"
    assert await generation(client) == 4
    resp = await client.post(f"/v1/servers/{sid}/start")
    assert await generation(client) == 4
    assert orchestrator.latest_document(store(app), "edge-a")[1]["servers"][0]["power"] == (
        "running"
    )


async def test_delete_marks_deleting(client, app: Quart) -> None:
    await make_site(client)
    keep = await make_server(client, name="keep")
    gone = await make_server(client, name="gone")
    assert await generation(client) == 3
    resp = await client.delete(f"/v1/servers/{gone['id']}")
    assert resp.status_code == 202
    assert (await resp.get_json())["status"] == "DELETING"
    assert await generation(client) == 4
    # Deleting again changes nothing; power changes of a deleting server are ignored.
    resp = await client.delete(f"/v1/servers/{gone['id']}")
    assert (await resp.get_json())["status"] == "DELETING"
    await client.post(f"/v1/servers/{gone['id']}/stop")
    assert await generation(client) == 4
    resp = await client.get(f"/v1/servers/{gone['id']}")
    assert (await resp.get_json())["status"] == "DELETING"

    _gen, doc = orchestrator.latest_document(store(app), "edge-a")
    assert [s["id"] for s in doc["servers"]] == [keep["id"]]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/servers/nope"),
        ("POST", "/v1/servers/nope/start"),
        ("POST", "/v1/servers/nope/stop"),
        ("DELETE", "/v1/servers/nope"),
    ],
)
async def test_unknown_server_404(client, method: str, path: str) -> None:
    resp = await client.open(path, method=method)
    assert resp.status_code == 404
    err = assert_error(await resp.get_json(), "not_found")
    assert err["details"] == {"kind": "server", "id": "nope"}


async def test_other_http_errors_have_error_shape(client) -> None:
    resp = await client.get("/v1/nowhere")
    assert resp.status_code == 404
    assert_error(await resp.get_json())
    resp = await client.put("/v1/sites")
    assert resp.status_code == 405
    assert_error(await resp.get_json())


# -- settings -----------------------------------------------------------------------


async def test_settings_put_bumps_every_site(client, app: Quart) -> None:
    for name in ("edge-a", "edge-b", "edge-c"):
        await make_site(client, name)
    await make_server(client, "edge-b")
    before = {n: await generation(client, n) for n in ("edge-a", "edge-b", "edge-c")}
    assert before == {"edge-a": 1, "edge-b": 2, "edge-c": 1}

    resp = await client.put("/v1/settings", json={"reconcile_interval_s": 30})
    assert resp.status_code == 200
    want = {"reconcile_interval_s": 30.0, "stop_grace_s": 5.0, "require_signed_images": False}
    assert await resp.get_json() == want
    after = {n: await generation(client, n) for n in before}
    assert after == {n: g + 1 for n, g in before.items()}
    for name in before:
        gen, doc = orchestrator.latest_document(store(app), name)
        assert gen == after[name]
        assert doc["settings"]["reconcile_interval_s"] == 30.0

    resp = await client.get("/v1/settings")
    assert (await resp.get_json())["reconcile_interval_s"] == 30.0


async def test_settings_invalid_400(client) -> None:
    await make_site(client)
    resp = await client.put("/v1/settings", json={"reconcile_interval_s": 0})
    assert resp.status_code == 400
    err = assert_error(await resp.get_json(), "invalid_request")
    assert fields_named(err) == ["reconcile_interval_s"]
    assert await generation(client) == 1


# -- openapi and request ids ---------------------------------------------------------


async def test_openapi_lists_exactly_the_api_routes(client, app: Quart) -> None:
    from central.api.policy import API_ROOTS  # /v1 and the ETSI roots (/vnfpkgm/v1, ...)

    resp = await client.get("/openapi.json")
    assert resp.status_code == 200
    spec = await resp.get_json()
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    routes = {
        (re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule), method)
        for rule in app.url_map.iter_rules()
        if any(rule.rule == r or rule.rule.startswith(r + "/") for r in API_ROOTS)
        for method in rule.methods
        if method not in ("HEAD", "OPTIONS")
    }
    assert routes
    assert documented == routes


async def test_request_id_echoed(client) -> None:
    resp = await client.get("/v1/sites", headers={"X-Request-Id": "abc.DEF-123_x"})
    assert resp.headers["X-Request-Id"] == "abc.DEF-123_x"
    resp = await client.get("/v1/sites/nope", headers={"X-Request-Id": "req-404"})
    assert resp.status_code == 404
    assert resp.headers["X-Request-Id"] == "req-404"


async def test_request_id_generated(client) -> None:
    first = (await client.get("/v1/sites")).headers.get("X-Request-Id", "")
    second = (await client.get("/v1/sites")).headers.get("X-Request-Id", "")
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    assert re.fullmatch(r"[0-9a-f]{16}", second)
    assert first != second
    bad = (await client.get("/v1/sites", headers={"X-Request-Id": "no spaces!"})).headers
    assert re.fullmatch(r"[0-9a-f]{16}", bad["X-Request-Id"])


# -- orchestrator atomicity (the store directly) ------------------------------------


def server_row(server_id: str, site: str) -> dict[str, Any]:
    stamp = now()
    return {
        "id": server_id,
        "name": "vm",
        "site": site,
        **FLAVOR,
        "image": "tiny",
        "power": "running",
        "status": "BUILD",
        "created_at": stamp,
        "updated_at": stamp,
    }


def test_publish_failure_rolls_back_change(tmp_path: Path) -> None:
    st = Store(tmp_path / "central.db")
    with st.transaction():
        st.db["sites"].insert({"name": "edge-a", "created_at": now()})
        orchestrator.publish(st, "edge-a")
    with pytest.raises(LookupError, match="no-such-site"), st.transaction():
        st.db["servers"].insert(server_row("s1", "edge-a"))
        orchestrator.publish(st, "no-such-site")
    assert st.query("SELECT * FROM servers") == []
    assert st.one("SELECT desired_generation FROM sites")["desired_generation"] == 1
    assert [r["generation"] for r in st.query("SELECT generation FROM desired_docs")] == [1]
    st.close()
    # Nothing of it reached the disk either.
    again = Store(tmp_path / "central.db")
    assert again.query("SELECT * FROM servers") == []
    again.close()


def test_publish_rolled_back_with_enclosing_change(tmp_path: Path) -> None:
    st = Store(tmp_path / "central.db")
    with st.transaction():
        st.db["sites"].insert({"name": "edge-a", "created_at": now()})
    with pytest.raises(RuntimeError), st.transaction():
        st.db["servers"].insert(server_row("s1", "edge-a"))
        assert orchestrator.publish(st, "edge-a")[0] == 1
        raise RuntimeError("the change failed after publishing")
    assert st.query("SELECT * FROM servers") == []
    assert orchestrator.latest_document(st, "edge-a") is None
    assert st.one("SELECT desired_generation FROM sites")["desired_generation"] == 0
    st.close()


def test_publish_prunes_old_generations(tmp_path: Path) -> None:
    st = Store(tmp_path / "central.db")
    with st.transaction():
        st.db["sites"].insert({"name": "edge-a", "created_at": now()})
    for _ in range(6):
        orchestrator.publish(st, "edge-a", keep=3)
    gens = [r["generation"] for r in st.query("SELECT generation FROM desired_docs")]
    assert sorted(gens) == [4, 5, 6]
    assert orchestrator.publish(st, "edge-a", keep=3, floor=100)[0] == 101
    st.close()


def test_migration_v4_keeps_servers_with_default_epa(tmp_path: Path) -> None:
    import sqlite3

    import sqlite_utils

    path = tmp_path / "central.db"
    conn = sqlite3.connect(str(path))
    db = sqlite_utils.Database(conn)
    for step in MIGRATIONS[:3]:
        step(db)
    conn.execute("PRAGMA user_version=3")
    db["sites"].insert({"name": "edge-a", "created_at": now()})
    db["servers"].insert(server_row("s1", "edge-a"))
    conn.commit()
    conn.close()
    st = Store(path)
    assert st.schema_version == len(MIGRATIONS) >= 4
    row = st.one("SELECT * FROM servers")
    assert (row["cpu_policy"], row["mem_page_size"], row["numa_nodes"]) == ("shared", "small", 1)
    assert row["numa_placement"] == "[]"
    with st.transaction():
        orchestrator.publish(st, "edge-a")
    server = orchestrator.latest_document(st, "edge-a")[1]["servers"][0]
    assert server["numa_placement"] == [] and server["cpu_policy"] == "shared"
    assert server["metadata"] == {}
    st.close()
