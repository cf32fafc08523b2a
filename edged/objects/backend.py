"""The blob backend interface: whole immutable blobs, written once, read by range.

A blob is the bytes of one object version, named by an id the store chooses
(never reused). Contract of every backend:

- ``write`` consumes the chunks, hashes them, and makes the blob visible only
  complete: if the chunks raise, ``check`` raises, or the backend fails, no
  trace of the blob is visible (``exists`` is false, ``blob_ids`` omits it).
- ``read`` yields the bytes of ``[offset, offset + length)`` in chunks.
- ``write(..., durable=False)`` may leave the blob's *name* not yet durable
  (the files backend skips the directory fsync); ``sync(blob_ids)`` then makes
  many such blobs durable at once (a group commit: one directory fsync per
  directory, not per blob). A blob must be synced before anything refers to it.
- ``delete`` succeeds when the blob is already gone.
- Backend failures (disk, cluster) raise :class:`BackendUnavailable` with a
  message saying which.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from edged.objects.errors import BackendUnavailable

READ_CHUNK = 1024 * 1024

__all__ = ["READ_CHUNK", "BackendUnavailable", "BlobBackend", "Check", "Written", "hashed"]


@dataclass(frozen=True)
class Written:
    """A stored blob's size and the sha256 (hex) of its bytes."""

    size: int
    sha256: str


# Called with what was written, before the blob becomes visible; raising discards it.
Check = Callable[[Written], None]


@runtime_checkable
class BlobBackend(Protocol):
    name: str

    def write(
        self,
        blob_id: str,
        chunks: Iterable[bytes],
        check: Check | None = None,
        durable: bool = True,
    ) -> Written:
        """Store the chunks as ``blob_id``; visible only complete and after ``check``.
        With ``durable=False`` the blob survives a crash only after :meth:`sync`."""
        ...

    def adopt(
        self, blob_id: str, path: Path, chunks: Callable[[], Iterable[bytes]], written: Written
    ) -> None:
        """Make the complete, fsynced, already checked file ``path`` the blob ``blob_id``
        (``written`` is its size and sha256; ``chunks`` reads it back for a backend that
        copies), not yet durably named (:meth:`sync`). ``path`` is gone afterwards."""
        ...

    def sync(self, blob_ids: Iterable[str]) -> None:
        """Make blobs written with ``durable=False`` survive a crash."""
        ...

    def read(self, blob_id: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Bytes from ``offset`` (``length`` of them, or to the end); KeyError if absent."""
        ...

    def delete(self, blob_id: str) -> None:
        """Remove the blob; no error when it is already gone."""
        ...

    def exists(self, blob_id: str) -> bool: ...

    def blob_ids(self) -> Iterator[str]:
        """Every visible blob (for scrub and garbage collection)."""
        ...

    def close(self) -> None: ...


def hashed(chunks: Iterable[bytes], digest: hashlib._Hash) -> Iterator[bytes]:
    """The chunks, each fed to ``digest`` on its way through (empty ones dropped)."""
    for chunk in chunks:
        if chunk:
            digest.update(chunk)
            yield bytes(chunk)
