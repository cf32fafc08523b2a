"""/v1/sites: register sites and show what they report; their books for placement."""

from __future__ import annotations

import json
from typing import Any

from quart import Blueprint
from quart_schema import validate_request, validate_response

from central.api.errors import ApiError, not_found
from central.api.models import Error, Site, SiteCreate, SiteList
from central.api.policy import cloud_admin
from central.api.services import services, site_change
from central.api.site_keys import key_not_taken
from central.placement import Books, Placed, Shape, SiteInventory, parse_inventory
from central.store import Store, now

bp = Blueprint("sites", __name__, url_prefix="/v1/sites")


def site_view(row: dict[str, Any]) -> dict[str, Any]:
    """A site record as the API shows it."""
    view = dict(row)
    view["inventory"] = json.loads(row["inventory"] or "{}")
    view["health"] = json.loads(row["health"] or "{}")
    return view


def get_site(name: str) -> dict[str, Any]:
    row = services().store.db["sites"].get(name) if _exists(name) else None
    if row is None:
        raise not_found("site", name)
    return row


def _exists(name: str) -> bool:
    return services().store.db["sites"].count_where("name = ?", [name]) > 0


def site_inventory(store: Store, site: str) -> SiteInventory:
    """What ``site`` last reported of its NUMA nodes, VFs, physnets and network support."""
    row = store.one("SELECT inventory FROM sites WHERE name = ?", (site,))
    try:
        raw = json.loads(row["inventory"] or "{}") if row else {}
    except ValueError:
        raw = {}
    return parse_inventory(site, raw)


def shape_of(row: dict[str, Any]) -> Shape:
    """The placement-relevant flavor of a server record."""
    return Shape(
        vcpus=row["vcpus"],
        ram_mb=row["ram_mb"],
        cpu_policy=row["cpu_policy"],
        mem_page_size=row["mem_page_size"],
        numa_nodes=row["numa_nodes"],
    )


def site_books(store: Store, site: str) -> Books:
    """The site's inventory and what central promised from it: placed servers, bound VFs."""
    servers = [
        Placed(shape_of(r), tuple(json.loads(r["numa_placement"])))
        for r in store.query(
            "SELECT * FROM servers WHERE site = ? AND numa_placement != '[]'", (site,)
        )
    ]
    vfs = [
        (r["physnet"], r["numa_node"])
        for r in store.query(
            "SELECT n.physnet, p.numa_node FROM ports p JOIN networks n ON n.id = p.network_id "
            "WHERE p.site = ? AND p.vnic_type = 'direct' AND p.server_id IS NOT NULL "
            "AND p.numa_node IS NOT NULL",
            (site,),
        )
    ]
    return Books(site_inventory(store, site), servers, vfs)


@bp.post("")
@cloud_admin
@validate_request(SiteCreate)
@validate_response(Site, 201)
@validate_response(Error, 409)
async def create_site(data: SiteCreate):  # type: ignore[no-untyped-def]
    """Register a site; its edged connects with this name."""
    svc = services()
    if _exists(data.name):
        raise ApiError(409, "conflict", f"site {data.name!r} already exists", site=data.name)
    with site_change(data.name) as store:
        if data.public_key is not None:
            key_not_taken(data.public_key, data.name)
        row = {"name": data.name, "created_at": now(), "public_key": data.public_key}
        store.db["sites"].insert(row)
    if data.public_key is not None:
        svc.hub.enroll(data.name, data.public_key)
    return site_view(svc.store.db["sites"].get(data.name)), 201


@bp.get("")
@validate_response(SiteList)
async def list_sites():  # type: ignore[no-untyped-def]
    """All sites with their state, generations and inventory."""
    rows = services().store.query("SELECT * FROM sites ORDER BY name")
    return {"sites": [site_view(r) for r in rows]}


@bp.get("/<name>")
@validate_response(Site)
@validate_response(Error, 404)
async def show_site(name: str):  # type: ignore[no-untyped-def]
    """One site."""
    return site_view(get_site(name))
