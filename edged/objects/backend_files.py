"""Blobs as files: ``<root>/<id[:2]>/<id>``, written to a temp file, fsynced, renamed.

A blob appears by ``rename`` of a complete, fsynced temp file in the same
directory, and the directory is fsynced after (at once, or for many blobs in
one ``sync``): a crash leaves either no blob or the whole blob, plus perhaps a
``.tmp-*`` file that ``sweep_temp`` removes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from edged.objects.backend import READ_CHUNK, BackendUnavailable, Check, Written

BLOB_ID = re.compile(r"^[A-Za-z0-9_-]{8,128}$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_as(want: Written) -> Check:
    def check(written: Written) -> None:
        if written != want:
            raise BackendUnavailable(f"staged file changed while copied: {written} != {want}")

    return check


class FileBackend:
    """The default backend: one file per blob under ``root``."""

    name = "files"

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendUnavailable(f"object directory {root} cannot be made: {exc}") from exc
        self.sweep_temp()

    def path(self, blob_id: str) -> Path:
        if not BLOB_ID.match(blob_id):
            raise ValueError(f"not a blob id: {blob_id!r}")
        return self.root / blob_id[:2] / blob_id

    def sweep_temp(self) -> int:
        """Remove temp files a crash left behind; returns how many."""
        removed = 0
        for tmp in self.root.glob("*/.tmp-*"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed += 1
        return removed

    def write(
        self,
        blob_id: str,
        chunks: Iterable[bytes],
        check: Check | None = None,
        durable: bool = True,
    ) -> Written:
        final = self.path(blob_id)
        try:
            final.parent.mkdir(exist_ok=True)
        except OSError as exc:
            raise BackendUnavailable(f"cannot make {final.parent}: {exc}") from exc
        tmp = final.parent / f".tmp-{blob_id}-{uuid.uuid4().hex[:8]}"
        digest = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "xb") as f:
                for chunk in chunks:
                    if chunk:
                        digest.update(chunk)
                        f.write(chunk)
                        size += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            written = Written(size, digest.hexdigest())
            if check is not None:
                check(written)
            os.rename(tmp, final)
            if durable:
                _fsync_dir(final.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise BackendUnavailable(f"writing blob {blob_id} under {self.root}: {exc}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return written

    def adopt(
        self, blob_id: str, path: Path, chunks: Callable[[], Iterable[bytes]], written: Written
    ) -> None:
        """Rename the staged file into place (same filesystem: no copy), else copy it."""
        final = self.path(blob_id)
        try:
            final.parent.mkdir(exist_ok=True)
            os.rename(path, final)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                why = f"adopting blob {blob_id} under {self.root}: {exc}"
                raise BackendUnavailable(why) from exc
            self.write(blob_id, chunks(), _same_as(written), durable=False)
            path.unlink(missing_ok=True)

    def sync(self, blob_ids: Iterable[str]) -> None:
        """fsync each directory holding one of ``blob_ids`` once (their renames)."""
        dirs = {self.path(b).parent for b in blob_ids}
        try:
            for d in sorted(dirs):
                _fsync_dir(d)
        except OSError as exc:
            raise BackendUnavailable(f"syncing blob directories under {self.root}: {exc}") from exc

    def read(self, blob_id: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        try:
            f = open(self.path(blob_id), "rb")  # noqa: SIM115 - closed by the generator
        except FileNotFoundError:
            raise KeyError(blob_id) from None
        except OSError as exc:
            raise BackendUnavailable(f"reading blob {blob_id}: {exc}") from exc
        return self._chunks(f, offset, length)

    @staticmethod
    def _chunks(f, offset: int, length: int | None) -> Iterator[bytes]:  # type: ignore[no-untyped-def]
        with f:
            f.seek(offset)
            left = length
            while left is None or left > 0:
                data = f.read(READ_CHUNK if left is None else min(READ_CHUNK, left))
                if not data:
                    return
                if left is not None:
                    left -= len(data)
                yield data

    def delete(self, blob_id: str) -> None:
        path = self.path(blob_id)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise BackendUnavailable(f"deleting blob {blob_id}: {exc}") from exc
        with contextlib.suppress(OSError):
            _fsync_dir(path.parent)

    def exists(self, blob_id: str) -> bool:
        return self.path(blob_id).is_file()

    def blob_ids(self) -> Iterator[str]:
        for sub in sorted(self.root.iterdir()):
            if not sub.is_dir():
                continue
            for entry in sorted(sub.iterdir()):
                if not entry.name.startswith(".tmp-") and BLOB_ID.match(entry.name):
                    yield entry.name

    def close(self) -> None:
        pass
