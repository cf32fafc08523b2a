"""Helpers for the network and port API tests: a central with a site and two projects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quart import Quart

from central import orchestrator
from tests.unit.identity_support import (
    PASSWORD,
    TokenClient,
    admin_client,
    client_with,
    dump,
    login,
    make_project,
    make_user,
    ok,
    store_of,
)


@dataclass
class Cloud:
    app: Quart
    admin: TokenClient
    member: TokenClient  # member of project-a
    reader: TokenClient  # reader of project-a
    other: TokenClient  # member of project-b


async def make_cloud(app: Quart) -> Cloud:
    admin = await admin_client(app)
    for site in ("edge-a", "edge-b"):
        await ok(await admin.post("/v1/sites", json={"name": site}), 201)
    clients = {}
    for project, role, who in (("a", "member", "am"), ("a", "reader", "ar"), ("b", "member", "bm")):
        found = await ok(await admin.get("/v1/projects"))
        by_name = {p["name"]: p for p in found["projects"]}
        proj = by_name.get(f"project-{project}") or await make_project(admin, f"project-{project}")
        await make_user(admin, who, proj["id"], role)
        clients[who] = client_with(
            app, (await login(app, who, PASSWORD, f"project-{project}"))["token"]
        )
    return Cloud(app, admin, clients["am"], clients["ar"], clients["bm"])


def error_of(body: Any, status_code: int, code: str) -> dict[str, Any]:
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, (status_code, body)
    return body["error"]


def named_field(body: Any) -> str:
    """The field a 400 or 409 names."""
    details = body["error"]["details"]
    if "fields" in details:
        return details["fields"][0]["field"]
    return details["field"]


async def refused(
    client: TokenClient, method: str, path: str, status: int, field: str, **kw: Any
) -> dict:
    """The call is refused with ``status`` naming ``field``, and changes nothing."""
    before = dump(client.app)
    resp = await client.open(path, method=method, **kw)
    body = await resp.get_json()
    assert resp.status_code == status, (resp.status_code, body)
    assert named_field(body) == field, body
    assert dump(client.app) == before, f"{method} {path} changed the store"
    return body


async def network(client: TokenClient, **kw: Any) -> dict[str, Any]:
    body = {"name": "net", "site": "edge-a", **kw}
    return await ok(await client.post("/v1/networks", json=body), 201)


async def subnet(
    client: TokenClient, network_id: str, cidr: str = "10.0.0.0/24", **kw: Any
) -> dict:
    resp = await client.post(f"/v1/networks/{network_id}/subnets", json={"cidr": cidr, **kw})
    return await ok(resp, 201)


async def port(client: TokenClient, network_id: str, **kw: Any) -> dict[str, Any]:
    return await ok(await client.post("/v1/ports", json={"network_id": network_id, **kw}), 201)


def document(app: Quart, site: str = "edge-a") -> tuple[int, dict[str, Any]]:
    latest = orchestrator.latest_document(store_of(app), site)
    assert latest is not None
    return latest
