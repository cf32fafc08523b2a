"""A replica's bytes arriving in order into a local file that outlives a cut transfer.

The receiver of a replicated version appends each chunk here (hashing it on
the way: the only pass over the bytes); if the transfer stops, the file keeps
the prefix and a later offer of the same version resumes from its size (the
prefix is hashed again once, on reopening). Complete, it is handed to
``ObjectStore.prepare_replica_file``, which checks size and sha256 against the
version and makes the file itself the blob (files backend: fsync and rename,
no second copy).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from edged.objects.backend import READ_CHUNK, Written

WRITEBACK_BYTES = 2 * 1024 * 1024


class ReplicaFile:
    """Bytes ``[0, size)`` of one version, staged at ``path`` (opened or resumed)."""

    def __init__(self, path: Path, expected_size: int) -> None:
        self.path = path
        held = path.stat().st_size if path.exists() else 0
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self.fh = os.fdopen(fd, "r+b")
        if held > expected_size:  # not a prefix of this version: start again
            held = 0
        self.fh.truncate(held)
        self.digest = hashlib.sha256()
        self.size = 0
        while self.size < held and (chunk := self.fh.read(min(READ_CHUNK, held - self.size))):
            self.digest.update(chunk)
            self.size += len(chunk)
        self.fh.seek(self.size)
        self.resumed = self.size
        self.flushed = self.size

    def append(self, data: bytes | memoryview) -> None:
        self.digest.update(data)
        self.fh.write(data)
        self.size += len(data)
        if self.size - self.flushed >= WRITEBACK_BYTES:
            # Start writing these pages to disk now (asynchronously), so the fsync at
            # the end waits for the last few MiB, not the whole object.
            self.fh.flush()
            os.posix_fadvise(
                self.fh.fileno(), self.flushed, self.size - self.flushed, os.POSIX_FADV_DONTNEED
            )
            self.flushed = self.size

    def written(self) -> Written:
        return Written(self.size, self.digest.hexdigest())

    def finish(self) -> None:
        """Every byte on disk (fsynced), the file closed: ready to become a blob."""
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.close()

    def chunks(self) -> Iterator[bytes]:
        """The staged bytes, read back (for a backend that copies them)."""
        with open(self.path, "rb") as f:
            while chunk := f.read(READ_CHUNK):
                yield chunk

    def close(self) -> None:
        """Stop writing; the prefix stays for a resume."""
        if not self.fh.closed:
            self.fh.close()

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
