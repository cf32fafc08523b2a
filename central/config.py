"""central's configuration, read from a YAML file (see docs/configuration.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edged.configfile import load, setting
from edged.objects.settings import object_settings_problem
from edged.wire import DEFAULT_MAX_FRAME_BYTES


@dataclass(frozen=True)
class CentralConfig:
    """Settings of the central orchestrator."""

    api_host: str = setting("127.0.0.1", "Address the HTTP API listens on.")
    api_port: int = setting(8700, "Port the HTTP API listens on.")
    hub_endpoint: str = setting(
        "tcp://127.0.0.1:8701", "ZeroMQ endpoint the hub's ROUTER binds for edge sites."
    )
    image_endpoint: str = setting(
        "tcp://127.0.0.1:8702",
        "ZeroMQ endpoint of the image feed: sites pull image bytes here (CURVE, enrolled keys).",
    )
    replication_endpoint: str = setting(
        "tcp://127.0.0.1:8703",
        "ZeroMQ endpoint of the object-replication receiver (a CURVE ROUTER with the hub's key; "
        "sites push their buckets' objects here).",
    )
    scrub_interval_s: float = setting(
        3600.0, "Seconds between scrubs of central's objects (re-hash, mark corrupt); 0: never."
    )
    hub_secret_key_file: Path | None = setting(
        None,
        "The hub's CURVE key pair (file with 'public: <z85>' and 'secret: <z85>' lines, "
        "mode 0600); none means <state_dir>/hub_curve.key, generated on first start.",
    )
    state_dir: Path = setting(
        Path("/var/lib/skerry/central"), "Directory holding central.db (SQLite, WAL)."
    )
    heartbeat_interval_s: float = setting(
        1.0, "Seconds between the hub's sweeps (down detection, resends)."
    )
    site_down_after_s: float = setting(
        3.0, "A site with no message for this many seconds is marked down."
    )
    resend_after_s: float = setting(
        2.0, "An unacknowledged desired document is sent again after this many seconds."
    )
    max_frame_bytes: int = setting(
        DEFAULT_MAX_FRAME_BYTES, "Control-channel messages larger than this are dropped."
    )
    keep_generations: int = setting(
        20, "Desired-state documents kept per site (older generations are pruned)."
    )
    token_ttl_s: float = setting(3600.0, "Lifetime of issued API tokens, in seconds.")
    audit_log_file: Path | None = setting(
        None, "JSON-lines audit file; none means <state_dir>/audit.jsonl."
    )
    login_max_failures: int = setting(
        5, "Failed log-ins per user name allowed within login_window_s; more get HTTP 429."
    )
    login_window_s: float = setting(60.0, "Window, in seconds, of the failed log-in limit.")
    vxlan_vni_min: int = setting(1000, "Lowest VXLAN VNI central gives tenant networks.")
    vxlan_vni_max: int = setting(16777215, "Highest VXLAN VNI central gives tenant networks.")
    lcm_timeout_s: float = setting(
        900.0,
        "A VNF lifecycle operation waiting on its sites (servers ACTIVE, resources gone) "
        "longer than this ends FAILED_TEMP.",
    )
    lcm_poll_s: float = setting(
        0.5, "How often the VNF lifecycle engine looks at the sites' reports, in seconds."
    )
    log_level: str = setting("INFO", "Python log level: DEBUG, INFO, WARNING, ERROR.")
    image_dir: Path | None = setting(
        None, "Directory holding uploaded images; none means <state_dir>/images."
    )
    image_max_bytes: int = setting(
        64 * 1024**3, "Largest image file an upload may carry, in bytes (more: HTTP 413)."
    )
    vnf_package_max_bytes: int = setting(
        1024**3,
        "Largest VNF package (CSAR zip) an upload may carry, in bytes (more: HTTP 413); "
        "its extracted files are bounded by the same number.",
    )
    require_signed_images: bool = setting(
        False,
        "Refuse image uploads without a signature that verifies against a trusted key; "
        "sites receive the policy in their document and refuse to boot unsigned images.",
    )

    object_backend: str = setting(
        "files", "Where central keeps object bytes: 'files' (object_dir) or 'rados' (Ceph)."
    )
    object_dir: Path | None = setting(
        None, "Directory of central's object index and file blobs; none: <state_dir>/objects."
    )
    object_max_bytes: int = setting(
        5 * 1024**3, "Largest object a PUT may carry, in bytes (more: HTTP 413)."
    )
    rados_conf: Path | None = setting(
        None, "ceph.conf of the cluster holding object blobs (object_backend: rados)."
    )
    rados_pool: str = setting("", "RADOS pool of central's object blobs (made if missing).")
    rados_user: str = setting("admin", "Ceph client name (without 'client.') for RADOS.")

    @property
    def object_path(self) -> Path:
        return self.object_dir or self.state_dir / "objects"

    @property
    def image_path(self) -> Path:
        return self.image_dir or self.state_dir / "images"

    @property
    def audit_path(self) -> Path:
        return self.audit_log_file or self.state_dir / "audit.jsonl"

    def validate(self) -> str | None:
        """A problem with the values, or None."""
        if not 0 < self.api_port < 65536:
            return f"key 'api_port' must be a TCP port, got {self.api_port}"
        for key in ("heartbeat_interval_s", "site_down_after_s", "resend_after_s"):
            if getattr(self, key) <= 0:
                return f"key {key!r} must be > 0"
        if self.keep_generations < 1:
            return "key 'keep_generations' must be >= 1"
        for key in ("token_ttl_s", "login_window_s", "lcm_timeout_s", "lcm_poll_s"):
            if getattr(self, key) <= 0:
                return f"key {key!r} must be > 0"
        if self.login_max_failures < 1:
            return "key 'login_max_failures' must be >= 1"
        if self.max_frame_bytes < 1024:
            return "key 'max_frame_bytes' must be >= 1024"
        if not 1 <= self.vxlan_vni_min <= self.vxlan_vni_max <= 16777215:
            return "keys 'vxlan_vni_min'..'vxlan_vni_max' must be a range within 1..16777215"
        if self.image_max_bytes < 1:
            return "key 'image_max_bytes' must be >= 1"
        if self.vnf_package_max_bytes < 1:
            return "key 'vnf_package_max_bytes' must be >= 1"
        return object_settings_problem(self)


def load_config(path: Path) -> CentralConfig:
    """Read and validate a central configuration file."""
    return load(CentralConfig, path)
