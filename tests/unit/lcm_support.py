"""Helpers for the VNF lifecycle tests: a central with sites, projects and the image the
templates name, and a way to play a site's reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quart import Quart

from central import orchestrator
from central.lcm.engine import LcmEngine
from central.vnfd import load_vnfd
from tests.unit.identity_support import TokenClient, ok, store_of
from tests.unit.network_support import document

TEMPLATES = Path(__file__).resolve().parents[2] / "vnf-templates"
VROUTER = load_vnfd(TEMPLATES / "vrouter")
LCM = "/vnflcm/v1"


def engine(app: Quart) -> LcmEngine:
    return app.extensions["skerry.lcm"]


async def add_image(client: TokenClient, name: str = "tiny-disk") -> dict[str, Any]:
    """An active raw image (of a few bytes) named ``name`` in the client's project."""
    image = await ok(
        await client.post("/v1/images", json={"name": name, "disk_format": "raw"}), 201
    )
    headers = {"Content-Type": "application/octet-stream"}
    await ok(await client.put(f"/v1/images/{image['id']}/file", data=b"\0" * 4096,
                              headers=headers), 200)  # fmt: skip
    return image


async def create_instance(client: TokenClient, vnfd_id: str = VROUTER.id, **kw: Any) -> dict:
    return await ok(await client.post(f"{LCM}/vnf_instances", json={"vnfdId": vnfd_id, **kw}), 201)


async def start(client: TokenClient, path: str, body: dict[str, Any] | None = None) -> dict:
    """POST a task; 202 with the occurrence's Location; the occurrence."""
    resp = await client.post(path, json=body) if body is not None else await client.post(path)
    assert resp.status_code == 202, (resp.status_code, await resp.get_data())
    location = resp.headers["Location"]
    assert location.startswith(f"{LCM}/vnf_lcm_op_occs/")
    return await ok(await client.get(location))


async def op(client: TokenClient, op_id: str) -> dict[str, Any]:
    return await ok(await client.get(f"{LCM}/vnf_lcm_op_occs/{op_id}"))


def site_reports(app: Quart, site: str = "edge-a", state: str = "running", **errors: str) -> None:
    """The site reports every server of its latest document in ``state`` (those named in
    ``errors``: error with that reason), every network and port active, every volume
    available; what the document no longer holds is gone."""
    generation, doc = document(app, site)
    servers = {s["id"]: {"state": state} for s in doc["servers"]}
    for sid, reason in errors.items():
        servers[sid] = {"state": "error", "reason": reason}
    resources = {
        "servers": servers,
        "networks": {n["id"]: {"state": "active"} for n in doc["networks"]},
        "ports": {p["id"]: {"state": "active"} for p in doc["ports"]},
        "volumes": {v["id"]: {"state": "available"} for v in doc["volumes"]},
    }
    orchestrator.apply_status(store_of(app), site, generation, resources)


def counts(app: Quart) -> dict[str, int]:
    store = store_of(app)
    return {
        t: store.one(f"SELECT COUNT(*) AS n FROM {t}")["n"]  # type: ignore[index]
        for t in ("servers", "ports", "networks", "subnets", "volumes", "vnf_resources")
    }
