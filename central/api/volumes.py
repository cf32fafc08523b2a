"""/v1/volumes: block volumes at one site, attached to its servers; their snapshots.

A volume belongs to the project of the token that created it and lives at one
site; another project's volume is "not found" (a cloud admin sees all). Every
change publishes the site's next document in the same transaction; the site
creates, grows, copies, attaches and removes the volume and reports its status.

An encrypted volume gets a 32-byte random key made here. The key is stored
with the volume in central's database and put into its site's desired
document (which travels only over the CURVE channel); it is never in an API
response, an audit record or a log line. A volume made from a snapshot is a
copy of it and keeps its key.

Refused with 409: deleting a volume that is attached (or a server's root
disk) or has snapshots; extending, snapshotting or attaching a volume that is
attached; attaching to a server at another site or of another project;
deleting a snapshot a volume is still being made from.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from typing import Any

from quart import Blueprint
from quart_schema import validate_request, validate_response

from central.api.errors import conflict, not_found
from central.api.models import Error
from central.api.policy import principal, project_scope, set_audit_target, writer
from central.api.services import services, site_change
from central.api.sites import get_site
from central.api.volume_models import (
    Snapshot,
    SnapshotCreate,
    SnapshotList,
    Volume,
    VolumeAttach,
    VolumeCreate,
    VolumeExtend,
    VolumeList,
)
from central.refusal import Refusal
from central.store import Store, now

bp = Blueprint("volumes", __name__, url_prefix="/v1/volumes")

KEY_BYTES = 32
GIB = 1024**3
# vdb..vdz: vda is the root disk.
MAX_ATTACHED = 25


def new_key() -> str:
    """A fresh random volume key, base64."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def volume_view(row: dict[str, Any]) -> dict[str, Any]:
    """A volume record as the API shows it (never its key)."""
    return {
        "id": row["id"],
        "name": row["name"],
        "site": row["site"],
        "project_id": row["project_id"],
        "size_gb": row["size_gb"],
        "encrypted": bool(row["encrypted"]),
        "image_id": row["image_id"],
        "snapshot_id": row["snapshot_id"],
        "server_id": row["server_id"],
        "boot": bool(row["boot"]),
        "status": "DELETING" if row["deleting"] else row["status"],
        "reason": row["reason"],
        "attached_to": row["attached_to"],
        "site_size_gb": row["site_size_gb"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def snapshot_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: row[k] for k in ("id", "name", "volume_id", "site", "project_id", "size_gb")},
        "encrypted": bool(row["encrypted"]),
        "status": "DELETING" if row["deleting"] else row["status"],
        **{k: row[k] for k in ("reason", "created_at", "updated_at")},
    }


def get_volume(volume_id: str) -> dict[str, Any]:
    """A volume the caller may see, or 404."""
    row = services().store.one("SELECT * FROM volumes WHERE id = ?", (volume_id,))
    scope = project_scope()
    if row is None or (scope is not None and row["project_id"] != scope):
        raise not_found("volume", volume_id)
    return row


def get_snapshot(volume_id: str, snapshot_id: str) -> dict[str, Any]:
    get_volume(volume_id)
    row = services().store.one(
        "SELECT * FROM volume_snapshots WHERE id = ? AND volume_id = ?", (snapshot_id, volume_id)
    )
    if row is None:
        raise not_found("snapshot", snapshot_id)
    return row


def _live(volume: dict[str, Any]) -> None:
    if volume["deleting"]:
        raise conflict(f"volume {volume['id']!r} is being deleted", field="volume")


def _free(volume: dict[str, Any], what: str) -> None:
    """409 unless the volume is attached to nothing."""
    if volume["server_id"] is not None:
        how = "is the root disk of" if volume["boot"] else "is attached to"
        raise conflict(
            f"cannot {what}: the volume {how} server {volume['server_id']}; detach it first",
            field="server_id",
            server_id=volume["server_id"],
        )


def _image_source(store: Store, image_id: str, size_gb: int, scope: str | None) -> None:
    """The image exists for the caller (``scope``), is active and fits in ``size_gb``."""
    row = store.one("SELECT * FROM images WHERE id = ?", (image_id,))
    if row is None or (
        scope is not None and row["project_id"] != scope and row["visibility"] != "public"
    ):
        raise Refusal("image_id", f"image {image_id!r} does not exist", 409)
    if row["status"] != "active":
        raise Refusal("image_id", f"image {image_id!r} has no data yet ({row['status']})", 409)
    if (row["virtual_size"] or 0) > size_gb * GIB:
        need = -(-row["virtual_size"] // GIB)
        raise Refusal("size_gb", f"the image needs {need} GB, the volume has {size_gb}")


def _snapshot_source(store: Store, data: VolumeCreate, project_id: str) -> tuple[bool, str | None]:
    """The snapshot's encryption and key, after checking it may be copied here."""
    snap = store.one(
        "SELECT s.*, v.key FROM volume_snapshots s JOIN volumes v ON v.id = s.volume_id "
        "WHERE s.id = ? AND s.project_id = ?",
        (data.snapshot_id, project_id),
    )
    if snap is None:
        raise Refusal("snapshot_id", f"snapshot {data.snapshot_id!r} does not exist in your "
                      "project", 409)  # fmt: skip
    if snap["deleting"]:
        raise Refusal("snapshot_id", f"snapshot {data.snapshot_id!r} is being deleted", 409)
    if snap["site"] != data.site:
        raise Refusal("snapshot_id", f"snapshot {data.snapshot_id!r} is at site "
                      f"{snap['site']!r}", 409)  # fmt: skip
    if data.size_gb < snap["size_gb"]:
        raise Refusal("size_gb", f"the snapshot needs {snap['size_gb']} GB, the volume has "
                      f"{data.size_gb}")  # fmt: skip
    if data.encrypted is not None and data.encrypted != bool(snap["encrypted"]):
        raise Refusal("encrypted", "a volume from a snapshot has the snapshot's encryption")
    return bool(snap["encrypted"]), snap["key"]


def insert_volume(store: Store, data: VolumeCreate, project_id: str, scope: str | None) -> str:
    """Record a volume of ``project_id`` at its (existing) site inside the caller's site
    change: empty, from an image ``scope`` sees, or a copy of a snapshot (400/409 when the
    source does not fit). Returns its id."""
    if data.image_id is not None and data.snapshot_id is not None:
        raise Refusal("snapshot_id", "give image_id or snapshot_id, not both")
    volume_id = str(uuid.uuid4())
    stamp = now()
    encrypted, key = bool(data.encrypted), None
    if data.snapshot_id is not None:
        encrypted, key = _snapshot_source(store, data, project_id)
    else:
        if data.image_id is not None:
            _image_source(store, data.image_id, data.size_gb, scope)
        key = new_key() if encrypted else None
    store.db["volumes"].insert(
        {
            "id": volume_id,
            "name": data.name,
            "project_id": project_id,
            "site": data.site,
            "size_gb": data.size_gb,
            "encrypted": int(encrypted),
            "key": key,
            "image_id": data.image_id,
            "snapshot_id": data.snapshot_id,
            "status": "BUILD",
            "created_at": stamp,
            "updated_at": stamp,
        }
    )
    return volume_id


@bp.post("")
@writer
@validate_request(VolumeCreate)
@validate_response(Volume, 202)
@validate_response(Error, 400)
@validate_response(Error, 404)
@validate_response(Error, 409)
async def create_volume(data: VolumeCreate):  # type: ignore[no-untyped-def]
    """Create a volume at a site (empty, from an image, or a copy of a snapshot)."""
    get_site(data.site)
    with site_change(data.site) as store:
        volume_id = insert_volume(store, data, principal().project_id, project_scope())
    set_audit_target(f"volume_id={volume_id}")
    return volume_view(get_volume(volume_id)), 202


@bp.get("")
@validate_response(VolumeList)
async def list_volumes():  # type: ignore[no-untyped-def]
    """The volumes of the token's project (all of them for a cloud admin)."""
    scope = project_scope()
    store = services().store
    if scope is None:
        rows = store.query("SELECT * FROM volumes ORDER BY site, name, id")
    else:
        rows = store.query(
            "SELECT * FROM volumes WHERE project_id = ? ORDER BY site, name, id", (scope,)
        )
    return {"volumes": [volume_view(r) for r in rows]}


@bp.get("/<volume_id>")
@validate_response(Volume)
@validate_response(Error, 404)
async def show_volume(volume_id: str):  # type: ignore[no-untyped-def]
    """One volume, with the site's reason when it is in ERROR or still BUILD."""
    return volume_view(get_volume(volume_id))


def _change(volume: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """Update one volume and publish its site's next document, atomically."""
    with site_change(volume["site"]) as store:
        store.db["volumes"].update(volume["id"], {**fields, "updated_at": now()})
    return volume_view(get_volume(volume["id"]))


@bp.delete("/<volume_id>")
@writer
@validate_response(Volume, 202)
@validate_response(Error, 404)
@validate_response(Error, 409)
async def delete_volume(volume_id: str):  # type: ignore[no-untyped-def]
    """Delete a volume; the record goes once its site reports it gone."""
    row = get_volume(volume_id)
    if row["deleting"]:
        return volume_view(row), 202
    _free(row, "delete it")
    snaps = services().store.query(
        "SELECT id FROM volume_snapshots WHERE volume_id = ? AND deleting = 0 ORDER BY id",
        (volume_id,),
    )
    if snaps:
        raise conflict(
            "the volume has snapshots; delete them first",
            field="snapshots",
            snapshots=[s["id"] for s in snaps],
        )
    return _change(row, {"deleting": 1}), 202


@bp.post("/<volume_id>/extend")
@writer
@validate_request(VolumeExtend)
@validate_response(Volume, 202)
@validate_response(Error, 400)
@validate_response(Error, 404)
@validate_response(Error, 409)
async def extend_volume(volume_id: str, data: VolumeExtend):  # type: ignore[no-untyped-def]
    """Grow a volume that is not attached (a smaller size is refused)."""
    row = get_volume(volume_id)
    _live(row)
    if data.size_gb < row["size_gb"]:
        raise Refusal("size_gb", f"a volume only grows: it has {row['size_gb']} GB")
    if data.size_gb == row["size_gb"]:
        return volume_view(row), 202
    _free(row, "extend it")
    return _change(row, {"size_gb": data.size_gb}), 202


def attachable_server(
    store: Store, volume: dict[str, Any], server_id: str, scope: str | None
) -> dict[str, Any]:
    """The server ``volume`` may be attached to (as ``scope`` sees servers), or a 409
    saying why not."""
    server = store.one("SELECT * FROM servers WHERE id = ?", (server_id,))
    if server is None or (scope is not None and server["project_id"] != scope):
        raise Refusal("server_id", f"server {server_id!r} does not exist in your project", 409)
    if server["project_id"] != volume["project_id"]:
        raise Refusal("server_id", f"server {server_id!r} is in another project than the "
                      "volume", 409)  # fmt: skip
    if server["site"] != volume["site"]:
        raise Refusal("server_id", f"server {server_id!r} is at site {server['site']!r}, the "
                      f"volume at {volume['site']!r}", 409)  # fmt: skip
    if server["deleting"]:
        raise Refusal("server_id", f"server {server_id!r} is being deleted", 409)
    return server


def attach_row(store: Store, volume: dict[str, Any], server_id: str, scope: str | None) -> None:
    """Attach a free volume to a server inside the caller's site change (409 when the
    server may not take it)."""
    attachable_server(store, volume, server_id, scope)
    (count,) = store.conn.execute(
        "SELECT COUNT(*) FROM volumes WHERE server_id = ? AND boot = 0", (server_id,)
    ).fetchone()
    if count >= MAX_ATTACHED - 1:
        raise Refusal("server_id", f"server {server_id!r} has {count} volumes, the "
                      "most it takes", 409)  # fmt: skip
    store.db["volumes"].update(
        volume["id"], {"server_id": server_id, "boot": 0, "updated_at": now()}
    )


@bp.post("/<volume_id>/attach")
@writer
@validate_request(VolumeAttach)
@validate_response(Volume, 202)
@validate_response(Error, 400)
@validate_response(Error, 404)
@validate_response(Error, 409)
async def attach_volume(volume_id: str, data: VolumeAttach):  # type: ignore[no-untyped-def]
    """Attach a free volume to a server of its project at its site (hot-plug when running)."""
    row = get_volume(volume_id)
    _live(row)
    if row["server_id"] == data.server_id and not row["boot"]:
        return volume_view(row), 202
    _free(row, "attach it")
    with site_change(row["site"]) as store:
        attach_row(store, row, data.server_id, project_scope())
    set_audit_target(f"volume_id={volume_id},server_id={data.server_id}")
    return volume_view(get_volume(volume_id)), 202


@bp.post("/<volume_id>/detach")
@writer
@validate_response(Volume, 202)
@validate_response(Error, 404)
@validate_response(Error, 409)
async def detach_volume(volume_id: str):  # type: ignore[no-untyped-def]
    """Detach a volume from its server (hot-unplug when running); a root disk stays."""
    row = get_volume(volume_id)
    if row["server_id"] is None:
        raise conflict("the volume is not attached", field="server_id")
    if row["boot"]:
        raise conflict(
            f"the volume is the root disk of server {row['server_id']}; delete the server",
            field="server_id",
        )
    set_audit_target(f"volume_id={volume_id},server_id={row['server_id']}")
    return _change(row, {"server_id": None}), 202


# -- snapshots ------------------------------------------------------------------------


@bp.post("/<volume_id>/snapshots")
@writer
@validate_request(SnapshotCreate)
@validate_response(Snapshot, 202)
@validate_response(Error, 400)
@validate_response(Error, 404)
@validate_response(Error, 409)
async def create_snapshot(volume_id: str, data: SnapshotCreate):  # type: ignore[no-untyped-def]
    """A full copy of a volume that is not attached, as it is now, kept at its site."""
    row = get_volume(volume_id)
    _live(row)
    _free(row, "snapshot it")
    snap_id = str(uuid.uuid4())
    stamp = now()
    with site_change(row["site"]) as store:
        store.db["volume_snapshots"].insert(
            {
                "id": snap_id,
                "name": data.name,
                "project_id": row["project_id"],
                "volume_id": volume_id,
                "site": row["site"],
                "size_gb": row["size_gb"],
                "encrypted": row["encrypted"],
                "status": "BUILD",
                "created_at": stamp,
                "updated_at": stamp,
            }
        )
    set_audit_target(f"volume_id={volume_id},snapshot_id={snap_id}")
    return snapshot_view(get_snapshot(volume_id, snap_id)), 202


@bp.get("/<volume_id>/snapshots")
@validate_response(SnapshotList)
@validate_response(Error, 404)
async def list_snapshots(volume_id: str):  # type: ignore[no-untyped-def]
    """The snapshots of a volume."""
    get_volume(volume_id)
    rows = services().store.query(
        "SELECT * FROM volume_snapshots WHERE volume_id = ? ORDER BY created_at, id", (volume_id,)
    )
    return {"snapshots": [snapshot_view(r) for r in rows]}


@bp.get("/<volume_id>/snapshots/<snapshot_id>")
@validate_response(Snapshot)
@validate_response(Error, 404)
async def show_snapshot(volume_id: str, snapshot_id: str):  # type: ignore[no-untyped-def]
    """One snapshot."""
    return snapshot_view(get_snapshot(volume_id, snapshot_id))


@bp.delete("/<volume_id>/snapshots/<snapshot_id>")
@writer
@validate_response(Snapshot, 202)
@validate_response(Error, 404)
@validate_response(Error, 409)
async def delete_snapshot(volume_id: str, snapshot_id: str):  # type: ignore[no-untyped-def]
    """Delete a snapshot; refused while a volume is still being copied from it."""
    row = get_snapshot(volume_id, snapshot_id)
    if not row["deleting"]:
        with site_change(row["site"]) as store:
            copying = store.query(
                "SELECT id FROM volumes WHERE snapshot_id = ? AND status = 'BUILD' "
                "AND deleting = 0 ORDER BY id",
                (snapshot_id,),
            )
            if copying:
                raise conflict(
                    "volumes are still being made from this snapshot",
                    field="volumes",
                    volumes=[v["id"] for v in copying],
                )
            store.db["volume_snapshots"].update(snapshot_id, {"deleting": 1, "updated_at": now()})
    return snapshot_view(get_snapshot(volume_id, snapshot_id)), 202
