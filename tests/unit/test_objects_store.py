# ruff: noqa: F811  (the store and ceph_conf fixtures are imported from objects_support)
"""ObjectStore over the files backend and a real Ceph RADOS pool: the same suite for both."""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.objects.errors import ObjectCorrupt, ObjectError
from edged.objects.hlc import HybridClock, format_stamp
from edged.objects.index import Index
from edged.objects.store import ObjectStore, ObjectVersion
from tests.unit.objects_support import ceph_conf, flip_byte, store, stored_names  # noqa: F401

BIG = bytes(i * 31 % 251 for i in range(300 * 1024 + 7))  # spans several chunks and pieces


def chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def read(s: ObjectStore, bucket: str, key: str, rng: tuple[int, int] | None = None) -> bytes:
    return b"".join(s.get(bucket, key, rng)[1])


def nothing_kept(s: ObjectStore, tmp_path: Path) -> None:
    assert list(s.backend.blob_ids()) == []
    assert stored_names(s.backend) == []  # no temp file, no RADOS piece
    assert s.index.query("SELECT * FROM versions") == []


@pytest.fixture
def b(store: ObjectStore) -> str:
    store.create_bucket("p1", "photos", {"sites": ["site-a"]})
    return "photos"


def test_put_get_head(store: ObjectStore, b: str) -> None:
    v = store.put(b, "a/b.jpg", chunks(BIG), {"Color": "red"}, content_length=len(BIG))
    assert v.etag == hashlib.sha256(BIG).hexdigest()
    assert (v.size, v.meta, v.deleted) == (len(BIG), {"color": "red"}, False)
    assert read(store, b, "a/b.jpg") == BIG
    assert store.head(b, "a/b.jpg") == v


def test_empty_object(store: ObjectStore, b: str) -> None:
    v = store.put(b, "empty", [], content_length=0)
    assert v.size == 0
    assert read(store, b, "empty") == b""


def test_range_reads(store: ObjectStore, b: str) -> None:
    store.put(b, "k", chunks(BIG))
    assert read(store, b, "k", (0, 10)) == BIG[:10]
    assert read(store, b, "k", (65530, 70000)) == BIG[65530 : 65530 + 70000]
    assert read(store, b, "k", (len(BIG) - 1, 1)) == BIG[-1:]
    with pytest.raises(ObjectError) as exc:
        store.get(b, "k", (len(BIG), 1))
    assert exc.value.status == 416


def test_overwrite_keeps_one_blob(store: ObjectStore, b: str) -> None:
    first = store.put(b, "k", [b"one"])
    second = store.put(b, "k", [b"two"])
    assert second.hlc > first.hlc and second.seq > first.seq
    assert read(store, b, "k") == b"two"
    assert len(list(store.backend.blob_ids())) == 1


def test_delete_leaves_a_tombstone(store: ObjectStore, b: str) -> None:
    store.put(b, "k", [b"x"])
    tomb = store.delete(b, "k")
    assert tomb.deleted and tomb.size == 0
    assert list(store.backend.blob_ids()) == []
    for call in (
        lambda: store.head(b, "k"),
        lambda: store.get(b, "k"),
        lambda: store.delete(b, "k"),
    ):
        with pytest.raises(ObjectError) as exc:
            call()
        assert exc.value.status == 404
    assert store.list(b) == ([], None)


def test_list_prefix_and_pagination(store: ObjectStore, b: str) -> None:
    for key in ("a/1", "a/2", "a/3", "b/1", "a/4"):
        store.put(b, key, [key.encode()])
    store.delete(b, "a/3")
    page, marker = store.list(b, prefix="a/", limit=2)
    assert [v.key for v in page] == ["a/1", "a/2"] and marker == "a/2"
    page, marker = store.list(b, prefix="a/", marker=marker, limit=2)
    assert [v.key for v in page] == ["a/4"] and marker is None
    assert [v.key for v in store.list(b)[0]] == ["a/1", "a/2", "a/4", "b/1"]


@pytest.mark.parametrize(
    ("kwargs", "field", "status"),
    [
        ({"content_length": len(BIG) - 1}, "Content-Length", 400),  # longer than declared
        ({"content_length": len(BIG) + 1}, "Content-Length", 400),  # shorter than declared
        ({"content_sha256": "0" * 64}, "X-Content-Sha256", 400),
        ({"content_md5": base64.b64encode(b"0" * 16).decode()}, "Content-MD5", 400),
        ({"content_md5": "not base64"}, "Content-MD5", 400),
    ],
)
def test_lies_leave_nothing(
    store: ObjectStore,
    b: str,
    tmp_path: Path,
    kwargs: dict,
    field: str,
    status: int,
) -> None:
    with pytest.raises(ObjectError) as exc:
        store.put(b, "k", chunks(BIG), **kwargs)
    assert (exc.value.field, exc.value.status) == (field, status)
    nothing_kept(store, tmp_path)


def test_true_checksums_pass(store: ObjectStore, b: str) -> None:
    md5 = base64.b64encode(hashlib.md5(BIG).digest()).decode()
    sha = hashlib.sha256(BIG).hexdigest()
    v = store.put(b, "k", chunks(BIG), content_length=len(BIG), content_md5=md5, content_sha256=sha)
    assert v.etag == sha


def test_size_limit_is_413(store: ObjectStore, b: str, tmp_path: Path) -> None:
    store.max_object_bytes = 1000
    with pytest.raises(ObjectError) as exc:
        store.put(b, "k", chunks(BIG))
    assert exc.value.status == 413
    with pytest.raises(ObjectError) as exc:
        store.put(b, "k", [b""], content_length=1001)
    assert exc.value.status == 413
    nothing_kept(store, tmp_path)


def test_bad_names_and_metadata(store: ObjectStore, b: str, tmp_path: Path) -> None:
    for key, meta in (
        ("../etc/passwd", {}),
        ("a\x00b", {}),
        ("k", {"bad_name": "x"}),
        ("k", {"big": "x" * 3000}),
    ):
        with pytest.raises(ObjectError) as exc:
            store.put(b, key, [b"data"], meta)
        assert exc.value.status == 400
    with pytest.raises(ObjectError) as exc:
        store.put("nope", "k", [b"data"])
    assert exc.value.status == 404
    nothing_kept(store, tmp_path)


def test_buckets(store: ObjectStore) -> None:
    store.create_bucket("p1", "one", {})
    store.create_bucket("p2", "two", {"peers": True})
    with pytest.raises(ObjectError) as exc:
        store.create_bucket("p2", "one", {})
    assert exc.value.status == 409
    assert [x.name for x in store.buckets("p2")] == ["two"]
    assert [x.name for x in store.buckets()] == ["one", "two"]
    store.put("one", "k", [b"x"])
    with pytest.raises(ObjectError) as exc:
        store.delete_bucket("one")
    assert exc.value.status == 409
    store.delete("one", "k")
    store.delete_bucket("one")
    assert [x.name for x in store.buckets()] == ["two"]


def test_orphaned_bucket_refuses_writes_keeps_data(store: ObjectStore, b: str) -> None:
    store.put(b, "k", [b"x"])
    store.orphan_bucket(b)
    with pytest.raises(ObjectError) as exc:
        store.put(b, "k2", [b"y"])
    assert exc.value.status == 409
    assert read(store, b, "k") == b"x"
    store.ensure_bucket("p1", b, {})
    store.put(b, "k2", [b"y"])


# -- replication contract ------------------------------------------------------------------


def stamp(ms: int, node: str = "site-b", counter: int = 0) -> str:
    return format_stamp(ms, counter, node)


def version(key: str, data: bytes, hlc: str, deleted: bool = False) -> ObjectVersion:
    etag = "" if deleted else hashlib.sha256(data).hexdigest()
    return ObjectVersion("photos", key, hlc, etag, 0 if deleted else len(data), {}, deleted, 0)


def test_changes_since_orders_by_seq_with_tombstones(store: ObjectStore, b: str) -> None:
    store.put(b, "a", [b"1"])
    store.put(b, "b", [b"2"])
    store.put(b, "a", [b"3"])
    store.delete(b, "b")
    changes = store.changes_since(b, 0, 10)
    assert [(c.key, c.deleted) for c in changes] == [("a", False), ("b", True)]
    assert changes[0].seq < changes[1].seq
    assert store.changes_since(b, changes[0].seq, 10) == changes[1:]
    assert store.changes_since(b, changes[-1].seq, 10) == []
    assert store.changes_since(b, 0, 1) == changes[:1]


def test_read_version(store: ObjectStore, b: str) -> None:
    v = store.put(b, "k", chunks(BIG))
    assert b"".join(store.read_version(v)) == BIG
    assert b"".join(store.read_version(v, 100, 50)) == BIG[100:150]
    store.put(b, "k", [b"newer"])
    with pytest.raises(ObjectError) as exc:
        store.read_version(v)
    assert exc.value.status == 409


def test_apply_replica_last_writer_wins(store: ObjectStore, b: str) -> None:
    far_future = 2**47
    newer = version("k", b"from b", stamp(far_future))
    assert store.apply_replica(newer, [b"from b"])
    assert read(store, b, "k") == b"from b"
    assert store.head(b, "k").hlc == newer.hlc
    # The clock observed it: a local write now sorts after it.
    assert store.put(b, "k", [b"local"]).hlc > newer.hlc
    assert not store.apply_replica(newer, [b"from b"])  # older now: no change
    assert read(store, b, "k") == b"local"
    held = store.head(b, "k")
    assert not store.apply_replica(held, [b"local"])  # equal hlc: no-op


def test_equal_wall_time_ties_break_by_node(store: ObjectStore, b: str) -> None:
    assert store.apply_replica(version("k", b"a", stamp(1000, "site-a")), [b"a"])
    assert store.apply_replica(version("k", b"c", stamp(1000, "site-c")), [b"c"])
    assert not store.apply_replica(version("k", b"b", stamp(1000, "site-b")), [b"b"])
    assert read(store, b, "k") == b"c"


def test_tombstone_is_not_resurrected(store: ObjectStore, b: str) -> None:
    old = version("k", b"old copy", stamp(1000))
    assert store.apply_replica(old, [b"old copy"])
    assert store.apply_replica(version("k", b"", stamp(2000), deleted=True), [])
    with pytest.raises(ObjectError):
        store.head(b, "k")
    assert not store.apply_replica(old, [b"old copy"])
    with pytest.raises(ObjectError):
        store.head(b, "k")
    assert list(store.backend.blob_ids()) == []
    # A tombstone for a key never seen is kept too, so the old copy stays dead.
    assert store.apply_replica(version("j", b"", stamp(3000), deleted=True), [])
    assert not store.apply_replica(version("j", b"x", stamp(2500)), [b"x"])
    assert [c.key for c in store.changes_since(b, 0, 10) if c.deleted] == ["k", "j"]


def test_replica_with_bad_metadata_leaves_nothing(
    store: ObjectStore, b: str, tmp_path: Path
) -> None:
    v = version("k", b"x", stamp(1000))
    bad = ObjectVersion(v.bucket, v.key, v.hlc, v.etag, v.size, {"Bad Name": "x"}, False, 0)
    with pytest.raises(ObjectError):
        store.apply_replica(bad, [b"x"])
    with pytest.raises(ValueError, match="HLC stamp"):
        store.apply_replica(ObjectVersion(v.bucket, v.key, "junk", v.etag, 1, {}, False, 0), [b"x"])
    nothing_kept(store, tmp_path)


def test_overwrites_and_deletes_leave_no_pieces(store: ObjectStore, b: str) -> None:
    store.put(b, "k", chunks(BIG))
    store.put(b, "k", chunks(BIG[:1000]))
    store.put(b, "j", chunks(BIG))
    store.delete(b, "j")
    assert len(stored_names(store.backend)) == len(stored_names_of_one(store, b, "k"))


def stored_names_of_one(s: ObjectStore, bucket: str, key: str) -> list[str]:
    blob = blob_of(s, bucket, key)
    return [n for n in stored_names(s.backend) if blob in n]


def test_replica_bytes_not_matching_etag(store: ObjectStore, b: str, tmp_path: Path) -> None:
    v = version("k", b"the real bytes", stamp(1000))
    with pytest.raises(ObjectCorrupt):
        store.apply_replica(v, [b"the REAL bytes"])
    nothing_kept(store, tmp_path)


def blob_of(s: ObjectStore, bucket: str, key: str) -> str:
    row = s.index.version(bucket, key)
    assert row is not None
    return row["blob_id"]


def test_full_read_detects_a_flipped_byte(store: ObjectStore, b: str) -> None:
    v = store.put(b, "k", chunks(BIG))
    flip_byte(store.backend, blob_of(store, b, "k"), 200 * 1024)
    got = bytearray()
    with pytest.raises(ObjectCorrupt):
        for chunk in store.get(b, "k")[1]:
            got += chunk
    assert len(got) < len(BIG)  # the last chunk is held back until the check
    assert store.corrupt() == [v]
    with pytest.raises(ObjectCorrupt):
        store.get(b, "k")


def test_small_object_corruption_is_found_before_any_byte(store: ObjectStore, b: str) -> None:
    store.put(b, "k", [b"hello world"])
    flip_byte(store.backend, blob_of(store, b, "k"), 3)
    _, it = store.get(b, "k")
    with pytest.raises(ObjectCorrupt):
        next(it)


def test_scrub_and_repair(store: ObjectStore, b: str) -> None:
    good = store.put(b, "good", [b"fine"])
    bad = store.put(b, "bad", chunks(BIG))
    assert store.scrub() == []
    flip_byte(store.backend, blob_of(store, b, "bad"), 5)
    assert store.scrub() == [(b, "bad")]
    assert store.corrupt() == [bad]
    assert store.scrub() == []  # marked once
    with pytest.raises(ObjectCorrupt):
        store.repair(b, "bad", bad, [b"not it"])
    assert store.corrupt() == [bad]
    store.repair(b, "bad", bad, chunks(BIG))
    assert store.corrupt() == []
    assert read(store, b, "bad") == BIG
    assert store.head(b, "bad") == bad  # same version, same seq: nothing to replicate
    assert read(store, b, "good") == b"fine" and good.seq < bad.seq
    assert len(list(store.backend.blob_ids())) == 2


def test_index_survives_reopen(tmp_path: Path) -> None:
    from edged.objects.backend_files import FileBackend

    s = ObjectStore(Index(tmp_path / "i.db"), FileBackend(tmp_path / "b"), HybridClock("n1"))
    s.create_bucket("p", "bkt", {})
    v = s.put("bkt", "k", [b"durable"])
    s.close()
    s = ObjectStore(Index(tmp_path / "i.db"), FileBackend(tmp_path / "b"), HybridClock("n1"))
    assert s.head("bkt", "k") == v
    assert s.put("bkt", "k2", [b"x"]).seq == v.seq + 1
    s.close()


def test_files_backend_sweeps_a_crashed_write(tmp_path: Path) -> None:
    from edged.objects.backend_files import FileBackend

    backend = FileBackend(tmp_path / "b")

    def crash() -> Iterator[bytes]:
        yield b"half"
        raise KeyboardInterrupt  # the process dies mid-write

    with pytest.raises(KeyboardInterrupt):
        backend.write("blob00000001", crash())
    assert stored_names_files(backend) == []
    # A temp file a real crash (no unwinding) leaves is removed when the store opens.
    (tmp_path / "b" / "bl").mkdir(exist_ok=True)
    (tmp_path / "b" / "bl" / ".tmp-blob00000002-x").write_bytes(b"partial")
    backend = FileBackend(tmp_path / "b")
    assert stored_names_files(backend) == [] and list(backend.blob_ids()) == []


def stored_names_files(backend) -> list[str]:  # type: ignore[no-untyped-def]
    return [p.name for p in backend.root.rglob("*") if p.is_file()]


def test_lost_blob_is_found_by_scrub(store: ObjectStore, b: str) -> None:
    v = store.put(b, "k", chunks(BIG))
    store.backend.delete(blob_of(store, b, "k"))  # lost behind the store's back
    assert store.scrub() == [(b, "k")]
    assert store.corrupt() == [v]
    store.repair(b, "k", v, chunks(BIG))
    assert read(store, b, "k") == BIG


def test_overwrite_during_a_read_is_not_corruption(store: ObjectStore, b: str) -> None:
    store.put(b, "k", chunks(BIG))
    _, it = store.get(b, "k")
    first = next(it)
    store.put(b, "k", [b"newer"])  # removes the blob being read
    try:
        got = first + b"".join(it)
    except ObjectError as exc:  # RADOS: the pieces are gone
        assert exc.status == 409
    else:  # files: the open file outlives its name
        assert got == BIG
    assert store.corrupt() == []
    assert read(store, b, "k") == b"newer"


# -- group commit of replicas ------------------------------------------------------------


def test_prepared_replicas_are_invisible_until_committed_together(
    store: ObjectStore, b: str
) -> None:
    store.put(b, "old", [b"replaced by the batch"])
    items = [(f"k{i}", b"x" * i, False) for i in range(1, 6)]
    items += [("old", b"newer", False), ("gone", b"", True)]
    prepared = []
    for n, (key, data, deleted) in enumerate(items):
        v = version(key, data, stamp(2**47 + n), deleted)
        prepared.append(store.prepare_replica(v, [data] if data else []))
    assert all(p is not None for p in prepared)
    # Written and checked, but in no index row: nothing of the batch is visible yet.
    assert [o.key for o in store.list(b)[0]] == ["old"]
    assert read(store, b, "old") == b"replaced by the batch"
    assert store.index.version(b, "gone") is None
    assert store.commit_replicas([p for p in prepared if p is not None]) == [True] * 7
    assert sorted(o.key for o in store.list(b)[0]) == ["k1", "k2", "k3", "k4", "k5", "old"]
    assert read(store, b, "k3") == b"xxx" and read(store, b, "old") == b"newer"
    assert store.index.version(b, "gone")["deleted"]
    assert len(list(store.backend.blob_ids())) == 6  # the replaced blob is gone


def test_a_batch_keeps_last_writer_wins_within_itself(store: ObjectStore, b: str) -> None:
    newer = store.prepare_replica(version("k", b"newer", stamp(2000)), [b"newer"])
    older = store.prepare_replica(version("k", b"older", stamp(1000)), [b"older"])
    tomb = store.prepare_replica(version("k", b"", stamp(1500), deleted=True), [])
    assert newer is not None and older is not None and tomb is not None
    assert store.commit_replicas([newer, older, tomb]) == [True, False, False]
    assert read(store, b, "k") == b"newer"
    assert len(list(store.backend.blob_ids())) == 1  # the loser's blob was removed
    assert store.prepare_replica(version("k", b"older", stamp(1000)), [b"older"]) is None


def test_a_failed_batch_commit_leaves_nothing(
    store: ObjectStore, b: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared = [
        store.prepare_replica(version(f"k{i}", b"data", stamp(1000 + i)), [b"data"])
        for i in range(3)
    ]

    def full_disk(conn, row):  # type: ignore[no-untyped-def]
        raise OSError("database or disk is full")

    monkeypatch.setattr(store.index, "put_version", full_disk)
    with pytest.raises(OSError):
        store.commit_replicas([p for p in prepared if p is not None])
    monkeypatch.undo()
    nothing_kept(store, tmp_path)


CRASH_AFTER_PREPARE = """
import os, sys
from pathlib import Path
from edged.objects.backend_files import FileBackend
from edged.objects.hlc import HybridClock
from edged.objects.index import Index
from edged.objects.store import ObjectStore, ObjectVersion
root = Path(sys.argv[1])
s = ObjectStore(Index(root / "index.db"), FileBackend(root / "blobs"), HybridClock("central"))
v = ObjectVersion("photos", "k", sys.argv[2], sys.argv[3], 5, {}, False, 0)
assert s.prepare_replica(v, [b"bytes"]) is not None
os._exit(9)  # killed between the blob write and the index commit
"""


def test_a_crash_between_blob_and_commit_leaves_no_visible_object(tmp_path: Path) -> None:
    import subprocess
    import sys

    from edged.objects.backend_files import FileBackend

    s = ObjectStore(Index(tmp_path / "index.db"), FileBackend(tmp_path / "blobs"), HybridClock("c"))
    s.create_bucket("p1", "photos", {})
    s.close()
    v = version("k", b"bytes", stamp(1000))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    run = [sys.executable, "-c", CRASH_AFTER_PREPARE, str(tmp_path), v.hlc, v.etag]
    assert subprocess.run(run, env=env, check=False).returncode == 9
    s = ObjectStore(Index(tmp_path / "index.db"), FileBackend(tmp_path / "blobs"), HybridClock("c"))
    with pytest.raises(ObjectError) as exc:
        s.head("photos", "k")
    assert exc.value.status == 404
    assert s.changes_since("photos", 0, 10) == []
    # The written blob is an unreferenced leftover (garbage), never a partial object.
    assert len(list(s.backend.blob_ids())) == 1
    assert s.apply_replica(v, [b"bytes"])  # offered again, it is taken
    assert read(s, "photos", "k") == b"bytes"
    s.close()


def staged_file(tmp_path: Path, data: bytes, cut_at: int | None = None):  # type: ignore[no-untyped-def]
    """A ReplicaFile holding ``data`` (reopened after ``cut_at`` bytes: a resumed transfer)."""
    from edged.objects.replica_file import ReplicaFile

    path = tmp_path / "staged.part"
    f = ReplicaFile(path, len(data))
    if cut_at is not None:
        f.append(data[:cut_at])
        f.close()
        f = ReplicaFile(path, len(data))
        assert f.size == cut_at  # resumes after the staged prefix
    f.append(data[f.size :])
    return f


def test_a_received_file_becomes_the_blob(store: ObjectStore, b: str, tmp_path: Path) -> None:
    staged = staged_file(tmp_path, BIG, cut_at=100_000)
    prepared = store.prepare_replica_file(version("k", BIG, stamp(1000)), staged)
    assert prepared is not None and not staged.path.exists()
    assert store.list(b)[0] == []  # not visible before the commit
    assert store.commit_replicas([prepared]) == [True]
    assert read(store, b, "k") == BIG
    # An older version arriving as a file is dropped with its file.
    older = staged_file(tmp_path, b"old")
    assert store.prepare_replica_file(version("k", b"old", stamp(500)), older) is None
    assert not older.path.exists()


def test_a_received_file_not_matching_the_etag_leaves_nothing(
    store: ObjectStore, b: str, tmp_path: Path
) -> None:
    staged = staged_file(tmp_path, BIG)
    with pytest.raises(ObjectCorrupt):
        store.prepare_replica_file(version("k", BIG[:-1] + b"?", stamp(1000)), staged)
    assert not staged.path.exists()
    nothing_kept(store, tmp_path)


def test_a_file_staged_on_another_filesystem_is_copied(tmp_path: Path) -> None:
    from edged.objects.backend_files import FileBackend

    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        from tests.host import skip

        skip("needs /dev/shm on a filesystem other than the test's tmp dir")
    s = ObjectStore(Index(tmp_path / "i.db"), FileBackend(tmp_path / "b"), HybridClock("c"))
    s.create_bucket("p1", "photos", {})
    with tempfile.TemporaryDirectory(dir=shm) as other:
        staged = staged_file(Path(other), BIG)
        prepared = s.prepare_replica_file(version("k", BIG, stamp(1000)), staged)
        assert prepared is not None and not staged.path.exists()
    assert s.commit_replicas([prepared]) == [True]
    assert read(s, "photos", "k") == BIG
    s.close()
