"""Opening a node's object store from its settings (both programs use this)."""

from __future__ import annotations

from pathlib import Path

from edged.objects.backend import BlobBackend
from edged.objects.backend_files import FileBackend
from edged.objects.backend_rados import RadosBackend
from edged.objects.hlc import HybridClock
from edged.objects.index import Index
from edged.objects.store import ObjectStore

BACKENDS = ("files", "rados")


def open_store(
    node: str,
    root: Path,
    backend: str = "files",
    *,
    rados_conf: Path | None = None,
    rados_pool: str = "",
    rados_user: str = "admin",
    max_object_bytes: int | None = None,
) -> ObjectStore:
    """The store of ``node``: index at ``<root>/index.db``, blobs under ``<root>/blobs``
    (files) or in ``rados_pool`` (rados; connected on first use)."""
    blobs: BlobBackend
    if backend == "files":
        blobs = FileBackend(root / "blobs")
    elif backend == "rados":
        if rados_conf is None or not rados_pool:
            raise ValueError("the rados backend needs rados_conf and rados_pool")
        blobs = RadosBackend(rados_conf, rados_pool, rados_user)
    else:
        raise ValueError(f"object backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    store = ObjectStore(Index(root / "index.db"), blobs, HybridClock(node))
    if max_object_bytes is not None:
        store.max_object_bytes = max_object_bytes
    return store
