"""Runs central and edge sites as real local processes: for the demo and the tests.

Configs are derived from ``site-configs/`` with the ports, state directories
and image directory of one working directory, so several clusters can run on
one machine without touching each other.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from central import zap
from central.client import ApiFailure, Client

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; TimeoutError names ``what``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except ApiFailure as exc:
            last_error = exc
        time.sleep(interval)
    detail = f" (last error: {last_error})" if last_error else ""
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")


def _script(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


class LocalCluster:
    """central plus any number of edged processes under one working directory."""

    def __init__(
        self,
        workdir: Path,
        image_dir: Path | None = None,
        libvirt_uri: str = "qemu:///system",
        central_overrides: dict[str, Any] | None = None,
        edge_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.workdir = workdir
        self.image_dir = (image_dir or REPO / "images" / "build").resolve()
        self.libvirt_uri = libvirt_uri
        self.api_port = free_port()
        self.hub_port = free_port()
        self.image_port = free_port()
        self.replication_port = free_port()
        self.central_overrides = central_overrides or {}
        self.edge_overrides = edge_overrides or {}
        self.central: subprocess.Popen[bytes] | None = None
        self.edges: dict[str, subprocess.Popen[bytes]] = {}
        self.local_api_ports: dict[str, int] = {}  # each site's local API, kept across restarts
        self.client = Client(f"http://127.0.0.1:{self.api_port}")
        # central bootstraps its admin with this on first start; kept in memory only.
        self.admin_password = secrets.token_urlsafe(24)
        self.central_public_key = ""  # known once central started (GET /v1/hub)
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def hub_endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.hub_port}"

    @property
    def image_endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.image_port}"

    # -- configs ---------------------------------------------------------------------

    def central_config(self) -> Path:
        data = yaml.safe_load((REPO / "site-configs" / "central.yaml").read_text())
        data.update(
            {
                "api_port": self.api_port,
                "hub_endpoint": self.hub_endpoint,
                "image_endpoint": self.image_endpoint,
                "replication_endpoint": f"tcp://127.0.0.1:{self.replication_port}",
                "state_dir": str(self.workdir / "central"),
                **self.central_overrides,
            }
        )
        path = self.workdir / "central.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    def edge_config(self, site: str, **overrides: Any) -> Path:
        data = yaml.safe_load((REPO / "site-configs" / "edge-a.yaml").read_text())
        data.update(
            {
                "site": site,
                "central_endpoint": self.hub_endpoint,
                "central_image_endpoint": self.image_endpoint,
                "central_replication_endpoint": f"tcp://127.0.0.1:{self.replication_port}",
                "state_dir": str(self.workdir / site),
                "libvirt_uri": self.libvirt_uri,
                "image_dir": str(self.image_dir),
                "curve_secret_key_file": str(self.key_file(site)),
                "central_public_key": self.central_public_key,
                "local_api_port": self.local_api_ports.setdefault(site, free_port()),
                **self.edge_overrides,
                **overrides,
            }
        )
        path = self.workdir / f"{site}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    # -- site keys -------------------------------------------------------------------

    def local_api(self, site: str, token: str | None = None) -> Client:
        """A client for ``site``'s local API (the site's own operators' entry point)."""
        return Client(f"http://127.0.0.1:{self.local_api_ports[site]}", token=token)

    def key_file(self, site: str) -> Path:
        return self.workdir / f"{site}.key"

    def site_keys(self, site: str) -> zap.KeyPair:
        """The site's CURVE key pair from its key file, made (mode 0600) if missing."""
        path = self.key_file(site)
        if not path.exists():
            zap.write_key_file(path, zap.new_keypair())
        return zap.read_key_file(path)

    def new_site_keys(self, site: str) -> zap.KeyPair:
        """Replace the site's key file with a fresh key pair (not enrolled)."""
        self.key_file(site).unlink(missing_ok=True)
        return self.site_keys(site)

    def enroll(self, site: str, public_key: str | None = None) -> dict[str, Any]:
        """Register ``site`` with its key (or ``public_key``), or enroll the key if it exists."""
        key = public_key or self.site_keys(site).public
        try:
            self.client.get(f"/v1/sites/{site}")
        except ApiFailure as exc:
            if exc.status != 404:
                raise
            return self.client.post("/v1/sites", {"name": site, "public_key": key})
        return self.client.call("PUT", f"/v1/sites/{site}/key", {"public_key": key})

    def add_site(self, site: str, **edge_overrides: Any) -> None:
        """Make the site's key pair, register the site with it, start its edged."""
        self.enroll(site)
        self.start_edge(site, **edge_overrides)

    # -- processes -------------------------------------------------------------------

    def _spawn(
        self, name: str, script: str, config: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        return subprocess.Popen(
            [_script(script), "--config", str(config)],
            env={**os.environ, **env} if env else None,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )

    def start_central(self, timeout: float = 20) -> None:
        env = {"SKERRY_BOOTSTRAP_ADMIN_PASSWORD": self.admin_password}
        self.central = self._spawn("central", "skerry-central", self.central_config(), env)
        # cluster.client is the bootstrapped cloud admin.
        wait_for(
            lambda: self.client.login("admin", self.admin_password, "admin"),
            timeout,
            "central's API (admin log-in)",
        )
        self.central_public_key = self.client.get("/v1/hub")["public_key"]

    def kill_central(self, sig: int = signal.SIGKILL) -> None:
        if self.central is not None:
            _stop(self.central, sig)
            self.central = None

    def start_edge(self, site: str, **overrides: Any) -> None:
        """Start (or restart) the site's edged with its key file (made if missing, not enrolled)."""
        self.site_keys(site)
        self.edges[site] = self._spawn(site, "skerry-edged", self.edge_config(site, **overrides))

    def kill_edge(self, site: str, sig: int = signal.SIGKILL) -> None:
        proc = self.edges.pop(site, None)
        if proc is not None:
            _stop(proc, sig)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        for site in list(self.edges):
            self.kill_edge(site, signal.SIGTERM)
        self.kill_central(signal.SIGTERM)

    # -- API helpers -----------------------------------------------------------------

    def site(self, name: str) -> dict[str, Any]:
        return self.client.get(f"/v1/sites/{name}")

    def server(self, server_id: str) -> dict[str, Any]:
        return self.client.get(f"/v1/servers/{server_id}")

    def create_server(self, site: str, name: str, **fields: Any) -> dict[str, Any]:
        body = {
            "name": name,
            "site": site,
            "image": "tiny",
            "flavor": {"vcpus": 1, "ram_mb": 128, "disk_gb": 1},
            **fields,
        }
        return self.client.post("/v1/servers", body)

    def upload_image(
        self, name: str, path: Path, disk_format: str, **fields: Any
    ) -> dict[str, Any]:
        """Create an image at central and upload ``path`` as its file (streamed)."""
        image = self.client.post("/v1/images", {"name": name, "disk_format": disk_format, **fields})
        req = urllib.request.Request(
            f"{self.client.base_url}/v1/images/{image['id']}/file", method="PUT"
        )
        req.add_header("Content-Type", "application/octet-stream")
        req.add_header("Content-Length", str(path.stat().st_size))
        if self.client.token:
            req.add_header("X-Auth-Token", self.client.token)
        with path.open("rb") as body, urllib.request.urlopen(req, body, timeout=60) as resp:
            return json.loads(resp.read())

    def wait_server(self, server_id: str, status: str, timeout: float = 90) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            server = self.server(server_id)
            if server["status"] == "ERROR" and status != "ERROR":
                raise AssertionError(f"server {server_id} in ERROR: {server['reason']}")
            return server if server["status"] == status else None

        return wait_for(check, timeout, f"server {server_id} {status}")

    def wait_marker(self, server_id: str, timeout: float = 90) -> dict[str, Any]:
        """Wait until the guest printed its boot marker with its hostname."""

        def check() -> dict[str, Any] | None:
            server = self.server(server_id)
            marker = f"SKERRY-GUEST-UP hostname={server['name']}"
            return server if marker in server["console"] else None

        return wait_for(check, timeout, f"guest marker of server {server_id}")


def _stop(proc: subprocess.Popen[bytes], sig: int, timeout: float = 10) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def purge_site_domains(uri: str, sites: list[str]) -> int:
    """Destroy and undefine every domain of ``sites`` (test and demo teardown)."""
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)
    conn = libvirt.open(uri)
    removed = 0
    try:
        for dom in conn.listAllDomains():
            if not any(dom.name().startswith(f"skerry-{site}-") for site in sites):
                continue
            try:
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
                removed += 1
            except libvirt.libvirtError:
                pass
    finally:
        conn.close()
    return removed
