"""edged's configuration: one site, read from a YAML file (see docs/configuration.md)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from edged.configfile import load, setting
from edged.drivers.network import parse_physnet_uplinks
from edged.drivers.sriov import VF_CONFIG_MODES, SriovError, parse_physnets
from edged.objects.settings import object_settings_problem
from edged.wire import DEFAULT_MAX_FRAME_BYTES

SITE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class EdgeConfig:
    """Settings of one edge-site daemon."""

    site: str = setting("", "Site name; must match the site created at central (a-z, 0-9, '-').")
    central_endpoint: str = setting(
        "tcp://127.0.0.1:8701", "ZeroMQ endpoint of central's hub (its ROUTER)."
    )
    central_image_endpoint: str = setting(
        "",
        "ZeroMQ endpoint of central's image feed (CURVE, the site's key); empty: "
        "central_endpoint's host with port 8702.",
    )
    image_cache_ttl_s: float = setting(
        7 * 86400.0,
        "Seconds a cached image no desired server uses is kept before it is collected.",
    )
    require_signed_images: bool = setting(
        False,
        "Refuse to boot central images without a signature that verifies with a trusted "
        "key, whatever the fleet's policy.",
    )
    curve_secret_key_file: Path | None = setting(
        None,
        "Required. The site's CURVE key pair as written by `skerry sites enroll --write-secret`: "
        "lines 'public: <z85>' and 'secret: <z85>', mode 0600.",
    )
    central_public_key: str = setting(
        "", "Required. Central's CURVE public key, Z85 (`skerry hub key` prints it)."
    )
    central_replication_endpoint: str = setting(
        "tcp://127.0.0.1:8703",
        "ZeroMQ endpoint of central's object-replication receiver (its replication_endpoint).",
    )
    replication_bind: str = setting(
        "", "Endpoint this site's replication receiver binds for peer sites; empty: none."
    )
    replication_advertise: str = setting(
        "", "Endpoint peers reach replication_bind at (told to central); empty: replication_bind."
    )
    replication_in_flight: int = setting(4, "Objects in transfer at once per replication target.")
    replication_backoff_max_s: float = setting(
        30.0, "Longest wait between replication retries to an unreachable target (seconds)."
    )
    scrub_interval_s: float = setting(
        3600.0, "Seconds between scrubs of the site's objects (re-hash, repair); 0: never."
    )
    state_dir: Path = setting(
        Path("/var/lib/skerry/edge"), "Directory for the local state database, disks, consoles."
    )
    libvirt_uri: str = setting(
        "qemu:///system", "libvirt connection URI ('test:///<abs path>' for unit tests)."
    )
    virt_type: str = setting(
        "auto", "Domain type: 'auto' (qemu/TCG, or 'test' on test:// URIs), 'qemu' or 'kvm'."
    )
    image_dir: Path = setting(
        Path("images/build"), "Where guest images live: <image_dir>/<image>/{vmlinuz,initrd.gz}."
    )
    reconcile_interval_s: float = setting(
        10.0, "Seconds between full reconciles, whether or not central is reachable."
    )
    heartbeat_interval_s: float = setting(1.0, "Seconds between heartbeats to central.")
    central_timeout_s: float = setting(
        3.0, "Central counts as unreachable after this many seconds without a message."
    )
    stop_grace_s: float = setting(
        5.0, "Seconds a guest gets to shut down on ACPI before it is destroyed."
    )
    max_frame_bytes: int = setting(
        DEFAULT_MAX_FRAME_BYTES, "Control-channel messages larger than this are dropped."
    )
    local_api_host: str = setting(
        "127.0.0.1", "Address the site's local API (site operators, offline tokens) listens on."
    )
    local_api_port: int = setting(8710, "Port of the site's local API; 0 disables it.")
    network_namespace: str = setting(
        "", "Network namespace the network driver works in; empty means the host's own."
    )
    tunnel_local_ip: str = setting(
        "", "Local IPv4 address of VXLAN tunnels for tenant networks; empty: none (no VXLAN)."
    )
    physnet_uplinks: str = setting(
        "", "Uplink of each physical network, 'physnet1=eth1,physnet2=eth2'; empty: none."
    )
    sysfs_root: Path = setting(Path("/sys"), "Root of sysfs read for the SR-IOV inventory.")
    sriov_physnets: str = setting(
        "", "SR-IOV PFs of each physical network, 'physnet1=pf0,pf1;physnet2=pf2'; empty: none."
    )
    sriov_vf_config: str = setting(
        "netlink",
        "How VFs of direct ports get their MAC/VLAN: 'netlink' (the PF's driver) or "
        "'simulated' (the simulated SR-IOV bed of tests, no hardware).",
    )
    volume_driver: str = setting(
        "qemu-img", "Block volumes: 'qemu-img' (qcow2 files, LUKS) or 'none' (no volumes)."
    )
    volume_dir: Path | None = setting(
        None, "Where volumes and their keys live; default <state_dir>/volumes."
    )
    volume_luks_iter_time_ms: int = setting(
        0, "LUKS key-derivation time of new encrypted volumes in ms; 0: QEMU's default (2000)."
    )
    log_level: str = setting("INFO", "Python log level: DEBUG, INFO, WARNING, ERROR.")
    object_backend: str = setting(
        "files", "Where the site keeps object bytes: 'files' (object_dir) or 'rados' (Ceph)."
    )
    object_dir: Path | None = setting(
        None, "Directory of the site's object index and file blobs; none: <state_dir>/objects."
    )
    object_max_bytes: int = setting(
        5 * 1024**3, "Largest object a PUT to the local API may carry, in bytes (more: HTTP 413)."
    )
    rados_conf: Path | None = setting(
        None, "ceph.conf of the site's Ceph cluster (object_backend: rados)."
    )
    rados_pool: str = setting("", "RADOS pool of this site's object blobs (made if missing).")
    rados_user: str = setting("admin", "Ceph client name (without 'client.') for RADOS.")

    @property
    def object_path(self) -> Path:
        return self.object_dir or self.state_dir / "objects"

    def validate(self) -> str | None:
        """A problem with the values, or None."""
        if not SITE_NAME.match(self.site):
            return f"key 'site' must be a site name (a-z, 0-9, '-'), got {self.site!r}"
        for key in (
            "reconcile_interval_s",
            "heartbeat_interval_s",
            "central_timeout_s",
            "image_cache_ttl_s",
        ):
            if getattr(self, key) <= 0:
                return f"key {key!r} must be > 0"
        if self.stop_grace_s < 0:
            return "key 'stop_grace_s' must be >= 0"
        if self.virt_type not in ("auto", "qemu", "kvm", "test"):
            return f"key 'virt_type' must be auto, qemu, kvm or test, got {self.virt_type!r}"
        if self.max_frame_bytes < 1024:
            return "key 'max_frame_bytes' must be >= 1024"
        for key in ("central_replication_endpoint", "replication_bind", "replication_advertise"):
            value = getattr(self, key)
            if value and not value.startswith("tcp://"):
                return f"key {key!r} must be a tcp:// endpoint, got {value!r}"
        if self.replication_in_flight < 1:
            return "key 'replication_in_flight' must be >= 1"
        if self.replication_backoff_max_s <= 0 or self.scrub_interval_s < 0:
            return "keys 'replication_backoff_max_s' (> 0) and 'scrub_interval_s' (>= 0)"
        if not 0 <= self.local_api_port <= 65535:
            return "key 'local_api_port' must be 0 (off) or a port number"
        if self.volume_driver not in ("qemu-img", "none"):
            return f"key 'volume_driver' must be qemu-img or none, got {self.volume_driver!r}"
        if self.volume_luks_iter_time_ms < 0:
            return "key 'volume_luks_iter_time_ms' must be >= 0"
        return object_settings_problem(self) or self._network_problem()

    def _network_problem(self) -> str | None:
        """The networking keys are checked at start, not when first used."""
        if self.tunnel_local_ip:
            try:
                ipaddress.ip_address(self.tunnel_local_ip)
            except ValueError:
                return f"key 'tunnel_local_ip' must be an IP address, got {self.tunnel_local_ip!r}"
        try:
            parse_physnet_uplinks(self.physnet_uplinks)
            parse_physnets(self.sriov_physnets)
        except (ValueError, SriovError) as exc:  # the message starts with the key's name
            return f"key {exc}"
        if self.sriov_vf_config not in VF_CONFIG_MODES:
            return (
                f"key 'sriov_vf_config' must be {' or '.join(VF_CONFIG_MODES)}, "
                f"got {self.sriov_vf_config!r}"
            )
        return None


def load_config(path: Path) -> EdgeConfig:
    """Read and validate an edged configuration file."""
    return load(EdgeConfig, path)
