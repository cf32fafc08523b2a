"""Blobs in a Ceph RADOS pool through python-rados (Debian's ``python3-rados``).

A blob of N bytes is ``ceil(N / piece_size)`` RADOS objects ``<id>.p<n>``
(each at most ``piece_size``, far below Ceph's ``osd_max_object_size`` of
128 MiB and ``osd_max_write_size`` of 90 MB) plus a small head object ``<id>``
holding ``{"size", "sha256", "piece_size", "pieces"}``. The head is written
last and removed first, so a blob is visible only whole; pieces a crash left
without a head are not listed by ``blob_ids`` and ``sweep_orphans`` removes them.

``rados`` is imported, and the cluster connected, on first use: a site with
the binding or the cluster missing still starts, and every object call
answers :class:`BackendUnavailable` saying which of the two is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from edged.objects.backend import READ_CHUNK, BackendUnavailable, Check, Written

log = logging.getLogger(__name__)

DEFAULT_PIECE = 4 * 1024 * 1024
MAX_PIECE = 64 * 1024 * 1024
HEAD_MAX = 4096
NO_BINDING = (
    "python-rados is not importable in this venv: run .ci/setup-host.sh "
    "(installs Debian's python3-rados and links it into .venv)"
)


def _piece(blob_id: str, n: int) -> str:
    return f"{blob_id}.p{n:06d}"


class RadosBackend:
    """Blobs in pool ``pool`` (and RADOS ``namespace``, if given) of the cluster ``conf``
    names, as client ``user``. ``sweep_orphans`` must not run while writes are in flight."""

    name = "rados"

    def __init__(
        self,
        conf: Path,
        pool: str,
        user: str = "admin",
        piece_size: int = DEFAULT_PIECE,
        connect_timeout_s: int = 10,
        namespace: str = "",
    ) -> None:
        if not 4096 <= piece_size <= MAX_PIECE:
            raise ValueError(f"piece_size must be 4096..{MAX_PIECE}, got {piece_size}")
        self.conf, self.pool, self.user = conf, pool, user
        self.piece_size = piece_size
        self.timeout = connect_timeout_s
        self.namespace = namespace
        self._cluster: Any = None
        self._io: Any = None
        self._lock = threading.Lock()

    # -- connection --------------------------------------------------------------------

    def _rados(self) -> Any:
        try:
            import rados  # the optional binding, loaded on first use
        except ImportError as exc:
            raise BackendUnavailable(f"{NO_BINDING} ({exc})") from None
        return rados

    def ioctx(self) -> Any:
        """The pool's I/O context, connecting (and creating the pool) on first use."""
        with self._lock:
            if self._io is not None:
                return self._io
            rados = self._rados()
            if not self.conf.is_file():
                raise BackendUnavailable(
                    f"cannot reach Ceph cluster with conf {self.conf}: the file does not exist"
                )
            timeouts = {
                "client_mount_timeout": str(self.timeout),
                "rados_mon_op_timeout": str(self.timeout),
                "rados_osd_op_timeout": str(max(30, self.timeout)),
            }
            cluster = None
            try:
                cluster = rados.Rados(conffile=str(self.conf), rados_id=self.user, conf=timeouts)
                cluster.connect(timeout=self.timeout)
                if not cluster.pool_exists(self.pool):
                    cluster.create_pool(self.pool)
                io = cluster.open_ioctx(self.pool)
                if self.namespace:
                    io.set_namespace(self.namespace)
                self._io = io
            except rados.Error as exc:
                if cluster is not None:
                    cluster.shutdown()
                raise BackendUnavailable(
                    f"cannot reach Ceph cluster with conf {self.conf} "
                    f"(user {self.user}, pool {self.pool}): {type(exc).__name__}: {exc}"
                ) from None
            self._cluster = cluster
            log.info("RADOS pool %s opened (conf %s)", self.pool, self.conf)
            return self._io

    def _failed(self, what: str, exc: Exception) -> BackendUnavailable:
        return BackendUnavailable(f"RADOS pool {self.pool}: {what}: {type(exc).__name__}: {exc}")

    def _head(self, blob_id: str) -> dict[str, Any]:
        rados = self._rados()
        io = self.ioctx()
        try:
            raw = io.read(blob_id, HEAD_MAX, 0)
        except rados.ObjectNotFound:
            raise KeyError(blob_id) from None
        except rados.Error as exc:
            raise self._failed(f"reading head of {blob_id}", exc) from None
        return json.loads(raw)

    # -- the interface -----------------------------------------------------------------

    def write(
        self,
        blob_id: str,
        chunks: Iterable[bytes],
        check: Check | None = None,
        durable: bool = True,
    ) -> Written:
        """A RADOS write returns once the cluster has it durably: ``durable`` changes nothing."""
        rados = self._rados()
        io = self.ioctx()
        digest = hashlib.sha256()
        size, pieces = 0, 0
        buf = bytearray()

        def flush() -> None:
            nonlocal pieces, buf
            io.write_full(_piece(blob_id, pieces), bytes(buf))
            pieces += 1
            buf = bytearray()

        try:
            for chunk in chunks:
                if not chunk:
                    continue
                digest.update(chunk)
                size += len(chunk)
                view = memoryview(chunk)
                while view:
                    take = self.piece_size - len(buf)
                    buf += view[:take]
                    view = view[take:]
                    if len(buf) == self.piece_size:
                        flush()
            if buf:
                flush()
            written = Written(size, digest.hexdigest())
            if check is not None:
                check(written)
            head = {
                "size": size,
                "sha256": written.sha256,
                "piece_size": self.piece_size,
                "pieces": pieces,
            }
            io.write_full(blob_id, json.dumps(head).encode())
        except rados.Error as exc:
            self._remove_pieces(blob_id, range(pieces + 1))
            raise self._failed(f"writing blob {blob_id}", exc) from None
        except BaseException:
            self._remove_pieces(blob_id, range(pieces + 1))
            raise
        return written

    def adopt(
        self, blob_id: str, path: Path, chunks: Callable[[], Iterable[bytes]], written: Written
    ) -> None:
        """Copy the staged file into pieces and a head (checked again on the way)."""

        def check(got: Written) -> None:
            if got != written:
                raise BackendUnavailable(f"staged file changed while copied: {got} != {written}")

        self.write(blob_id, chunks(), check)
        path.unlink(missing_ok=True)

    def sync(self, blob_ids: Iterable[str]) -> None:
        """Nothing to do: every write was durable when it returned."""

    def read(self, blob_id: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        head = self._head(blob_id)
        end = head["size"] if length is None else min(head["size"], offset + length)
        return self._chunks(blob_id, head["piece_size"], offset, end)

    def _chunks(self, blob_id: str, piece_size: int, offset: int, end: int) -> Iterator[bytes]:
        rados = self._rados()
        io = self.ioctx()
        pos = offset
        while pos < end:
            n, within = divmod(pos, piece_size)
            want = min(READ_CHUNK, end - pos, piece_size - within)
            try:
                data = io.read(_piece(blob_id, n), want, within)
            except rados.ObjectNotFound:  # a lost piece: short read, the hash check tells
                return
            except rados.Error as exc:
                raise self._failed(f"reading piece {n} of {blob_id}", exc) from None
            if not data:  # a piece shorter than its head says: the hash check will tell
                return
            pos += len(data)
            yield data

    def delete(self, blob_id: str) -> None:
        rados = self._rados()
        try:
            head = self._head(blob_id)
        except KeyError:
            return
        try:
            self.ioctx().remove_object(blob_id)
        except rados.ObjectNotFound:
            return
        except rados.Error as exc:
            raise self._failed(f"deleting {blob_id}", exc) from None
        self._remove_pieces(blob_id, range(head["pieces"]))

    def _remove_pieces(self, blob_id: str, numbers: Iterable[int]) -> None:
        rados = self._rados()
        io = self.ioctx()
        for n in numbers:
            try:
                io.remove_object(_piece(blob_id, n))
            except rados.ObjectNotFound:
                continue
            except rados.Error as exc:  # left for sweep_orphans
                log.warning(
                    "RADOS pool %s: piece %d of %s not removed: %s", self.pool, n, blob_id, exc
                )

    def exists(self, blob_id: str) -> bool:
        try:
            self._head(blob_id)
        except KeyError:
            return False
        return True

    def blob_ids(self) -> Iterator[str]:
        rados = self._rados()
        try:
            names = sorted(o.key for o in self.ioctx().list_objects())
        except rados.Error as exc:
            raise self._failed("listing objects", exc) from None
        return iter([n for n in names if "." not in n])

    def sweep_orphans(self) -> int:
        """Remove pieces whose blob has no head (a crash mid-write); returns how many."""
        rados = self._rados()
        names = {o.key for o in self.ioctx().list_objects()}
        orphans = [n for n in names if "." in n and n.split(".", 1)[0] not in names]
        for name in orphans:
            try:
                self.ioctx().remove_object(name)
            except rados.Error as exc:
                log.warning("RADOS pool %s: orphan %s not removed: %s", self.pool, name, exc)
        return len(orphans)

    def close(self) -> None:
        with self._lock:
            if self._io is not None:
                self._io.close()
                self._io = None
            if self._cluster is not None:
                self._cluster.shutdown()
                self._cluster = None
