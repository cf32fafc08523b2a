"""The object store over each backend, for tests: files in tmp_path, RADOS on a real Ceph."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.objects.backend_files import FileBackend
from edged.objects.backend_rados import RadosBackend
from edged.objects.hlc import HybridClock
from edged.objects.index import Index
from edged.objects.store import ObjectStore
from tests.ceph_support import ceph_conf  # noqa: F401 - the session fixture

POOL = "skerry-test"


def make_backend(kind: str, tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    if kind == "files":
        return FileBackend(tmp_path / "blobs")
    conf = request.getfixturevalue("ceph_conf")
    # One pool for the session, one RADOS namespace per backend: tests never see each other.
    return RadosBackend(conf, POOL, namespace=uuid.uuid4().hex, piece_size=64 * 1024)


def flip_byte(backend, blob_id: str, offset: int = 0) -> None:  # type: ignore[no-untyped-def]
    """Change one stored byte behind the store's back (bit rot, a bad disk)."""
    if isinstance(backend, FileBackend):
        path = backend.path(blob_id)
        data = bytearray(path.read_bytes())
        data[offset] ^= 0xFF
        path.write_bytes(bytes(data))
        return
    io = backend.ioctx()
    piece = f"{blob_id}.p{offset // backend.piece_size:06d}"
    within = offset % backend.piece_size
    old = io.read(piece, 1, within)
    io.write(piece, bytes([old[0] ^ 0xFF]), within)


@pytest.fixture(params=["files", "rados"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    """An ObjectStore of node ``site-a`` over each backend."""
    backend = make_backend(request.param, tmp_path, request)
    s = ObjectStore(Index(tmp_path / "index.db"), backend, HybridClock("site-a"))
    yield s
    s.close()
