"""The RADOS backend says exactly what is missing: the binding, the conf, the cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edged.objects.backend_rados import RadosBackend
from edged.objects.errors import BackendUnavailable
from edged.objects.stores import open_store


def test_missing_conf_is_named(tmp_path: Path) -> None:
    pytest.importorskip("rados", reason="python-rados not importable; the next test covers it")
    backend = RadosBackend(tmp_path / "nope.conf", "pool")
    with pytest.raises(
        BackendUnavailable, match=r"cannot reach Ceph cluster with conf .*nope.conf"
    ):
        backend.write("blob0001", [b"x"])


def test_unreachable_cluster_is_named(tmp_path: Path) -> None:
    pytest.importorskip("rados", reason="python-rados not importable; the next test covers it")
    conf = tmp_path / "ceph.conf"
    conf.write_text("[global]\nmon host = v2:127.0.0.1:1\nauth client required = none\n")
    backend = RadosBackend(conf, "pool", connect_timeout_s=2)
    with pytest.raises(BackendUnavailable, match=r"cannot reach Ceph cluster with conf"):
        backend.exists("blob0001")


def test_missing_binding_is_named(tmp_path: Path) -> None:
    """In a Python where ``import rados`` fails, the message says how to get it."""
    code = (
        "import sys; sys.modules['rados'] = None\n"
        "from pathlib import Path\n"
        "from edged.objects.backend_rados import RadosBackend\n"
        "from edged.objects.errors import BackendUnavailable\n"
        "try:\n"
        "    RadosBackend(Path('/etc/ceph/ceph.conf'), 'p').exists('blob0001')\n"
        "except BackendUnavailable as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "python-rados is not importable in this venv: run .ci/setup-host.sh" in out.stdout


def test_store_with_unavailable_backend_opens_and_reports(tmp_path: Path) -> None:
    store = open_store(
        "site-a", tmp_path, "rados", rados_conf=tmp_path / "missing.conf", rados_pool="p"
    )
    store.create_bucket("p1", "bkt", {})
    with pytest.raises(BackendUnavailable):
        store.put("bkt", "k", [b"x"])
    assert store.index.query("SELECT * FROM versions") == []
    store.close()
