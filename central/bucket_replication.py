"""Object replication as central sees it: peers in documents, lag reported by sites.

* ``replication_peers`` in a site's document: for every other site a bucket of
  this site replicates to (``peers``), its endpoint (the ``replication_advertise``
  the peer reported in its status inventory) and its enrolled CURVE key. A peer
  without a reported endpoint or an enrolled key is left out; the bucket view
  says why.
* Each site reports, per bucket and target, its replication lag in its status
  (``resources.buckets.<name>.replication.<target>``); :func:`apply_replication_status`
  keeps the newest report in ``bucket_replication`` and :func:`replication_view`
  shows it in central's bucket API.
"""

from __future__ import annotations

import json
import math
from typing import Any

from central.store import Store, now

CENTRAL = "central"
MAX_ENDPOINT = 256
MAX_ERROR = 500


def advertised(inventory: Any) -> str:
    """The replication endpoint a site's inventory reports, or ``""``."""
    value = inventory.get("replication_advertise") if isinstance(inventory, dict) else None
    if isinstance(value, str) and value.startswith("tcp://") and len(value) <= MAX_ENDPOINT:
        return value
    return ""


def _site_endpoint(store: Store, site: str) -> tuple[str, str]:
    """(endpoint, public key) central knows for ``site``; either may be empty."""
    row = store.one("SELECT inventory, public_key FROM sites WHERE name = ?", (site,))
    if row is None:
        return "", ""
    try:
        inventory = json.loads(row["inventory"] or "{}")
    except ValueError:
        inventory = {}
    return advertised(inventory), row["public_key"] or ""


def _peer_buckets(store: Store) -> list[tuple[str, list[str]]]:
    rows = store.query("SELECT name, sites FROM buckets WHERE peers = 1 ORDER BY name")
    return [(r["name"], json.loads(r["sites"])) for r in rows]


def peers_of(store: Store, site: str) -> list[str]:
    """The other sites ``site`` replicates to (and from): fellow sites of its peer buckets."""
    found: set[str] = set()
    for _name, sites in _peer_buckets(store):
        if site in sites:
            found.update(s for s in sites if s != site)
    return sorted(found)


def peer_section(store: Store, site: str) -> list[dict[str, str]]:
    """``replication_peers`` of ``site``'s document: the peers with an endpoint and a key."""
    section = []
    for peer in peers_of(store, site):
        endpoint, key = _site_endpoint(store, peer)
        if endpoint and key:
            section.append({"site": peer, "endpoint": endpoint, "public_key": key})
    return section


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _text(value: Any) -> str | None:
    return value[:MAX_ERROR] if isinstance(value, str) else None


def apply_replication_status(store: Store, site: str, resources: Any) -> None:
    """Keep the site's newest lag report for the buckets it holds (inside apply_status)."""
    section = resources.get("buckets") if isinstance(resources, dict) else None
    if not isinstance(section, dict):
        return  # a site that reports no buckets section: keep what it said last
    held = {
        r["name"]
        for r in store.query("SELECT name, sites FROM buckets")
        if site in json.loads(r["sites"])
    }
    reported = now()
    store.conn.execute("DELETE FROM bucket_replication WHERE site = ?", (site,))
    for bucket, entry in section.items():
        streams = entry.get("replication") if isinstance(entry, dict) else None
        if bucket not in held or not isinstance(streams, dict):
            continue
        for target, view in list(streams.items())[:64]:
            if not isinstance(target, str) or not isinstance(view, dict):
                continue
            pending = view.get("pending")
            store.db["bucket_replication"].insert(
                {
                    "bucket": bucket,
                    "site": site,
                    "target": target[:64],
                    "pending": pending if type(pending) is int and pending >= 0 else None,
                    "pending_more": int(view.get("pending_more") is True),
                    "lag_s": _number(view.get("lag_seconds")),
                    "last_ok": _number(view.get("last_success")),
                    "last_error": _text(view.get("last_error")),
                    "last_error_at": _number(view.get("last_error_at")),
                    "reported_at": reported,
                },
                replace=True,
            )


def replication_view(store: Store, name: str, policy: dict[str, Any]) -> list[dict[str, Any]]:
    """Per site of the bucket and target: its last reported lag, or why there is none."""
    rows = {
        (r["site"], r["target"]): r
        for r in store.query("SELECT * FROM bucket_replication WHERE bucket = ?", (name,))
    }
    sites = [s for s in policy.get("sites") or [] if isinstance(s, str)]
    view = []
    for site in sites:
        targets = [CENTRAL] if policy.get("replicate_to_central") else []
        if policy.get("peers"):
            targets += [s for s in sites if s != site]
        for target in targets:
            row = rows.get((site, target))
            entry: dict[str, Any] = {
                "site": site,
                "target": target,
                "pending": None,
                "pending_more": False,
                "lag_s": None,
                "last_ok": None,
                "last_error": None,
                "reported_at": None,
            }
            if row is not None:
                entry.update(
                    {
                        k: row[k]
                        for k in ("pending", "lag_s", "last_ok", "last_error", "reported_at")
                    }
                )
                entry["pending_more"] = bool(row["pending_more"])
            elif target != CENTRAL and not all(_site_endpoint(store, target)):
                entry["last_error"] = (
                    f"peer {target} has no replication endpoint or enrolled key yet "
                    "(its replication_advertise is not reported)"
                )
            else:
                entry["last_error"] = f"site {site} has not reported this stream yet"
            view.append(entry)
    return view
