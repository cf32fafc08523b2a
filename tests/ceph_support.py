"""A throwaway single-node Ceph (mon + one memstore OSD) for the RADOS backend's tests.

Started once per test session by ``tests/ceph/ceph-up.sh`` (the recipe of the
machine notes) on a free loopback port, stopped by ``ceph-down.sh`` at the
end. When Ceph or python-rados is missing the tests that need it skip, saying
which; ``.ci/setup-host.sh`` installs both.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.host import skip

HERE = Path(__file__).parent / "ceph"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ceph_conf() -> Iterator[Path]:
    """The ceph.conf of a running single-node cluster (session-wide)."""
    try:
        import rados  # noqa: F401
    except ImportError as exc:
        skip(f"python-rados is not importable ({exc}); run .ci/setup-host.sh")
    for tool in ("ceph-mon", "ceph-osd", "ceph"):
        if shutil.which(tool) is None:
            skip(f"{tool} is not installed; run .ci/setup-host.sh")
    work = Path(tempfile.mkdtemp(prefix="skerry-ceph-"))
    env = {**os.environ, "CEPH_MON_PORT": str(_free_port())}
    up = subprocess.run(
        ["bash", str(HERE / "ceph-up.sh"), str(work / "c"), "memstore"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        if up.returncode != 0:
            skip(f"Ceph did not start: {(up.stdout + up.stderr)[-600:]}")
        yield work / "c" / "ceph.conf"
    finally:
        subprocess.run(["bash", str(HERE / "ceph-down.sh"), str(work / "c")], timeout=120)
        shutil.rmtree(work, ignore_errors=True)
