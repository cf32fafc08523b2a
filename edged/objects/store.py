"""The object store: buckets and objects over an index, a blob backend and an HLC.

Local writes stamp a new HLC, which sorts after everything this store has
seen, so they win. Replicas' versions go through :meth:`ObjectStore.apply_replica`:
the highest HLC wins (equal: no change), a tombstone is a version like any
other, so a delete is not undone by an old copy arriving later. Every
change gets the next ``seq``; :meth:`ObjectStore.changes_since` is what a
replicator follows. Bytes go to the backend first (visible only whole and
checked), then the index row commits; the replaced blob is removed after.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edged.objects import names
from edged.objects.backend import BlobBackend, Written
from edged.objects.errors import ObjectCorrupt, ObjectError
from edged.objects.hlc import HybridClock, parse
from edged.objects.index import Index
from edged.objects.replica_file import ReplicaFile

log = logging.getLogger(__name__)

DEFAULT_MAX_OBJECT_BYTES = 5 * 1024**3
MAX_LIST = 1000


@dataclass(frozen=True)
class ObjectVersion:
    """One version of an object as every replica names it (a tombstone when ``deleted``)."""

    bucket: str
    key: str
    hlc: str
    etag: str
    size: int
    meta: dict[str, str]
    deleted: bool
    seq: int


@dataclass(frozen=True)
class PreparedReplica:
    """A replica's version whose blob is written but not yet committed (see
    :meth:`ObjectStore.prepare_replica`); ``row`` is its index row."""

    version: ObjectVersion
    row: dict[str, Any]


@dataclass(frozen=True)
class Bucket:
    name: str
    project_id: str
    created: float
    policy: dict[str, Any] = field(default_factory=dict)
    orphaned: bool = False


def _version(row: dict[str, Any]) -> ObjectVersion:
    return ObjectVersion(
        bucket=row["bucket"],
        key=row["key"],
        hlc=row["hlc"],
        etag=row["etag"],
        size=row["size"],
        meta=json.loads(row["meta"]),
        deleted=bool(row["deleted"]),
        seq=row["seq"],
    )


def _bucket(row: dict[str, Any]) -> Bucket:
    return Bucket(
        row["name"],
        row["project_id"],
        row["created"],
        json.loads(row["policy"]),
        bool(row["orphaned"]),
    )


def _not_found(bucket: str, key: str | None = None) -> ObjectError:
    if key is None:
        return ObjectError("bucket", f"bucket {bucket!r} does not exist", 404)
    return ObjectError("key", f"object {key!r} does not exist in bucket {bucket!r}", 404)


def _counted(
    chunks: Iterable[bytes], length: int | None, limit: int, md5: Any | None
) -> Iterator[bytes]:
    """The chunks, refused as soon as they pass the declared length or the size limit."""
    seen = 0
    for chunk in chunks:
        seen += len(chunk)
        if length is not None and seen > length:
            raise ObjectError("Content-Length", f"the body is longer than Content-Length {length}")
        if seen > limit:
            raise ObjectError("Content-Length", f"objects may be at most {limit} bytes", status=413)
        if md5 is not None:
            md5.update(chunk)
        yield chunk


class ObjectStore:
    """Buckets and objects of one node (central or a site)."""

    def __init__(
        self,
        index: Index,
        backend: BlobBackend,
        clock: HybridClock,
        max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
    ) -> None:
        self.index = index
        self.backend = backend
        self.clock = clock
        self.max_object_bytes = max_object_bytes

    def close(self) -> None:
        self.index.close()
        self.backend.close()

    # -- buckets -----------------------------------------------------------------------

    def create_bucket(self, project_id: str, name: str, policy: Mapping[str, Any]) -> Bucket:
        """A new bucket of ``project_id``; 409 when the name is taken (by anyone)."""
        names.bucket_name(name)
        with self.index.transaction() as conn:
            if conn.execute("SELECT 1 FROM buckets WHERE name = ?", (name,)).fetchone():
                raise ObjectError("name", f"bucket {name!r} exists", 409)
            conn.execute(
                "INSERT INTO buckets (name, project_id, created, policy, orphaned) "
                "VALUES (?, ?, ?, ?, 0)",
                (name, project_id, time.time(), json.dumps(dict(policy), sort_keys=True)),
            )
        return self.bucket(name)

    def ensure_bucket(self, project_id: str, name: str, policy: Mapping[str, Any]) -> Bucket:
        """Create or update a bucket as a site's document gives it (not orphaned)."""
        names.bucket_name(name)
        text = json.dumps(dict(policy), sort_keys=True)
        with self.index.transaction() as conn:
            conn.execute(
                "INSERT INTO buckets (name, project_id, created, policy, orphaned) "
                "VALUES (?, ?, ?, ?, 0) ON CONFLICT(name) DO UPDATE SET "
                "project_id = excluded.project_id, policy = excluded.policy, orphaned = 0",
                (name, project_id, time.time(), text),
            )
        return self.bucket(name)

    def orphan_bucket(self, name: str) -> None:
        """Mark a bucket no longer wanted but still holding objects (read and delete only)."""
        with self.index.transaction() as conn:
            conn.execute("UPDATE buckets SET orphaned = 1 WHERE name = ?", (name,))

    def bucket(self, name: str) -> Bucket:
        row = self.index.one("SELECT * FROM buckets WHERE name = ?", (name,))
        if row is None:
            raise _not_found(name)
        return _bucket(row)

    def buckets(self, project_id: str | None = None) -> list[Bucket]:
        """Every bucket, or those of ``project_id``, by name."""
        if project_id is None:
            rows = self.index.query("SELECT * FROM buckets ORDER BY name")
        else:
            rows = self.index.query(
                "SELECT * FROM buckets WHERE project_id = ? ORDER BY name", (project_id,)
            )
        return [_bucket(r) for r in rows]

    def bucket_usage(self, name: str) -> dict[str, int]:
        row = self.index.one(
            "SELECT count(*) AS objects, coalesce(sum(size), 0) AS bytes FROM versions "
            "WHERE bucket = ? AND deleted = 0",
            (name,),
        )
        assert row is not None
        return {"objects": row["objects"], "bytes": row["bytes"]}

    def delete_bucket(self, name: str) -> None:
        """Remove an empty bucket (its tombstones go with it); 409 while it holds objects."""
        self.bucket(name)
        with self.index.transaction() as conn:
            held = conn.execute(
                "SELECT count(*) FROM versions WHERE bucket = ? AND deleted = 0", (name,)
            ).fetchone()[0]
            if held:
                raise ObjectError("bucket", f"bucket {name!r} is not empty ({held} objects)", 409)
            conn.execute("DELETE FROM versions WHERE bucket = ?", (name,))
            conn.execute("DELETE FROM buckets WHERE name = ?", (name,))

    # -- objects -----------------------------------------------------------------------

    def put(
        self,
        bucket: str,
        key: str,
        chunks: Iterable[bytes],
        meta: Mapping[str, str] | None = None,
        content_length: int | None = None,
        content_md5: str | None = None,
        content_sha256: str | None = None,
    ) -> ObjectVersion:
        """Store an object from a stream of chunks; on any refusal nothing is kept."""
        names.object_key(key)
        meta = names.metadata(meta or {})
        if self.bucket(bucket).orphaned:
            raise ObjectError(
                "bucket", f"bucket {bucket!r} is no longer in this site's desired state", 409
            )
        if content_length is not None and content_length > self.max_object_bytes:
            raise ObjectError(
                "Content-Length", f"objects may be at most {self.max_object_bytes} bytes", 413
            )
        md5_want = _md5_header(content_md5)
        sha_want = _sha256_header(content_sha256)
        md5 = hashlib.md5(usedforsecurity=False) if md5_want is not None else None

        def check(written: Written) -> None:
            if content_length is not None and written.size != content_length:
                raise ObjectError(
                    "Content-Length",
                    f"the body is {written.size} bytes, Content-Length said {content_length}",
                )
            if sha_want is not None and written.sha256 != sha_want:
                raise ObjectError(
                    "X-Content-Sha256", f"the body's sha256 is {written.sha256}, not as declared"
                )
            if md5 is not None and md5.digest() != md5_want:
                raise ObjectError("Content-MD5", "the body's MD5 is not as declared")

        blob_id = uuid.uuid4().hex
        body = _counted(chunks, content_length, self.max_object_bytes, md5)
        written = self.backend.write(blob_id, body, check)
        row = {
            "bucket": bucket,
            "key": key,
            "hlc": self.clock.now(),
            "etag": written.sha256,
            "size": written.size,
            "meta": meta,
            "deleted": 0,
            "blob_id": blob_id,
        }
        return self._commit(row, replaced_check=None)

    def _commit(self, row: dict[str, Any], replaced_check: str | None) -> ObjectVersion:
        """Write ``row`` as the key's version; the blob it replaces is removed after.

        With ``replaced_check`` (the incoming HLC), the row is written only when
        it is newer than what is held; otherwise the new blob is dropped and
        ObjectError 409 raised (the caller's race lost).
        """
        old_blob = None
        try:
            with self.index.transaction() as conn:
                cur = conn.execute(
                    "SELECT hlc, blob_id FROM versions WHERE bucket = ? AND key = ?",
                    (row["bucket"], row["key"]),
                ).fetchone()
                if cur is not None and replaced_check is not None and cur[0] >= replaced_check:
                    raise ObjectError("hlc", "a newer version arrived meanwhile", 409)
                old_blob = cur[1] if cur is not None else None
                self.index.put_version(conn, row)
        except BaseException:
            if row.get("blob_id"):
                self.backend.delete(row["blob_id"])
            raise
        if old_blob and old_blob != row.get("blob_id"):
            self._drop_blob(old_blob)
        held = self.index.version(row["bucket"], row["key"])
        assert held is not None
        return _version(held)

    def _drop_blob(self, blob_id: str) -> None:
        try:
            self.backend.delete(blob_id)
        except Exception as exc:  # an unreferenced blob is garbage, not an error for the caller
            log.warning("replaced blob %s not removed: %s", blob_id, exc)

    def _live(self, bucket: str, key: str) -> dict[str, Any]:
        self.bucket(bucket)
        row = self.index.version(bucket, key)
        if row is None or row["deleted"]:
            raise _not_found(bucket, key)
        return row

    def head(self, bucket: str, key: str) -> ObjectVersion:
        return _version(self._live(bucket, key))

    def get(
        self, bucket: str, key: str, range: tuple[int, int] | None = None
    ) -> tuple[ObjectVersion, Iterator[bytes]]:
        """The version and its bytes; ``range`` is (offset, length). A full read is
        checked against the etag: a mismatch marks the object corrupt and raises
        :class:`ObjectCorrupt` (before the last chunk is yielded)."""
        row = self._live(bucket, key)
        if row["corrupt"]:
            raise ObjectCorrupt(bucket, key, f"object {key!r} is corrupt; awaiting repair")
        version = _version(row)
        if range is not None:
            offset, length = range
            if offset < 0 or length < 0 or offset + length > version.size:
                raise ObjectError("Range", f"range outside the object's {version.size} bytes", 416)
            return version, self.backend.read(row["blob_id"], offset, length)
        return version, self._verified(row)

    def _verified(self, row: dict[str, Any]) -> Iterator[bytes]:
        try:
            chunks = self.backend.read(row["blob_id"])
        except KeyError:
            raise self._bad_read(row, "its blob is missing") from None
        return self._checked(row, chunks)

    def _checked(self, row: dict[str, Any], chunks: Iterator[bytes]) -> Iterator[bytes]:
        """Yields each chunk only after reading the next, so the last one waits for the check."""
        digest = hashlib.sha256()
        size = 0
        held: bytes | None = None
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
            if held is not None:
                yield held
            held = chunk
        if size != row["size"] or digest.hexdigest() != row["etag"]:
            raise self._bad_read(row, f"read {size} bytes hashing to {digest.hexdigest()}")
        if held is not None:
            yield held

    def _mark_corrupt(self, row: dict[str, Any], why: str) -> bool:
        """Mark the version corrupt; False when it was replaced meanwhile (not corrupt:
        its blob went away with it)."""
        with self.index.transaction() as conn:
            cur = conn.execute(
                "UPDATE versions SET corrupt = 1 WHERE bucket = ? AND key = ? AND hlc = ? "
                "AND blob_id = ?",
                (row["bucket"], row["key"], row["hlc"], row["blob_id"]),
            )
        if cur.rowcount != 1:
            return False
        log.error("object %s/%s (%s) is corrupt: %s", row["bucket"], row["key"], row["hlc"], why)
        return True

    def _bad_read(self, row: dict[str, Any], why: str) -> Exception:
        """What a read that did not match the etag raises: corrupt, or replaced meanwhile."""
        if self._mark_corrupt(row, why):
            return ObjectCorrupt(
                row["bucket"],
                row["key"],
                f"object {row['key']!r} is corrupt: its bytes do not match its etag",
            )
        return ObjectError("key", f"object {row['key']!r} was replaced while being read", 409)

    def delete(self, bucket: str, key: str) -> ObjectVersion:
        """Replace the object with a tombstone stamped now; 404 when there is none."""
        self._live(bucket, key)
        return self._commit(self._tombstone(bucket, key, self.clock.now()), replaced_check=None)

    @staticmethod
    def _tombstone(bucket: str, key: str, hlc: str) -> dict[str, Any]:
        return {
            "bucket": bucket,
            "key": key,
            "hlc": hlc,
            "etag": "",
            "size": 0,
            "meta": {},
            "deleted": 1,
            "blob_id": None,
        }

    def list(
        self, bucket: str, prefix: str = "", marker: str = "", limit: int = MAX_LIST
    ) -> tuple[list[ObjectVersion], str | None]:
        """Live objects by key after ``marker``; the next marker when more follow."""
        self.bucket(bucket)
        limit = max(1, min(limit, MAX_LIST))
        rows = self.index.query(
            "SELECT * FROM versions WHERE bucket = ? AND deleted = 0 AND key > ? "
            "AND substr(key, 1, ?) = ? ORDER BY key LIMIT ?",
            (bucket, marker, len(prefix), prefix, limit + 1),
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return [_version(r) for r in rows], (rows[-1]["key"] if more else None)

    # -- the replication contract ------------------------------------------------------

    def changes_since(self, bucket: str, seq: int, limit: int) -> list[ObjectVersion]:
        """Versions changed after ``seq`` (tombstones included), by seq."""
        rows = self.index.query(
            "SELECT * FROM versions WHERE bucket = ? AND seq > ? ORDER BY seq LIMIT ?",
            (bucket, seq, max(1, limit)),
        )
        return [_version(r) for r in rows]

    def read_version(
        self, v: ObjectVersion, offset: int = 0, length: int | None = None
    ) -> Iterator[bytes]:
        """The bytes of version ``v`` while it is the one held; 409 once superseded."""
        row = self.index.version(v.bucket, v.key)
        if row is None or row["hlc"] != v.hlc:
            raise ObjectError("hlc", f"version {v.hlc} of {v.key!r} is no longer held", 409)
        if row["deleted"]:
            return iter(())
        if row["corrupt"]:
            raise ObjectCorrupt(v.bucket, v.key, f"object {v.key!r} is corrupt; awaiting repair")
        return self.backend.read(row["blob_id"], offset, length)

    def apply_replica(self, v: ObjectVersion, chunks: Iterable[bytes]) -> bool:
        """Take a replica's version if its HLC is higher than what is held.

        Bytes are checked against ``v.etag`` and ``v.size`` (mismatch:
        :class:`ObjectCorrupt`, nothing kept). Returns whether anything changed.
        :meth:`prepare_replica` then :meth:`commit_replicas` of that one version.
        """
        prepared = self.prepare_replica(v, chunks)
        return prepared is not None and self.commit_replicas([prepared])[0]

    def prepare_replica(self, v: ObjectVersion, chunks: Iterable[bytes]) -> PreparedReplica | None:
        """The first half of applying a replica: checks, and the blob written and
        etag-checked but not yet durably named nor referenced by the index, so
        not visible. None when a version as new is already held (nothing to do).
        Hand the result to :meth:`commit_replicas`, alone or with others; until
        then a crash leaves at most an unreferenced blob."""
        meta = self._replica_checks(v)
        held = self.index.version(v.bucket, v.key)
        if held is not None and held["hlc"] >= v.hlc:
            return None
        if v.deleted:
            return PreparedReplica(v, self._tombstone(v.bucket, v.key, v.hlc))
        blob_id = _replica_blob_id()
        self.backend.write(blob_id, chunks, self._etag_check(v), durable=False)
        return PreparedReplica(v, self._replica_row(v, meta, blob_id))

    def _replica_checks(self, v: ObjectVersion) -> dict[str, str]:
        """A replica's names and stamp checked (ValueError, ObjectError); its metadata."""
        parse(v.hlc)
        self.bucket(v.bucket)
        names.object_key(v.key)
        meta = names.metadata(v.meta)
        self.clock.observe(v.hlc)
        return meta

    @staticmethod
    def _replica_row(v: ObjectVersion, meta: dict[str, str], blob_id: str) -> dict[str, Any]:
        return {
            "bucket": v.bucket,
            "key": v.key,
            "hlc": v.hlc,
            "etag": v.etag,
            "size": v.size,
            "meta": meta,
            "deleted": 0,
            "blob_id": blob_id,
        }

    def prepare_replica_file(self, v: ObjectVersion, staged: ReplicaFile) -> PreparedReplica | None:
        """:meth:`prepare_replica` for bytes received into ``staged`` (complete): checked
        against ``v`` (size and the sha256 hashed as they arrived; mismatch:
        :class:`ObjectCorrupt`, and the file is removed), then the file itself becomes
        the blob. None (file removed) when a version as new is already held."""
        meta = self._replica_checks(v)
        held = self.index.version(v.bucket, v.key)
        if held is not None and held["hlc"] >= v.hlc:
            staged.discard()
            return None
        try:
            self._etag_check(v)(staged.written())
            staged.finish()
        except BaseException:
            staged.discard()
            raise
        blob_id = _replica_blob_id()
        self.backend.adopt(blob_id, staged.path, staged.chunks, staged.written())
        return PreparedReplica(v, self._replica_row(v, meta, blob_id))

    def commit_replicas(self, prepared: Sequence[PreparedReplica]) -> list[bool]:
        """The second half, for many replicas at once (a group commit): their blobs
        made durable (one directory fsync per directory), then one index
        transaction writing each version that is still newer than what is held
        (last writer wins, in order). Returns, per replica, whether it changed
        anything; a replica that lost has its blob removed. When this raises,
        nothing of the batch is visible and its blobs are removed."""
        blobs = [p.row["blob_id"] for p in prepared if p.row["blob_id"]]
        changed: list[bool] = []
        drop: list[str] = []
        try:
            self.backend.sync(blobs)  # bytes first: the index never names a lost blob
            with self.index.transaction() as conn:
                for p in prepared:
                    cur = conn.execute(
                        "SELECT hlc, blob_id FROM versions WHERE bucket = ? AND key = ?",
                        (p.row["bucket"], p.row["key"]),
                    ).fetchone()
                    if cur is not None and cur[0] >= p.row["hlc"]:
                        changed.append(False)  # a newer version won the race
                        if p.row["blob_id"]:
                            drop.append(p.row["blob_id"])
                        continue
                    if cur is not None and cur[1]:
                        drop.append(cur[1])
                    self.index.put_version(conn, p.row)
                    changed.append(True)
        except BaseException:
            for blob_id in blobs:
                self._drop_blob(blob_id)
            raise
        for blob_id in drop:
            self._drop_blob(blob_id)
        return changed

    @staticmethod
    def _etag_check(v: ObjectVersion) -> Any:
        def check(written: Written) -> None:
            if written.sha256 != v.etag or written.size != v.size:
                raise ObjectCorrupt(
                    v.bucket,
                    v.key,
                    f"replica bytes of {v.key!r} ({written.size} bytes, sha256 "
                    f"{written.sha256}) do not match version {v.hlc} ({v.size}, {v.etag})",
                )

        return check

    def scrub(self, limit: int | None = None) -> list[tuple[str, str]]:
        """Re-hash stored blobs, least recently scrubbed first; mark and return the corrupt."""
        sql = "SELECT * FROM versions WHERE deleted = 0 AND corrupt = 0 ORDER BY scrubbed, seq"
        rows = self.index.query(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ())
        found = []
        for row in rows:
            digest, size = hashlib.sha256(), 0
            try:
                for chunk in self.backend.read(row["blob_id"]):
                    digest.update(chunk)
                    size += len(chunk)
            except KeyError:
                size = -1
            if size != row["size"] or digest.hexdigest() != row["etag"]:
                why = f"scrub read {size} bytes hashing to {digest.hexdigest()}"
                if self._mark_corrupt(row, why):
                    found.append((row["bucket"], row["key"]))
                continue
            with self.index.transaction() as conn:
                conn.execute(
                    "UPDATE versions SET scrubbed = ? WHERE bucket = ? AND key = ? AND hlc = ?",
                    (time.time(), row["bucket"], row["key"], row["hlc"]),
                )
        return found

    def repair(self, bucket: str, key: str, v: ObjectVersion, chunks: Iterable[bytes]) -> None:
        """Replace the held blob of ``bucket/key`` with good bytes of the same version
        (etag-checked); a newer ``v`` is applied as a replica, an older one refused (409)."""
        row = self.index.version(bucket, key)
        if row is None or (v.bucket, v.key) != (bucket, key):
            raise _not_found(bucket, key)
        if v.hlc > row["hlc"]:
            self.apply_replica(v, chunks)
            return
        if v.hlc < row["hlc"] or v.deleted or row["deleted"]:
            raise ObjectError("hlc", f"version {v.hlc} is not the one held ({row['hlc']})", 409)
        blob_id = uuid.uuid4().hex
        self.backend.write(blob_id, chunks, self._etag_check(v))
        try:
            with self.index.transaction() as conn:
                cur = conn.execute(
                    "UPDATE versions SET blob_id = ?, corrupt = 0, scrubbed = ? "
                    "WHERE bucket = ? AND key = ? AND hlc = ?",
                    (blob_id, time.time(), bucket, key, v.hlc),
                )
                if cur.rowcount != 1:
                    raise ObjectError("hlc", "the object changed meanwhile", 409)
        except BaseException:
            self.backend.delete(blob_id)
            raise
        self._drop_blob(row["blob_id"])
        log.info("object %s/%s (%s) repaired", bucket, key, v.hlc)

    def corrupt(self) -> list[ObjectVersion]:
        """Versions marked corrupt, awaiting repair from a replica."""
        return [
            _version(r)
            for r in self.index.query(
                "SELECT * FROM versions WHERE corrupt = 1 ORDER BY bucket, key"
            )
        ]


def _replica_blob_id() -> str:
    """A new blob id whose first two digits (the files backend's directory) change once
    a minute: replicas committed together mostly share a directory (one fsync)."""
    return f"{int(time.time()) // 60 % 256:02x}{uuid.uuid4().hex[2:]}"


def _md5_header(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 16:
        raise ObjectError("Content-MD5", "Content-MD5 must be the base64 of a 16-byte MD5")
    return raw


def _sha256_header(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ObjectError("X-Content-Sha256", "X-Content-Sha256 must be 64 hex digits")
    return text
