"""Volumes in a site's desired document, and their status back from the site's report.

The document's ``volumes`` section (one entry per volume of the site that is
not being deleted)::

    {"id", "project_id", "size_gb", "encrypted",
     "key_sealed": "<base64>",          # encrypted volumes: the key sealed to the site
                                        # (edged.sealed); absent while the site has no key
     "attached_to": "<server id>",      # absent: free (or its server is going)
     "boot_index": 0,                   # with attached_to: the server's root disk
     "source": {"snapshot_id": ...} | {"image_id": ...} | null,
     "snapshots": ["<snapshot id>", ...]}

Servers booting from a volume also carry ``boot_volume`` in their own entry.
The site reports ``volumes`` and ``snapshots`` sections: ``{id: {"state",
"reason", "attached_to", "size_gb"}}`` and ``{id: {"state", "reason"}}``.
"""

from __future__ import annotations

import base64
from typing import Any

from central.store import Store, now
from edged.sealed import seal

# Observed state at the site -> API status (anything else, or not seen: BUILD).
VOLUME_STATUS = {"available": "AVAILABLE", "in-use": "IN_USE", "error": "ERROR"}
SNAPSHOT_STATUS = {"available": "AVAILABLE", "error": "ERROR"}


def volume_section(store: Store, site: str) -> list[dict[str, Any]]:
    """The site's volumes as the edge needs them (the keys of encrypted ones sealed to the
    site's CURVE public key, so the stored documents hold no key in the clear either)."""
    site_row = store.one("SELECT public_key FROM sites WHERE name = ?", (site,))
    site_key = site_row["public_key"] if site_row else None
    rows = store.query(
        "SELECT v.*, s.deleting AS server_deleting FROM volumes v "
        "LEFT JOIN servers s ON s.id = v.server_id WHERE v.site = ? AND v.deleting = 0 "
        "ORDER BY v.id",
        (site,),
    )
    snaps: dict[str, list[str]] = {}
    for snap in store.query(
        "SELECT id, volume_id FROM volume_snapshots WHERE site = ? AND deleting = 0 ORDER BY id",
        (site,),
    ):
        snaps.setdefault(snap["volume_id"], []).append(snap["id"])
    section = []
    for row in rows:
        entry: dict[str, Any] = {
            "id": row["id"],
            "project_id": row["project_id"],
            "size_gb": row["size_gb"],
            "encrypted": bool(row["encrypted"]),
        }
        if row["encrypted"] and site_key:
            entry["key_sealed"] = seal(site_key, base64.b64decode(row["key"]), row["id"])
        # A server being deleted detaches its volumes by going.
        if row["server_id"] is not None and row["server_deleting"] == 0:
            entry["attached_to"] = row["server_id"]
            if row["boot"]:
                entry["boot_index"] = 0
        if row["snapshot_id"]:
            entry["source"] = {"snapshot_id": row["snapshot_id"]}
        elif row["image_id"]:
            entry["source"] = {"image_id": row["image_id"]}
        else:
            entry["source"] = None
        entry["snapshots"] = snaps.get(row["id"], [])
        section.append(entry)
    return section


def boot_volumes(store: Store, site: str) -> dict[str, str]:
    """Server id -> its boot volume id, at ``site``."""
    rows = store.query(
        "SELECT id, server_id FROM volumes WHERE site = ? AND boot = 1 AND server_id IS NOT NULL",
        (site,),
    )
    return {r["server_id"]: r["id"] for r in rows}


def _entry(section: Any, key: str) -> dict[str, Any] | None:
    seen = section.get(key) if isinstance(section, dict) else None
    return seen if isinstance(seen, dict) else None


def _status(seen: dict[str, Any] | None, table: dict[str, str]) -> tuple[str, str]:
    if seen is None:
        return "BUILD", ""
    state = seen.get("state")
    status = table.get(state, "BUILD") if isinstance(state, str) else "BUILD"
    return status, str(seen.get("reason", ""))[:1000]


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def apply_volume_status(store: Store, site: str, resources: Any) -> None:
    """Fold a site's report into its volume and snapshot records (inside the caller's
    transaction); forget those being deleted that the site no longer reports."""
    volumes = resources.get("volumes") if isinstance(resources, dict) else None
    snapshots = resources.get("snapshots") if isinstance(resources, dict) else None
    for row in store.query(
        "SELECT id, deleting, status, reason FROM volume_snapshots WHERE site = ?", (site,)
    ):
        seen = _entry(snapshots, row["id"])
        if row["deleting"]:
            if seen is None:
                store.db["volume_snapshots"].delete(row["id"])
            continue
        status, reason = _status(seen, SNAPSHOT_STATUS)
        if (status, reason) != (row["status"], row["reason"]):
            store.db["volume_snapshots"].update(
                row["id"], {"status": status, "reason": reason, "updated_at": now()}
            )
    for row in store.query(
        "SELECT id, deleting, status, reason, attached_to, site_size_gb FROM volumes "
        "WHERE site = ?",
        (site,),
    ):
        seen = _entry(volumes, row["id"])
        if row["deleting"]:
            if seen is None and not store.one(
                "SELECT id FROM volume_snapshots WHERE volume_id = ?", (row["id"],)
            ):
                store.db["volumes"].delete(row["id"])
            continue
        status, reason = _status(seen, VOLUME_STATUS)
        attached = (seen or {}).get("attached_to")
        fields = {
            "status": status,
            "reason": reason,
            "attached_to": attached if isinstance(attached, str) else None,
            "site_size_gb": _int_or_none((seen or {}).get("size_gb")),
        }
        if fields != {k: row[k] for k in fields}:
            store.db["volumes"].update(row["id"], {**fields, "updated_at": now()})


def has_encrypted_volumes(store: Store, site: str) -> bool:
    """Whether the site's document holds sealed keys (resealed when its key changes)."""
    return (
        store.one(
            "SELECT id FROM volumes WHERE site = ? AND encrypted = 1 AND deleting = 0 LIMIT 1",
            (site,),
        )
        is not None
    )


def detach_from_gone_server(store: Store, server_id: str) -> None:
    """A deleted server's volumes are free again (its root volume too)."""
    store.conn.execute(
        "UPDATE volumes SET server_id = NULL, boot = 0 WHERE server_id = ?", (server_id,)
    )
