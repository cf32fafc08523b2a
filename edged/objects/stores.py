"""Opening a node's object store from its settings (both programs use this)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from edged.objects.backend import BlobBackend
from edged.objects.backend_files import FileBackend
from edged.objects.backend_rados import RadosBackend
from edged.objects.hlc import HybridClock
from edged.objects.index import Index
from edged.objects.store import ObjectStore

BACKENDS = ("files", "rados")


class StoreSettings(Protocol):
    """The object-store keys central's and a site's config both have."""

    object_path: Path
    object_backend: str
    rados_conf: Path | None
    rados_pool: str
    rados_user: str
    object_max_bytes: int


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


def open_configured(node: str, cfg: StoreSettings) -> ObjectStore:
    """The store of ``node`` as its config's object keys say."""
    return open_store(
        node,
        cfg.object_path,
        cfg.object_backend,
        rados_conf=cfg.rados_conf,
        rados_pool=cfg.rados_pool,
        rados_user=cfg.rados_user,
        max_object_bytes=cfg.object_max_bytes,
    )
