"""The audit trail, the failed log-in limit, and bootstrap at central."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from quart import Quart

from central.main import main as central_main
from central.store import Store
from tests.unit.identity_support import (
    ADMIN_PASSWORD,
    PASSWORD,
    TokenClient,
    central_config,
    client_with,
    login,
    make_app,
    make_project,
    make_user,
    ok,
    store_of,
)


def bad_login(user: str = "alice") -> dict:
    return {"password": {"user": user, "password": "not-the-password", "project": "p1"}}


async def test_sixth_failed_login_is_429_and_audited(app: Quart, admin: TokenClient) -> None:
    project = await make_project(admin, "p1")
    await make_user(admin, "alice", project["id"])
    anon = app.test_client()
    for _ in range(5):
        resp = await anon.post("/v1/auth/tokens", json=bad_login())
        assert resp.status_code == 401
    resp = await anon.post("/v1/auth/tokens", json=bad_login())
    assert resp.status_code == 429
    assert int(resp.headers["Retry-After"]) >= 1
    assert (await resp.get_json())["error"]["code"] == "too_many_requests"
    # Even the right password waits out the window; other names are not affected.
    good = {"password": {"user": "alice", "password": PASSWORD, "project": "p1"}}
    assert (await anon.post("/v1/auth/tokens", json=good)).status_code == 429
    await login(app, "admin", ADMIN_PASSWORD, "admin")

    events = await ok(await admin.get("/v1/audit?user=alice&action=POST%20/v1/auth/tokens"))
    results = [e["result"] for e in events["events"]]
    assert results.count("401") == 5 and results.count("429") == 2
    assert all(e["request_id"] and e["source"] for e in events["events"])


async def test_limit_window_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(tmp_path, monkeypatch, login_max_failures=2, login_window_s=0.5)
    async with app.test_app():
        anon = app.test_client()
        body = bad_login("admin")
        for expected in (401, 401, 429):
            assert (await anon.post("/v1/auth/tokens", json=body)).status_code == expected
        time.sleep(0.6)
        await login(app, "admin", ADMIN_PASSWORD, "admin")


async def test_audit_records_mutations_and_refusals(app: Quart, admin: TokenClient) -> None:
    await ok(
        await admin.post("/v1/sites", json={"name": "edge-a"}, headers={"X-Request-Id": "r-1"}), 201
    )
    await app.test_client().get("/v1/servers", headers={"X-Auth-Token": "garbage"})
    await admin.get("/v1/sites")  # reads are not audited

    events = (await ok(await admin.get("/v1/audit")))["events"]
    site = next(e for e in events if e["action"] == "POST /v1/sites")
    assert site["user"] == "admin" and site["result"] == "201" and site["request_id"] == "r-1"
    assert site["project"] == store_of(app).one("SELECT id FROM projects")["id"]
    refused = next(e for e in events if e["action"] == "GET /v1/servers")
    assert refused["result"] == "401" and refused["user"] == ""
    assert not any(e["action"] == "GET /v1/sites" for e in events)

    since = (await ok(await admin.get(f"/v1/audit?since={time.time() + 60}")))["events"]
    assert since == []
    assert len((await ok(await admin.get("/v1/audit?limit=1")))["events"]) == 1
    assert (await admin.get("/v1/audit?limit=0")).status_code == 400

    # The same events, as JSON lines in the audit file.
    config = app.extensions["skerry"].config
    lines = [json.loads(x) for x in config.audit_path.read_text().splitlines()]
    assert any(x["action"] == "POST /v1/sites" and x["request_id"] == "r-1" for x in lines)


async def test_no_secret_in_audit_or_logs(
    app: Quart, admin: TokenClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    project = await make_project(admin, "p1")
    user = await make_user(admin, "alice", project["id"])
    issued = await login(app, "alice", PASSWORD, "p1")
    alice = client_with(app, issued["token"])
    base = f"/v1/users/{user['id']}/application_credentials"
    cred = await ok(await alice.post(base, json={"name": "ci"}), 201)
    body = {"application_credential": {"id": cred["id"], "secret": cred["secret"]}}
    robot = await ok(await app.test_client().post("/v1/auth/tokens", json=body), 201)
    await app.test_client().post("/v1/auth/tokens", json=bad_login())
    await alice.delete(f"/v1/auth/tokens/{issued['token_id']}")

    config = app.extensions["skerry"].config
    texts = {
        "audit file": config.audit_path.read_text(),
        "audit table": json.dumps(store_of(app).query("SELECT * FROM audit")),
        "logs": caplog.text,
    }
    secrets = [ADMIN_PASSWORD, PASSWORD, "not-the-password", issued["token"], robot["token"]]
    secrets += [cred["secret"], admin.token or "-"]
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret is in the {where}"
    assert "POST /v1/users/{user_id}/application_credentials" in texts["audit file"]


async def test_audit_is_for_cloud_admins(app: Quart, admin: TokenClient) -> None:
    project = await make_project(admin, "p1")
    await make_user(admin, "alice", project["id"], "admin")  # project admin, not cloud admin
    alice = client_with(app, (await login(app, "alice", PASSWORD, "p1"))["token"])
    assert (await alice.get("/v1/audit")).status_code == 403


async def test_no_bootstrap_means_no_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from central.app import create_app

    monkeypatch.delenv("SKERRY_BOOTSTRAP_ADMIN_PASSWORD", raising=False)
    caplog.set_level(logging.WARNING)
    app = create_app(central_config(tmp_path))
    async with app.test_app():
        assert "skerry-central --config FILE bootstrap" in caplog.text
        body = {"password": {"user": "admin", "password": "admin", "project": "admin"}}
        resp = await app.test_client().post("/v1/auth/tokens", json=body)
        assert resp.status_code == 401
        assert store_of(app).query("SELECT * FROM users") == []
        # A signing key exists from the start, and sites can be verified against it.
        assert store_of(app).one("SELECT count(*) AS n FROM signing_keys")["n"] == 1


async def test_bootstrap_env_with_user_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKERRY_BOOTSTRAP_ADMIN_USER", "root")
    app = make_app(tmp_path, monkeypatch)
    async with app.test_app():
        issued = await login(app, "root", ADMIN_PASSWORD, "admin")
        me = await ok(await client_with(app, issued["token"]).get("/v1/auth/token"))
        assert me["is_cloud_admin"] is True
    # A restart does not bootstrap again, nor change the password.
    monkeypatch.setenv("SKERRY_BOOTSTRAP_ADMIN_PASSWORD", "another-password")
    app = make_app(tmp_path, monkeypatch)
    async with app.test_app():
        assert store_of(app).one("SELECT count(*) AS n FROM users")["n"] == 1
        resp = await app.test_client().post(
            "/v1/auth/tokens",
            json={"password": {"user": "root", "password": "another-password", "project": "admin"}},
        )
        assert resp.status_code == 401


@pytest.fixture
def keep_root_logging():
    """skerry-central's main() installs its own root handler; put pytest's back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_bootstrap_command(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    keep_root_logging: None,
) -> None:
    conf = tmp_path / "central.yaml"
    conf.write_text(f"state_dir: {tmp_path / 'state'}\n")
    monkeypatch.setenv("SKERRY_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
    assert central_main(["--config", str(conf), "bootstrap"]) == 0
    assert central_main(["--config", str(conf), "bootstrap"]) == 1
    out = capsys.readouterr()
    assert "refused" in out.err and ADMIN_PASSWORD not in out.out + out.err
    store = Store(tmp_path / "state" / "central.db")
    try:
        assert [r["name"] for r in store.query("SELECT name FROM users")] == ["admin"]
        row = store.one("SELECT password_hash FROM users")
        assert row["password_hash"].startswith("scrypt$16384$8$1$")
        assert ADMIN_PASSWORD not in row["password_hash"]
    finally:
        store.close()


def test_bootstrap_command_reads_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_root_logging: None
) -> None:
    import io

    conf = tmp_path / "central.yaml"
    conf.write_text(f"state_dir: {tmp_path / 'state'}\n")
    monkeypatch.delenv("SKERRY_BOOTSTRAP_ADMIN_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO("from-stdin-password\n"))
    assert central_main(["--config", str(conf), "bootstrap"]) == 0


async def test_hub_security_events_are_audited(app: Quart, admin: TokenClient) -> None:
    hub = app.extensions["skerry"].hub
    hub.on_security_event("revoked_key", "edge-a", "key abcd1234: key no longer enrolled")
    events = (await ok(await admin.get("/v1/audit?action=HUB%20revoked_key")))["events"]
    assert len(events) == 1
    assert events[0]["target"].startswith("site=edge-a") and events[0]["source"] == "hub"


async def test_openapi_declares_the_token_schemes(app: Quart) -> None:
    spec = await ok(await app.test_client().get("/openapi.json"))
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer"
    assert schemes["x_auth_token"]["name"] == "X-Auth-Token"
    assert {"bearer": []} in spec["security"]
    assert spec["paths"]["/v1/auth/tokens"]["post"]["security"] == []


async def test_short_bootstrap_password_is_refused_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from central.app import create_app

    monkeypatch.setenv("SKERRY_BOOTSTRAP_ADMIN_PASSWORD", "short")
    app = create_app(central_config(tmp_path))
    async with app.test_app():
        assert "bootstrap from SKERRY_BOOTSTRAP_ADMIN_PASSWORD refused" in caplog.text
        assert "short" not in caplog.text.replace("bootstrap", "")
        assert store_of(app).query("SELECT * FROM users") == []
