"""Turns central's records into per-site desired-state documents, and status back.

``publish`` must run inside the same transaction as the change it follows:
the change and the next generation of the site's document commit together or
not at all. ``apply_status`` folds a site's observed state into the records.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from central.bucket_replication import apply_replication_status, peer_section
from central.identity.snapshot import build_section
from central.store import Store, dumps, now
from central.volume_state import (
    apply_volume_status,
    boot_volumes,
    detach_from_gone_server,
    volume_section,
)

log = logging.getLogger(__name__)

# Fleet-wide settings every site receives in its document, with their defaults.
SETTINGS_DEFAULTS: dict[str, float | bool] = {
    "reconcile_interval_s": 10.0,
    "stop_grace_s": 5.0,
    "require_signed_images": False,  # every site refuses to boot an unsigned central image
}

SERVER_FIELDS = (
    "id",
    "name",
    "project_id",
    "vcpus",
    "ram_mb",
    "disk_gb",
    "image",
    "power",
    "cpu_policy",
    "mem_page_size",
    "numa_nodes",
    "numa_placement",
    "metadata",
)

# Observed state at the site -> API status (anything else, or not seen: BUILD).
STATUS_BY_STATE = {"running": "ACTIVE", "shutoff": "SHUTOFF", "error": "ERROR"}
NETWORK_STATUS = {"active": "ACTIVE", "error": "ERROR"}
PORT_STATUS = {"active": "ACTIVE", "down": "DOWN", "error": "ERROR"}


def settings(store: Store) -> dict[str, float | bool]:
    values = dict(SETTINGS_DEFAULTS)
    for row in store.db["settings"].rows:
        values[row["key"]] = json.loads(row["value"])
    return values


def build_document(
    store: Store,
    site: str,
    generation: int,
    fleet: dict[str, float | bool] | None = None,
    identity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The desired state of ``site`` as its records say now.

    ``fleet`` and ``identity`` are the same for every site: ``publish_all``
    builds them once and passes them in.
    """
    servers = store.query(
        f"SELECT {', '.join(SERVER_FIELDS)} FROM servers WHERE site = ? AND deleting = 0 "
        "ORDER BY id",
        (site,),
    )
    networks, ports = network_sections(store, site)
    volumes = volume_section(store, site)
    boots = boot_volumes(store, site)
    for server in servers:
        if server["id"] in boots:
            server["boot_volume"] = boots[server["id"]]
        server["numa_placement"] = json.loads(server["numa_placement"] or "[]")
        server["metadata"] = json.loads(server["metadata"] or "{}")
        server["ports"] = [p["id"] for p in ports if p["server_id"] == server["id"]]
    return {
        "site": site,
        "generation": generation,
        "settings": fleet if fleet is not None else settings(store),
        "servers": servers,
        "networks": networks,
        "ports": ports,
        "volumes": volumes,
        "buckets": bucket_section(store, site),
        "replication_peers": peer_section(store, site),
        "identity": identity if identity is not None else build_section(store),
        **image_sections(store, servers, volumes),
    }


def image_sections(
    store: Store, servers: list[dict[str, Any]], volumes: list[dict[str, Any]] = ()
) -> dict[str, Any]:
    """The central images the site's servers boot from or its volumes are copied from
    (the site pulls and verifies them) and every trusted signing key (the fleet's
    policy is ``settings.require_signed_images``)."""
    sources = (v.get("source") or {} for v in volumes)
    wanted = sorted(
        {s["image"] for s in servers} | {s["image_id"] for s in sources if s.get("image_id")}
    )
    images = []
    if wanted:
        marks = ",".join("?" * len(wanted))
        images = store.query(
            "SELECT id, sha256, size, disk_format AS format, signature, signing_key_id "
            f"FROM images WHERE status = 'active' AND id IN ({marks}) ORDER BY id",
            tuple(wanted),
        )
    keys = store.query("SELECT id, public_key FROM image_signing_keys ORDER BY id")
    return {"images": images, "image_signing_keys": keys if images else []}


def bucket_section(store: Store, site: str) -> list[dict[str, Any]]:
    """The object buckets the site holds, with whom it replicates each (peers: other sites)."""
    section = []
    for row in store.query("SELECT * FROM buckets ORDER BY name"):
        sites = json.loads(row["sites"])
        if site not in sites:
            continue
        section.append(
            {
                "name": row["name"],
                "project_id": row["project_id"],
                "replicate_to_central": bool(row["replicate_to_central"]),
                "peers": [s for s in sites if s != site] if row["peers"] else [],
            }
        )
    return section


def network_sections(store: Store, site: str) -> tuple[list[dict], list[dict]]:
    """The site's networks (with their subnets) and ports, as the edge needs them."""
    networks = store.query(
        "SELECT id, kind, segmentation, segmentation_id, physnet, mtu FROM networks "
        "WHERE site = ? ORDER BY id",
        (site,),
    )
    for net in networks:
        net["physnet"] = net["physnet"] or None
        net["subnets"] = store.query(
            "SELECT id, cidr, gateway, ip_version FROM subnets WHERE network_id = ? ORDER BY id",
            (net["id"],),
        )
    ports = store.query(
        "SELECT id, network_id, mac, vnic_type, server_id, numa_node FROM ports WHERE site = ? "
        "ORDER BY id",
        (site,),
    )
    for port in ports:
        port["fixed_ips"] = store.query(
            "SELECT subnet_id, address AS ip_address FROM ip_allocations WHERE port_id = ? "
            "ORDER BY subnet_id, address",
            (port["id"],),
        )
    return networks, ports


def publish(
    store: Store,
    site: str,
    keep: int = 20,
    floor: int = 0,
    fleet: dict[str, float | bool] | None = None,
    identity: dict[str, Any] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Write the next generation of ``site``'s document; returns it with its generation.

    Call it inside the transaction of the change it follows; hand the result to
    ``Hub.published`` once that transaction committed. ``floor`` lifts the
    generation above one a site reports holding (after a restore of central
    from an older backup, say) so the site accepts it.
    """
    with store.transaction():
        row = store.conn.execute(
            "SELECT desired_generation FROM sites WHERE name = ?", (site,)
        ).fetchone()
        if row is None:
            raise LookupError(f"site {site!r} does not exist")
        generation = max(row[0], floor) + 1
        doc = build_document(store, site, generation, fleet, identity)
        store.conn.execute(
            "INSERT INTO desired_docs (site, generation, document, created_at) VALUES (?,?,?,?)",
            (site, generation, dumps(doc), now()),
        )
        store.conn.execute(
            "UPDATE sites SET desired_generation = ? WHERE name = ?", (generation, site)
        )
        store.conn.execute(
            "DELETE FROM desired_docs WHERE site = ? AND generation <= ?",
            (site, generation - keep),
        )
    log.info("site %s: desired generation %d published", site, generation)
    return generation, doc


def publish_all(store: Store, keep: int = 20) -> dict[str, tuple[int, dict[str, Any]]]:
    """A new generation for every site (after a fleet-wide or identity change)."""
    with store.transaction():
        fleet = settings(store)
        identity = build_section(store)
        names = [r["name"] for r in store.query("SELECT name FROM sites ORDER BY name")]
        return {name: publish(store, name, keep, fleet=fleet, identity=identity) for name in names}


def latest_document(store: Store, site: str) -> tuple[int, dict[str, Any]] | None:
    row = store.one(
        "SELECT generation, document FROM desired_docs WHERE site = ? "
        "ORDER BY generation DESC LIMIT 1",
        (site,),
    )
    if row is None:
        return None
    return row["generation"], json.loads(row["document"])


def server_status(observed: dict[str, Any] | None) -> tuple[str, str]:
    """API status and reason of a server from what its site observed."""
    return _status(observed, STATUS_BY_STATE)


def _status(observed: Any, table: dict[str, str]) -> tuple[str, str]:
    """API status and reason from one resource's report (anything malformed: BUILD)."""
    if not isinstance(observed, dict):
        return "BUILD", ""
    state = observed.get("state", "")
    status = table.get(state, "BUILD") if isinstance(state, str) else "BUILD"
    return status, str(observed.get("reason", ""))[:1000]


def _section(resources: Any, name: str) -> dict[str, Any]:
    section = resources.get(name) if isinstance(resources, dict) else None
    return section if isinstance(section, dict) else {}


def _binding(observed: Any) -> str | None:
    binding = observed.get("binding") if isinstance(observed, dict) else None
    if not isinstance(binding, dict):
        return None
    try:  # not central.store.dumps: a NaN from the site would make the API's JSON invalid
        text = json.dumps(binding, separators=(",", ":"), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return text if len(text) <= 4000 else None


def _apply_network_status(store: Store, site: str, resources: Any) -> None:
    """Network and port status (BUILD until the site reports them); ports also their binding."""
    networks = _section(resources, "networks")
    for row in store.query("SELECT id, status, reason FROM networks WHERE site = ?", (site,)):
        status, reason = _status(networks.get(row["id"]), NETWORK_STATUS)
        if (status, reason) != (row["status"], row["reason"]):
            store.db["networks"].update(row["id"], {"status": status, "reason": reason})
    ports = _section(resources, "ports")
    for row in store.query("SELECT id, status, reason, binding FROM ports WHERE site = ?", (site,)):
        seen = ports.get(row["id"])
        status, reason = _status(seen, PORT_STATUS)
        fields = {"status": status, "reason": reason, "binding": _binding(seen)}
        if fields != {k: row[k] for k in fields}:
            store.db["ports"].update(row["id"], fields)


def apply_status(store: Store, site: str, observed_generation: int, resources: Any) -> None:
    """Fold a site's report into server, network and port records; forget servers whose
    deletion is done. Never raises on a malformed report: what is malformed counts as unseen."""
    observed = _section(resources, "servers")
    with store.transaction():
        rows = store.query("SELECT id, deleting, status FROM servers WHERE site = ?", (site,))
        for row in rows:
            seen = observed.get(row["id"])
            if row["deleting"]:
                if seen is None:
                    store.db["servers"].delete(row["id"])
                    # Its ports stay (a port outlives its server), detached; VFs released.
                    store.conn.execute(
                        "UPDATE ports SET server_id = NULL, numa_node = NULL WHERE server_id = ?",
                        (row["id"],),
                    )
                    detach_from_gone_server(store, row["id"])
                continue
            if not isinstance(seen, dict):
                seen = None
            status, reason = server_status(seen)
            console = str((seen or {}).get("console", ""))[-2000:]
            store.db["servers"].update(
                row["id"],
                {"status": status, "reason": reason, "console": console, "updated_at": now()},
            )
        _apply_network_status(store, site, resources)
        apply_volume_status(store, site, resources)
        apply_replication_status(store, site, resources)
        store.db["sites"].update(site, {"observed_generation": observed_generation})
