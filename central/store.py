"""central's store: SQLite in WAL mode, schema created and migrated on open.

sqlite-utils creates and migrates the schema and does the reads and writes.
Writes that must be atomic together (a change and the desired document it
produces) run inside :meth:`Store.transaction` (sqlite-utils' ``atomic``,
which nests its own writers as savepoints).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlite_utils


def _v1(db: sqlite_utils.Database) -> None:
    db["sites"].create(
        {
            "name": str,
            "created_at": float,
            "state": str,
            "last_seen": float,
            "desired_generation": int,
            "acked_generation": int,
            "observed_generation": int,
            "inventory": str,
            "health": str,
        },
        pk="name",
        not_null={"created_at", "state", "desired_generation"},
        defaults={
            "state": "down",
            "desired_generation": 0,
            "acked_generation": 0,
            "observed_generation": 0,
            "inventory": "{}",
            "health": "{}",
        },
    )
    db["servers"].create(
        {
            "id": str,
            "name": str,
            "site": str,
            "vcpus": int,
            "ram_mb": int,
            "disk_gb": int,
            "image": str,
            "power": str,
            "status": str,
            "reason": str,
            "deleting": int,
            "console": str,
            "created_at": float,
            "updated_at": float,
        },
        pk="id",
        foreign_keys=[("site", "sites", "name")],
        defaults={"status": "BUILD", "reason": "", "deleting": 0, "console": ""},
    )
    db["servers"].create_index(["site"])
    db["desired_docs"].create(
        {"site": str, "generation": int, "document": str, "created_at": float},
        pk=("site", "generation"),
        foreign_keys=[("site", "sites", "name")],
    )
    db["settings"].create({"key": str, "value": str}, pk="key")


def _v2(db: sqlite_utils.Database) -> None:
    """Identity, site enrollment keys, audit; servers belong to a project."""
    db["sites"].add_column("public_key", str)  # the site's CURVE public key (Z85)
    db["servers"].add_column("project_id", str)
    db["servers"].create_index(["project_id"])
    db["projects"].create(
        {"id": str, "name": str, "enabled": int, "created_at": float},
        pk="id",
        defaults={"enabled": 1},
    )
    db["projects"].create_index(["name"], unique=True)
    db["users"].create(
        {"id": str, "name": str, "password_hash": str, "enabled": int, "created_at": float},
        pk="id",
        defaults={"enabled": 1},
    )
    db["users"].create_index(["name"], unique=True)
    db["assignments"].create(
        {"user_id": str, "project_id": str, "role": str},
        pk=("user_id", "project_id", "role"),
        foreign_keys=[("user_id", "users", "id"), ("project_id", "projects", "id")],
    )
    db["app_credentials"].create(
        {
            "id": str,
            "name": str,
            "user_id": str,
            "project_id": str,
            "secret_hash": str,
            "roles": str,
            "expires_at": float,
            "created_at": float,
        },
        pk="id",
        foreign_keys=[("user_id", "users", "id"), ("project_id", "projects", "id")],
    )
    db["signing_keys"].create(
        {"kid": str, "private_pem": str, "public_key": str, "state": str, "created_at": float},
        pk="kid",
        defaults={"state": "active"},
    )
    # kind: token (target = jti, until = its expiry), user or project (until = revoked-before).
    db["revocations"].create(
        {"kind": str, "target": str, "until": float, "created_at": float},
        pk=("kind", "target"),
    )
    db["audit"].create(
        {
            "id": int,
            "at": float,
            "user": str,
            "project": str,
            "action": str,
            "target": str,
            "result": str,
            "request_id": str,
            "source": str,
        },
        pk="id",
    )
    db["audit"].create_index(["at"])


def _v3(db: sqlite_utils.Database) -> None:
    """Networks, subnets, ports and their IP allocations (one site per network)."""
    db["networks"].create(
        {
            "id": str,
            "name": str,
            "project_id": str,
            "kind": str,  # tenant | provider
            "segmentation": str,  # vxlan | vlan | flat
            "segmentation_id": int,  # VNI or VLAN id; NULL for flat
            "physnet": str,  # "" for tenant networks
            "mtu": int,
            "site": str,
            "created_at": float,
        },
        pk="id",
        not_null={"project_id", "kind", "segmentation", "physnet", "mtu", "site"},
        foreign_keys=[("site", "sites", "name")],
    )
    db["networks"].create_index(["project_id"])
    # A VNI, or a VLAN id on a physnet, is never given twice at a site.
    db["networks"].create_index(["site", "segmentation", "physnet", "segmentation_id"], unique=True)
    db["subnets"].create(
        {
            "id": str,
            "network_id": str,
            "cidr": str,
            "gateway": str,
            "allocation_pools": str,  # JSON [{"start", "end"}]
            "ip_version": int,
            "created_at": float,
        },
        pk="id",
        not_null={"network_id", "cidr", "gateway", "allocation_pools", "ip_version"},
        foreign_keys=[("network_id", "networks", "id")],
    )
    db["subnets"].create_index(["network_id"])
    db["ports"].create(
        {
            "id": str,
            "name": str,
            "project_id": str,
            "network_id": str,
            "mac": str,
            "vnic_type": str,  # normal | direct
            "server_id": str,  # no foreign key: a server record goes when its site says so
            "site": str,
            "created_at": float,
        },
        pk="id",
        not_null={"project_id", "network_id", "mac", "vnic_type", "site"},
        foreign_keys=[("network_id", "networks", "id"), ("site", "sites", "name")],
    )
    db["ports"].create_index(["mac"], unique=True)
    db["ports"].create_index(["network_id"])
    db["ports"].create_index(["server_id"])
    db["ip_allocations"].create(
        {"subnet_id": str, "address": str, "port_id": str},
        pk=("subnet_id", "address"),
        not_null={"port_id"},
        foreign_keys=[("subnet_id", "subnets", "id"), ("port_id", "ports", "id")],
    )
    db["ip_allocations"].create_index(["port_id"])


def _v4(db: sqlite_utils.Database) -> None:
    """NUMA/EPA flavors and their placement, server metadata; network and port status.

    VXLAN VNIs are unique fleet-wide from now on (the API gives them so); no
    index enforces it, as stores from before may hold one VNI at two sites.
    """
    servers = db["servers"]
    servers.add_column("cpu_policy", str, not_null_default="shared")  # shared | dedicated
    servers.add_column("mem_page_size", str, not_null_default="small")  # small | 2MB | 1GB
    servers.add_column("numa_nodes", int, not_null_default=1)
    servers.add_column("numa_placement", str, not_null_default="[]")  # JSON: host node per cell
    servers.add_column("metadata", str, not_null_default="{}")  # JSON: read by the guest at boot
    db["networks"].add_column("status", str, not_null_default="BUILD")
    db["networks"].add_column("reason", str, not_null_default="")
    db["networks"].create_index(["segmentation", "segmentation_id"])
    ports = db["ports"]
    ports.add_column("numa_node", int)  # bound direct ports: host node of the VF; else NULL
    ports.add_column("status", str, not_null_default="BUILD")
    ports.add_column("reason", str, not_null_default="")
    ports.add_column("binding", str)  # JSON as the site reported it; NULL until it does


def _v5(db: sqlite_utils.Database) -> None:
    """Images (metadata; the bytes are files in the image store) and trusted signing keys."""
    db["images"].create(
        {
            "id": str,
            "name": str,
            "project_id": str,
            "visibility": str,  # private | public
            "disk_format": str,  # qcow2 | raw
            "status": str,  # queued | active
            "declared_sha256": str,  # as the creator declared it; NULL when not declared
            "signature": str,  # base64 Ed25519 over the hex sha256; NULL when unsigned
            "signing_key_id": str,  # as declared, then the key that verified
            "signed": int,
            "size": int,  # NULL until active
            "sha256": str,  # of the stored bytes; NULL until active
            "virtual_size": int,  # as qemu-img reports it; NULL until active
            "created_at": float,
            "updated_at": float,
        },
        pk="id",
        not_null={"name", "project_id", "visibility", "disk_format", "status", "signed"},
        defaults={"status": "queued", "signed": 0},
    )
    db["images"].create_index(["project_id"])
    db["image_signing_keys"].create(
        {"id": str, "name": str, "public_key": str, "created_at": float},
        pk="id",
        not_null={"name", "public_key"},
    )
    db["image_signing_keys"].create_index(["name"], unique=True)


def _v6(db: sqlite_utils.Database) -> None:
    """Block volumes (with their LUKS key when encrypted) and their snapshots."""
    db["volumes"].create(
        {
            "id": str,
            "name": str,
            "project_id": str,
            "site": str,
            "size_gb": int,
            "encrypted": int,
            "key": str,  # base64 LUKS key of an encrypted volume; NULL otherwise. Never shown.
            "image_id": str,  # the image it starts from, or NULL
            "snapshot_id": str,  # the snapshot it starts from, or NULL
            "server_id": str,  # attached to (no foreign key, like ports); NULL: free
            "boot": int,  # 1: the root disk of server_id
            "status": str,
            "reason": str,
            "attached_to": str,  # as the site reports it
            "site_size_gb": int,  # as the site reports it
            "deleting": int,
            "created_at": float,
            "updated_at": float,
        },
        pk="id",
        not_null={"name", "project_id", "site", "size_gb", "encrypted"},
        defaults={"encrypted": 0, "boot": 0, "status": "BUILD", "reason": "", "deleting": 0},
        foreign_keys=[("site", "sites", "name")],
    )
    db["volumes"].create_index(["project_id"])
    db["volumes"].create_index(["server_id"])
    db["volumes"].create_index(["site"])
    db["volume_snapshots"].create(
        {
            "id": str,
            "name": str,
            "project_id": str,
            "volume_id": str,
            "site": str,
            "size_gb": int,
            "encrypted": int,
            "status": str,
            "reason": str,
            "deleting": int,
            "created_at": float,
            "updated_at": float,
        },
        pk="id",
        not_null={"name", "project_id", "volume_id", "site", "size_gb", "encrypted"},
        defaults={"status": "BUILD", "reason": "", "deleting": 0},
        foreign_keys=[("volume_id", "volumes", "id"), ("site", "sites", "name")],
    )
    db["volume_snapshots"].create_index(["volume_id"])


def _v7(db: sqlite_utils.Database) -> None:
    """Object buckets' replication policy (the objects live in central's object store)."""
    db["buckets"].create(
        {
            "name": str,
            "project_id": str,
            "sites": str,  # JSON list of site names holding the bucket
            "replicate_to_central": int,
            "peers": int,  # 1: the listed sites replicate among themselves
            "created_at": float,
        },
        pk="name",
        not_null={"project_id", "sites", "replicate_to_central", "peers", "created_at"},
        defaults={"sites": "[]", "replicate_to_central": 1, "peers": 0},
    )
    db["buckets"].create_index(["project_id"])


def _v8(db: sqlite_utils.Database) -> None:
    """Replication lag per bucket, site and target, as each site last reported it."""
    db["bucket_replication"].create(
        {
            "bucket": str,
            "site": str,
            "target": str,  # "central" or a peer site
            "pending": int,
            "pending_more": int,
            "lag_s": float,
            "last_ok": float,
            "last_error": str,
            "last_error_at": float,
            "reported_at": float,
        },
        pk=("bucket", "site", "target"),
        not_null={"reported_at"},
        defaults={"pending_more": 0},
    )
    db["bucket_replication"].create_index(["site"])


def _v9(db: sqlite_utils.Database) -> None:
    """VNF packages (SOL 005): onboarding state and what the descriptor says; the files
    are extracted under ``<state_dir>/vnf-packages/<id>/``."""
    db["vnf_packages"].create(
        {
            "id": str,
            "project_id": str,
            "onboarding_state": str,  # CREATED | UPLOADING | PROCESSING | ONBOARDED
            "operational_state": str,  # ENABLED | DISABLED
            "usage_state": str,  # IN_USE | NOT_IN_USE
            "user_defined_data": str,  # JSON object
            "failure": str,  # JSON ProblemDetails of the last failed onboarding; NULL if none
            "vnfd_id": str,  # NULL until onboarded
            "vnf_provider": str,
            "vnf_product_name": str,
            "vnf_software_version": str,
            "vnfd_version": str,
            "software_images": str,  # JSON list (VnfPackageSoftwareImageInfo)
            "entry": str,  # the top-level descriptor file inside the package
            "path": str,  # the extracted package directory; NULL until onboarded
            "size": int,  # of the uploaded CSAR
            "sha256": str,  # of the uploaded CSAR
            "created_at": float,
            "updated_at": float,
        },
        pk="id",
        not_null={"project_id", "onboarding_state", "operational_state", "usage_state"},
        defaults={
            "onboarding_state": "CREATED",
            "operational_state": "DISABLED",
            "usage_state": "NOT_IN_USE",
            "user_defined_data": "{}",
            "software_images": "[]",
        },
    )
    db["vnf_packages"].create_index(["project_id"])
    # A descriptor is onboarded once per project (NULLs, not yet onboarded, are distinct).
    db["vnf_packages"].create_index(["project_id", "vnfd_id"], unique=True)


def _v10(db: sqlite_utils.Database) -> None:
    """VNF instances, their lifecycle operation occurrences, and the resources each made."""
    db["vnf_instances"].create(
        {
            "id": str,
            "name": str,
            "description": str,
            "project_id": str,
            "vnfd_id": str,
            "vnf_provider": str,
            "vnf_product_name": str,
            "vnf_software_version": str,
            "vnfd_version": str,
            "package_id": str,  # the VNF package of the VNFD (NULL: a built-in template)
            "instantiation_state": str,  # NOT_INSTANTIATED | INSTANTIATED
            "flavour_id": str,  # NULL until instantiated
            "level_id": str,
            "site": str,
            "vnf_state": str,  # STARTED | STOPPED
            "ext_links": str,  # JSON: the instantiate request's extVirtualLinks
            "scale_status": str,  # JSON [{aspectId, scaleLevel}]
            "created_at": float,
            "updated_at": float,
        },
        pk="id",
        not_null={"name", "project_id", "vnfd_id", "instantiation_state"},
        defaults={
            "description": "",
            "instantiation_state": "NOT_INSTANTIATED",
            "ext_links": "[]",
            "scale_status": "[]",
        },
    )
    db["vnf_instances"].create_index(["project_id"])
    db["vnf_lcm_op_occs"].create(
        {
            "id": str,
            "vnf_instance_id": str,
            "project_id": str,
            "operation": str,  # INSTANTIATE | TERMINATE | SCALE | HEAL | CHANGE_FLAVOUR
            "operation_state": str,  # STARTING | PROCESSING | COMPLETED | FAILED_TEMP | ...
            "phase": str,  # the engine's step inside PROCESSING / ROLLING_BACK
            "state_entered_time": float,
            "start_time": float,
            "deadline": float,  # the current phase times out then
            "is_automatic": int,
            "operation_params": str,  # JSON: the request body
            "is_cancel_pending": int,
            "error": str,  # JSON ProblemDetails or NULL
            "warnings": str,  # JSON list: what the operation could not honour
            "resource_changes": str,  # JSON: SOL 003 resourceChanges (ADDED / REMOVED)
            "engine_state": str,  # JSON: what the engine keeps between steps (heal)
        },
        pk="id",
        not_null={"vnf_instance_id", "project_id", "operation", "operation_state"},
        defaults={
            "is_automatic": 0,
            "is_cancel_pending": 0,
            "warnings": "[]",
            "phase": "",
            "resource_changes": "{}",
            "engine_state": "{}",
        },
    )
    db["vnf_lcm_op_occs"].create_index(["vnf_instance_id"])
    db["vnf_lcm_op_occs"].create_index(["operation_state"])
    db["vnf_resources"].create(
        {
            "kind": str,  # network | subnet | port | volume | server
            "resource_id": str,
            "vnf_instance_id": str,
            "op_id": str,  # the operation that made it
            "descriptor_name": str,  # the VL, CP, storage or VDU it stands for
            "site": str,
            "created_at": float,
        },
        pk=("kind", "resource_id"),
        not_null={"vnf_instance_id", "op_id", "descriptor_name", "site"},
    )
    db["vnf_resources"].create_index(["vnf_instance_id"])
    db["vnf_resources"].create_index(["op_id"])


# Append-only: migration N brings the schema from version N-1 to N.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _v1,
    _v2,
    _v3,
    _v4,
    _v5,
    _v6,
    _v7,
    _v8,
    _v9,
    _v10,
]


class Store:
    """The central database."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(path), check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self.db = sqlite_utils.Database(self.conn)
        self.migrate()

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        """Apply every migration above the stored version, each in its own transaction."""
        for version, step in enumerate(MIGRATIONS, start=1):
            if self.schema_version >= version:
                continue
            with self.transaction():
                step(self.db)
                self.conn.execute(f"PRAGMA user_version={version}")

    def transaction(self) -> contextlib.AbstractContextManager[sqlite_utils.Database]:
        """One atomic unit of work: commits at the end, rolls back if the block raises."""
        return self.db.atomic()

    def query(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[dict]:
        """Rows of a read query as dicts."""
        cur = self.conn.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def one(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> dict | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def close(self) -> None:
        self.conn.close()


def now() -> float:
    return time.time()


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
