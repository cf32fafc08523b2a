"""What replication needs from an object store, and the few decisions made on top of it.

The store (``edged.objects.store.ObjectStore``) is the only implementation;
the Protocol names the methods replication calls so that the sender and the
receiver take nothing else from it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol


class ReplicaStore(Protocol):
    def changes_since(self, bucket: str, seq: int, limit: int) -> list[Any]: ...

    def read_version(
        self, v: Any, offset: int = 0, length: int | None = None
    ) -> Iterator[bytes]: ...

    def apply_replica(self, v: Any, chunks: Iterable[bytes]) -> bool: ...

    def prepare_replica(self, v: Any, chunks: Iterable[bytes]) -> Any: ...

    def prepare_replica_file(self, v: Any, staged: Any) -> Any: ...

    def commit_replicas(self, prepared: Any) -> list[bool]: ...

    def scrub(self, limit: int | None = None) -> list[tuple[str, str]]: ...

    def repair(self, bucket: str, key: str, v: Any, chunks: Iterable[bytes]) -> None: ...

    def corrupt(self) -> list[Any]: ...

    index: Any  # edged.objects.index.Index: ``version(bucket, key)`` -> row incl. tombstones


def make_version(fields: Mapping[str, Any], seq: int = 0) -> Any:
    """An ObjectVersion from validated wire fields (``seq`` 0: the sender's is not ours)."""
    from edged.objects.store import ObjectVersion

    return ObjectVersion(
        bucket=fields["bucket"],
        key=fields["key"],
        hlc=fields["hlc"],
        etag=fields["etag"],
        size=fields["size"],
        meta=dict(fields["meta"]),
        deleted=bool(fields["deleted"]),
        seq=seq,
    )


def held(store: ReplicaStore, bucket: str, key: str) -> dict[str, Any] | None:
    """The index row of the version held for bucket/key, tombstones included (or None)."""
    return store.index.version(bucket, key)


def wants(store: ReplicaStore, v: Any) -> bool:
    """Whether an offered version could change this store (newer, or our copy of it is corrupt)."""
    row = held(store, v.bucket, v.key)
    if row is None or row["hlc"] < v.hlc:
        return True
    return row["hlc"] == v.hlc and not row["deleted"] and bool(row["corrupt"])


def good_version(store: ReplicaStore, bucket: str, key: str) -> Any:
    """This store's version of bucket/key (a tombstone too), unless its bytes are corrupt."""
    row = held(store, bucket, key)
    if row is None or (not row["deleted"] and row["corrupt"]):
        return None
    return make_version({**row, "meta": json.loads(row["meta"])}, row["seq"])


def checksum_refusal(exc: BaseException) -> bool:
    """Whether ``apply_replica`` refused the bytes because they do not hash to the etag."""
    from edged.objects.errors import ObjectCorrupt

    return isinstance(exc, ObjectCorrupt)


REPAIRED = "repaired"


def prepare_or_repair(store: ReplicaStore, v: Any, chunks: Iterable[bytes]) -> Any:
    """The blob of a replica written for a group commit (None: nothing to apply); the
    same version over a corrupt local copy is repaired at once (``REPAIRED``)."""
    row = held(store, v.bucket, v.key)
    if row is not None and row["hlc"] == v.hlc and row["corrupt"] and not v.deleted:
        store.repair(v.bucket, v.key, v, chunks)
        return REPAIRED
    return store.prepare_replica(v, chunks)


def prepare_file_or_repair(store: ReplicaStore, v: Any, staged: Any) -> Any:
    """:func:`prepare_or_repair` for bytes received into a ``ReplicaFile`` (complete)."""
    row = held(store, v.bucket, v.key)
    if row is not None and row["hlc"] == v.hlc and row["corrupt"] and not v.deleted:
        staged.finish()
        store.repair(v.bucket, v.key, v, staged.chunks())
        staged.discard()
        return REPAIRED
    return store.prepare_replica_file(v, staged)


def apply_or_repair(store: ReplicaStore, v: Any, chunks: Iterable[bytes]) -> bool:
    """Apply a replica by LWW; the same version over a corrupt local copy repairs it."""
    row = held(store, v.bucket, v.key)
    if row is not None and row["hlc"] == v.hlc and row["corrupt"] and not v.deleted:
        store.repair(v.bucket, v.key, v, chunks)
        return True
    return bool(store.apply_replica(v, chunks))
