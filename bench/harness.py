"""Shared helpers for the benches: a real ``skerry-central`` subprocess and a tiny HTTP client.

Nothing here is timed. :class:`Central` writes a config into a temporary
directory, starts ``skerry-central`` with RLIMIT_NOFILE raised to its hard
limit and a bootstrap admin password, logs in as that admin, and always stops
the process again; :class:`Api` talks JSON over one keep-alive
``http.client`` connection, carrying the token. :func:`write_site_key` makes a
site's CURVE key file the way ``skerry sites enroll --write-secret`` does.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import yaml
import zmq

VENV_BIN = Path(sys.executable).parent


def raise_nofile() -> None:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (also a preexec_fn)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def install_deadline(seconds: int) -> None:
    """Make SIGALRM (after ``seconds``) and SIGTERM raise, so ``finally`` blocks clean up."""

    def _raise(signum: int, _frame: FrameType | None) -> None:
        raise TimeoutError(f"bench stopped by signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGALRM, _raise)
    signal.signal(signal.SIGTERM, _raise)
    signal.alarm(seconds)


def stop_process(proc: subprocess.Popen[bytes] | None, grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``; safe on processes that already exited."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace_s)


class ApiError(Exception):
    """A non-2xx answer from central's API."""


class Api:
    """JSON over one keep-alive HTTP/1.1 connection (reconnects once if it was dropped)."""

    def __init__(self, port: int, timeout_s: float = 30.0, token: str | None = None) -> None:
        self.port = port
        self.timeout_s = timeout_s
        self.token = token
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if self.token:
            headers["X-Auth-Token"] = self.token
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                # The connection is unusable (dropped, or a reply still pending): start afresh.
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, self.timeout_s)
                if attempt == 2 or isinstance(exc, TimeoutError):
                    raise
        if not 200 <= resp.status < 300:
            raise ApiError(f"{method} {path} -> {resp.status}: {raw[:300]!r}")
        return json.loads(raw) if raw else None

    def close(self) -> None:
        self.conn.close()


class Central:
    """A ``skerry-central`` subprocess on free loopback ports with its own state directory."""

    def __init__(self, workdir: Path, **settings: Any) -> None:
        self.workdir = workdir
        self.api_port = free_port()
        self.hub_port = free_port()
        self.hub_endpoint = f"tcp://127.0.0.1:{self.hub_port}"
        self.config = {
            "api_host": "127.0.0.1",
            "api_port": self.api_port,
            "hub_endpoint": self.hub_endpoint,
            "state_dir": str(workdir / "central-state"),
            "log_level": "INFO",
            **settings,
        }
        self.log_path = workdir / "central.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_password = secrets.token_urlsafe(24)
        self.public_key = ""  # the hub's CURVE public key, once started

    def start(self, ready_timeout_s: float = 30.0, api_timeout_s: float = 30.0) -> Api:
        """Start central and return an API client once GET /v1/sites answers."""
        config_path = self.workdir / "central.yaml"
        config_path.write_text(yaml.safe_dump(self.config))
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "skerry-central"), "--config", str(config_path)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                preexec_fn=raise_nofile,
                env={**os.environ, "SKERRY_BOOTSTRAP_ADMIN_PASSWORD": self.admin_password},
            )
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"skerry-central exited early; see {self.log_path}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                api = Api(self.api_port, api_timeout_s)
                login = {"user": "admin", "password": self.admin_password, "project": "admin"}
                api.token = api.request("POST", "/v1/auth/tokens", {"password": login})["token"]
                self.public_key = api.request("GET", "/v1/hub")["public_key"]
                return api
            time.sleep(0.1)
        raise TimeoutError(f"central API not up after {ready_timeout_s}s; see {self.log_path}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        stop_process(self.proc)

    def __enter__(self) -> Central:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def new_keypair() -> tuple[str, str]:
    """A CURVE key pair, Z85 ``(public, secret)``."""
    public, secret = zmq.curve_keypair()
    return public.decode("ascii"), secret.decode("ascii")


def write_site_key(path: Path) -> str:
    """A site key file (``public:``/``secret:`` lines, created 0600); returns the public key."""
    public, secret = new_keypair()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"public: {public}\nsecret: {secret}\n")
    return public


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file (for error messages)."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def rss_mb(pid: int) -> float:
    """VmRSS of a process in MiB, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
