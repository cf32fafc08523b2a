"""Helpers for unit tests that talk to central's API with tokens."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from quart import Quart
from quart.testing import QuartClient
from werkzeug.datastructures import Headers

from central.app import create_app
from central.config import CentralConfig
from central.store import Store

ADMIN_USER = "admin"
ADMIN_PASSWORD = "unit-test-admin-password"
PASSWORD = "a-long-test-password"
FLAVOR = {"vcpus": 1, "ram_mb": 128, "disk_gb": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def central_config(tmp_path: Path, **overrides: Any) -> CentralConfig:
    """central's config with every ZeroMQ socket on a free port (hub, image feed,
    replication): test apps, and test runs side by side, never fight over the defaults."""
    ports = {
        key: f"tcp://127.0.0.1:{free_port()}"
        for key in ("hub_endpoint", "image_endpoint", "replication_endpoint")
    }
    return CentralConfig(state_dir=tmp_path, **{**ports, **overrides})


def make_app(tmp_path: Path, monkeypatch: Any, **overrides: Any) -> Quart:
    """central with a bootstrapped admin (the environment variable, as in production)."""
    monkeypatch.setenv("SKERRY_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
    return create_app(central_config(tmp_path, **overrides))


class TokenClient(QuartClient):
    """A test client that sends ``X-Auth-Token`` unless the request sets its own."""

    token: str | None = None

    async def open(self, path: str, *, headers: Any = None, **kwargs: Any):  # type: ignore[override]
        given = Headers(headers or {})
        if self.token and "X-Auth-Token" not in given and "Authorization" not in given:
            given["X-Auth-Token"] = self.token
        return await super().open(path, headers=given, **kwargs)


def client_with(app: Quart, token: str | None) -> TokenClient:
    client = TokenClient(app)
    client.token = token
    return client


async def login(app: Quart, user: str, password: str, project: str) -> dict[str, Any]:
    resp = await app.test_client().post(
        "/v1/auth/tokens",
        json={"password": {"user": user, "password": password, "project": project}},
    )
    assert resp.status_code == 201, await resp.get_data()
    return await resp.get_json()


async def admin_client(app: Quart) -> TokenClient:
    issued = await login(app, ADMIN_USER, ADMIN_PASSWORD, "admin")
    return client_with(app, issued["token"])


async def ok(resp: Any, status: int = 200) -> Any:
    assert resp.status_code == status, (resp.status_code, await resp.get_data())
    return await resp.get_json()


async def make_project(admin: TokenClient, name: str) -> dict[str, Any]:
    return await ok(await admin.post("/v1/projects", json={"name": name}), 201)


async def make_user(
    admin: TokenClient, name: str, project_id: str | None = None, role: str = "member"
) -> dict[str, Any]:
    user = await ok(await admin.post("/v1/users", json={"name": name, "password": PASSWORD}), 201)
    if project_id is not None:
        resp = await admin.put(f"/v1/projects/{project_id}/users/{user['id']}/roles/{role}")
        assert resp.status_code == 204, await resp.get_data()
    return user


def store_of(app: Quart) -> Store:
    return app.extensions["skerry"].store


def dump(app: Quart, skip: tuple[str, ...] = ("audit",)) -> dict[str, list[tuple]]:
    """Every table's rows (but the audit trail), to compare before and after."""
    st = store_of(app)
    tables = [r["name"] for r in st.query("SELECT name FROM sqlite_master WHERE type='table'")]
    rows = {
        t: sorted(map(tuple, st.conn.execute(f"SELECT * FROM [{t}]").fetchall()), key=repr)
        for t in tables
        if t not in skip and not t.startswith("sqlite_")
    }
    objects = app.extensions.get("skerry.objects")
    if objects is not None:  # central's object index too
        for t in ("buckets", "versions"):
            found = objects.index.conn.execute(f"SELECT * FROM [{t}]").fetchall()
            rows[f"objects.{t}"] = sorted(map(tuple, found), key=repr)
    return rows
