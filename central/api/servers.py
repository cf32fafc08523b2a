"""/v1/servers: servers at a named site; their power state; their status.

A server belongs to the project of the token that created it. Callers see the
servers of their token's project only (a cloud admin sees all); another
project's server is "not found", so its existence does not leak.

A server whose flavor pins CPUs, uses hugepages or asks for several NUMA cells,
or that gets ``direct`` ports at creation, is placed on host NUMA nodes by
:mod:`central.placement` against its site's books; the choice
(``numa_placement``, each direct port's ``numa_node``) is stored with it, so it
stays stable, and a refusal (409) leaves nothing behind.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from quart import Blueprint
from quart_schema import validate_request, validate_response

from central.api.errors import conflict, not_found
from central.api.models import Error, Flavor, Server, ServerCreate, ServerList
from central.api.networks import invalid
from central.api.policy import principal, project_scope, set_audit_target, writer
from central.api.services import services, site_change
from central.api.sites import get_site, site_books
from central.placement import Shape, flavor_problem, place_server
from central.store import Store, dumps, now

bp = Blueprint("servers", __name__, url_prefix="/v1/servers")


def server_view(row: dict[str, Any]) -> dict[str, Any]:
    """A server record as the API shows it."""
    return {
        "id": row["id"],
        "name": row["name"],
        "site": row["site"],
        "project_id": row["project_id"],
        "flavor": {name: row[name] for name in Flavor.model_fields},
        "numa_placement": json.loads(row["numa_placement"]),
        "metadata": json.loads(row["metadata"]),
        "image": row["image"],
        "boot_volume_id": boot_volume_of(row["id"]),
        "power": row["power"],
        "status": "DELETING" if row["deleting"] else row["status"],
        "reason": row["reason"],
        "console": row["console"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def boot_volume_of(server_id: str) -> str | None:
    row = services().store.one(
        "SELECT id FROM volumes WHERE server_id = ? AND boot = 1", (server_id,)
    )
    return row["id"] if row else None


def _boot_from(store: Store, server_id: str, site: str, volume_id: str, project_id: str) -> None:
    """Make the volume the server's root disk: the project's own, at the site, free (else 409)."""
    volume = store.one(
        "SELECT * FROM volumes WHERE id = ? AND project_id = ?", (volume_id, project_id)
    )
    if volume is None:
        raise conflict(f"volume {volume_id!r} does not exist in your project",
                       field="boot_volume_id")  # fmt: skip
    if volume["site"] != site:
        raise conflict(f"volume {volume_id!r} is at site {volume['site']!r}",
                       field="boot_volume_id")  # fmt: skip
    if volume["deleting"] or volume["server_id"] is not None:
        raise conflict(f"volume {volume_id!r} is in use or being deleted",
                       field="boot_volume_id")  # fmt: skip
    store.conn.execute(
        "UPDATE volumes SET server_id = ?, boot = 1 WHERE id = ?", (server_id, volume_id)
    )


def get_server(server_id: str) -> dict[str, Any]:
    """A server the caller may see, or 404."""
    rows = services().store.query("SELECT * FROM servers WHERE id = ?", (server_id,))
    scope = project_scope()
    if not rows or (scope is not None and rows[0]["project_id"] != scope):
        raise not_found("server", server_id)
    return rows[0]


def _change(server_id: str, site: str, fields: dict[str, Any]) -> None:
    """Update one server and publish its site's next document, atomically."""
    with site_change(site) as store:
        store.db["servers"].update(server_id, {**fields, "updated_at": now()})


def _attach_ports(
    store: Store, server_id: str, site: str, port_ids: list[str], project_id: str
) -> list[tuple[str, str]]:
    """Attach the named ports: the project's own, at the server's site, not attached (else 409).

    Returns (port id, physnet) of the ``direct`` ones, in order: they need VFs.
    """
    direct = []
    for port_id in dict.fromkeys(port_ids):
        port = store.one(
            "SELECT p.site, p.server_id, p.vnic_type, n.physnet FROM ports p "
            "JOIN networks n ON n.id = p.network_id WHERE p.id = ? AND p.project_id = ?",
            (port_id, project_id),
        )
        if port is None:
            raise conflict(f"port {port_id!r} does not exist in your project", field="ports")
        if port["site"] != site:
            raise conflict(f"port {port_id!r} is at site {port['site']!r}", field="ports")
        if port["server_id"] is not None:
            raise conflict(f"port {port_id!r} is attached to another server", field="ports")
        store.conn.execute("UPDATE ports SET server_id = ? WHERE id = ?", (server_id, port_id))
        if port["vnic_type"] == "direct":
            direct.append((port_id, port["physnet"]))
    return direct


def _resolve_image(store: Store, image: str, scope: str | None) -> str:
    """A central image the project sees (by id, or by the name of an active one): its id.

    Anything else is the name of a kernel-boot image in the site's image directory,
    kept as given. An image without its file yet, or a name shared by several
    active images, is a 409. ``scope``: the project whose images count (None: all).
    """
    visible = "" if scope is None else " AND (project_id = ? OR visibility = 'public')"
    args: tuple[Any, ...] = () if scope is None else (scope,)
    row = store.one(f"SELECT id, status FROM images WHERE id = ?{visible}", (image, *args))
    if row is not None:
        if row["status"] != "active":
            raise conflict(f"image {image!r} has no file yet", field="image")
        return image
    rows = store.query(
        f"SELECT id FROM images WHERE name = ? AND status = 'active'{visible}", (image, *args)
    )
    if len(rows) > 1:
        raise conflict(f"several images are named {image!r}; give the image id", field="image")
    return rows[0]["id"] if rows else image


def _shape(flavor: Flavor) -> Shape:
    """The flavor as placement sees it; 400 naming the field when it cannot be split in cells."""
    shape = Shape(
        vcpus=flavor.vcpus,
        ram_mb=flavor.ram_mb,
        cpu_policy=flavor.cpu_policy,
        mem_page_size=flavor.mem_page_size,
        numa_nodes=flavor.numa_nodes,
    )
    problem = flavor_problem(shape)
    if problem is not None:
        raise invalid(f"flavor.{problem[0]}", problem[1])
    return shape


def insert_server(store: Store, data: ServerCreate, project_id: str, scope: str | None) -> str:
    """Record a server of ``project_id`` at its (existing) site inside the caller's site
    change: its image resolved as ``scope`` sees images, its ports and boot volume
    attached, placed on NUMA nodes (400/409 when it cannot be). Returns its id."""
    shape = _shape(data.flavor)
    server_id = str(uuid.uuid4())
    stamp = now()
    image = _resolve_image(store, data.image, scope)
    store.db["servers"].insert(
        {
            "id": server_id,
            "name": data.name,
            "site": data.site,
            "project_id": project_id,
            **data.flavor.model_dump(),
            "image": image,
            "power": data.power,
            "metadata": dumps(data.metadata),
            "status": "BUILD",
            "created_at": stamp,
            "updated_at": stamp,
        }
    )
    direct = _attach_ports(store, server_id, data.site, data.ports, project_id)
    if data.boot_volume_id is not None:
        _boot_from(store, server_id, data.site, data.boot_volume_id, project_id)
    choice = place_server(site_books(store, data.site), shape, [p for _, p in direct])
    store.db["servers"].update(server_id, {"numa_placement": dumps(choice.numa_placement)})
    for (port_id, _), node in zip(direct, choice.port_nodes, strict=True):
        store.conn.execute("UPDATE ports SET numa_node = ? WHERE id = ?", (node, port_id))
    return server_id


@bp.post("")
@writer
@validate_request(ServerCreate)
@validate_response(Server, 202)
@validate_response(Error, 400)
@validate_response(Error, 404)
@validate_response(Error, 409)
async def create_server(data: ServerCreate):  # type: ignore[no-untyped-def]
    """Create a server at a site (placed on NUMA nodes when it needs it); it reaches the
    site with the next document."""
    get_site(data.site)
    with site_change(data.site) as store:
        server_id = insert_server(store, data, principal().project_id, project_scope())
    set_audit_target(f"server_id={server_id}")
    return server_view(get_server(server_id)), 202


@bp.get("")
@validate_response(ServerList)
async def list_servers():  # type: ignore[no-untyped-def]
    """The servers of the token's project (all of them for a cloud admin)."""
    scope = project_scope()
    if scope is None:
        rows = services().store.query("SELECT * FROM servers ORDER BY site, name, id")
    else:
        rows = services().store.query(
            "SELECT * FROM servers WHERE project_id = ? ORDER BY site, name, id", (scope,)
        )
    return {"servers": [server_view(r) for r in rows]}


@bp.get("/<server_id>")
@validate_response(Server)
@validate_response(Error, 404)
async def show_server(server_id: str):  # type: ignore[no-untyped-def]
    """One server, with the site's reason when it is in ERROR."""
    return server_view(get_server(server_id))


def _power(server_id: str, power: str) -> dict[str, Any]:
    row = get_server(server_id)
    if not row["deleting"] and row["power"] != power:
        _change(server_id, row["site"], {"power": power})
    return server_view(get_server(server_id))


@bp.post("/<server_id>/start")
@writer
@validate_response(Server, 202)
@validate_response(Error, 404)
async def start_server(server_id: str):  # type: ignore[no-untyped-def]
    """Desired power state: running."""
    return _power(server_id, "running"), 202


@bp.post("/<server_id>/stop")
@writer
@validate_response(Server, 202)
@validate_response(Error, 404)
async def stop_server(server_id: str):  # type: ignore[no-untyped-def]
    """Desired power state: stopped."""
    return _power(server_id, "stopped"), 202


@bp.delete("/<server_id>")
@writer
@validate_response(Server, 202)
@validate_response(Error, 404)
async def delete_server(server_id: str):  # type: ignore[no-untyped-def]
    """Delete a server; the record goes once its site reports the domain gone."""
    row = get_server(server_id)
    if not row["deleting"]:
        _change(server_id, row["site"], {"deleting": 1})
    return server_view(get_server(server_id)), 202
