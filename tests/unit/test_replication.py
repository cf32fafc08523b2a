"""Object replication: the wire contract, and sender/receiver/repairer on real stores.

Two real ObjectStores (files backend) in temp dirs, a real Receiver (CURVE
ROUTER, ZAP on its context) and a real Sender (CURVE DEALER) on loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from edged.curvekeys import new_keypair
from edged.objects.stores import open_store
from edged.replication import protocol as p
from edged.replication.cursors import CursorStore
from edged.replication.peers import PeerKeys
from edged.replication.receiver import Receiver, staging_name
from edged.replication.repair import Repairer
from edged.replication.sender import Channel, Sender, Settings, Target
from edged.wire import FrameError

ETAG = "a" * 64
HLC = "0190f1e2a3b4000000-site-a"


def offer(**over: object) -> dict:
    return {
        "id": 1,
        "site": "site-a",
        "bucket": "bkt1",
        "key": "k",
        "hlc": HLC,
        "etag": ETAG,
        "size": 3,
        "meta": {},
        "deleted": False,
        **over,
    }


def raw(kind: str, body: object, *data: bytes) -> list[bytes]:
    return [kind.encode(), json.dumps(body).encode(), *data]


# -- the wire contract ---------------------------------------------------------------


def test_offer_roundtrip_with_inline_data() -> None:
    body = offer()
    frames = p.encode(p.OFFER, 7, b"abc", **{k: v for k, v in body.items() if k != "id"})
    msg = p.decode(frames)
    assert (msg.type, msg.id, msg["key"], bytes(msg.data)) == (p.OFFER, 7, "k", b"abc")


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([b"offer"], "frame_count"),
        ([b"x", b"y", b"z", b"w"], "frame_count"),
        (raw("nope", {"id": 1}), "bad_type"),
        ([b"\xff", b"{}"], "bad_type"),
        ([b"offer", b"not json"], "bad_json"),
        ([b"offer", b"[1]"], "bad_json"),
        (raw("offer", offer(id=-1)), "bad_field"),
        (raw("offer", offer(size="3")), "bad_field"),
        (raw("offer", offer(deleted=1)), "bad_field"),
        (raw("offer", offer(etag="xyz")), "bad_field"),
        (raw("offer", offer(hlc="../../etc")), "bad_field"),
        (raw("offer", offer(meta={"a": 1})), "bad_field"),
        (raw("offer", offer(), b"toolong"), "bad_field"),
        (raw("chunk", {"id": 1, "offset": 0}), "frame_count"),
        (raw("done", {"id": 1}, b"x"), "frame_count"),
        (raw("chunk", {"id": 1, "offset": 0}, b"x" * (p.MAX_CHUNK_BYTES + 1)), "oversized"),
        ([b"done", b" " * (p.MAX_HEADER_BYTES + 1)], "oversized"),
    ],
)
def test_bad_frames_are_refused_with_a_reason(frames: list[bytes], reason: str) -> None:
    with pytest.raises(FrameError) as err:
        p.decode(frames)
    assert err.value.reason == reason
    assert reason in p.DROP_REASONS


def test_tombstone_may_have_an_empty_etag() -> None:
    msg = p.decode(raw("offer", offer(etag="", size=0, deleted=True)))
    assert msg["deleted"] is True


def test_cursor_store_survives_reopen_and_never_goes_back(tmp_path: Path) -> None:
    cursors = CursorStore(tmp_path / "r.db")
    cursors.advance("bkt1", "central", 5)
    cursors.advance("bkt1", "central", 3)
    cursors.failed("bkt1", "central", "timeout")
    cursors.close()
    cur = CursorStore(tmp_path / "r.db").get("bkt1", "central")
    assert (cur.seq, cur.last_error) == (5, "timeout")
    assert cur.last_success is not None


# -- real stores, real sockets --------------------------------------------------------


class Pair:
    """A source store at site-a and a receiving store ("central") on loopback."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.src = open_store("site-a", tmp / "a")
        self.dst = open_store("central", tmp / "c")
        for store in (self.src, self.dst):
            store.ensure_bucket("p1", "bkt1", {})
        self.ctx = zmq.asyncio.Context()
        self.server = new_keypair()
        self.client = new_keypair()
        self.zap = PeerKeys(self.ctx)
        self.zap.admit({self.client.public: "site-a"})
        self.zap.start()
        self.receiver = Receiver(self.dst, tmp / "staging", self.zap.site_of)
        port = _free_port()
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.receiver.bind(self.ctx, self.endpoint, self.server.secret)
        self.receiver.start()
        self.cursors = CursorStore(tmp / "a" / "replication.db")
        self.settings = Settings(
            reply_timeout_s=5.0,
            poll_s=0.05,
            inline_max=1024,
            chunk_bytes=64 * 1024,
            backoff_initial_s=0.05,
        )

    def channel(self, keys=None) -> Channel:  # type: ignore[no-untyped-def]
        keys = keys or self.client
        target = Target("central", self.endpoint, self.server.public)
        return Channel(self.ctx, "site-a", keys.public, keys.secret, target)

    def sender(self, keys=None) -> Sender:  # type: ignore[no-untyped-def]
        return Sender(
            "site-a", self.src, self.cursors, self.channel(keys), lambda: ["bkt1"], self.settings
        )

    async def close(self) -> None:
        await self.receiver.stop()
        self.zap.stop()
        self.ctx.destroy(linger=0)
        self.src.close()
        self.dst.close()
        self.cursors.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    pr = Pair(tmp_path)
    try:
        yield pr
    finally:
        await pr.close()


def content(store, key: str) -> bytes:  # type: ignore[no-untyped-def]
    _v, chunks = store.get("bkt1", key)
    return b"".join(chunks)


async def sync(sender: Sender) -> None:
    """Run the sender until it found nothing more to send."""
    sender.channel.open()
    try:
        while await asyncio.wait_for(sender.pass_once(), 30):
            pass
    finally:
        await sender.channel.close()


async def test_objects_and_deletes_reach_the_target(pair: Pair) -> None:
    big = os.urandom(300 * 1024)  # streamed in chunks
    pair.src.put("bkt1", "small", [b"hello"])
    pair.src.put("bkt1", "big", [big])
    pair.src.put("bkt1", "gone", [b"bye"])
    pair.src.put(
        "bkt1", "small", [b"hello again"], meta={"colour": "blue"}
    )  # only the newest is sent
    pair.src.delete("bkt1", "gone")
    sender = pair.sender()
    await sync(sender)
    assert content(pair.dst, "small") == b"hello again"
    assert pair.dst.head("bkt1", "small").meta == {"colour": "blue"}
    assert content(pair.dst, "big") == big
    assert pair.dst.head("bkt1", "big").etag == pair.src.head("bkt1", "big").etag
    assert pair.dst.index.version("bkt1", "gone")["deleted"]
    live, _ = pair.dst.list("bkt1")
    assert sorted(v.key for v in live) == ["big", "small"]
    assert sender.status["bkt1"].view()["pending"] == 0
    assert pair.cursors.get("bkt1", "central").seq == pair.src.changes_since("bkt1", 0, 100)[-1].seq
    # A second pass sends nothing: the cursor holds.
    before = sender.status["bkt1"].sent
    await sync(sender)
    assert sender.status["bkt1"].sent == before


async def test_an_old_copy_does_not_undo_a_newer_write_or_a_delete(pair: Pair) -> None:
    pair.src.put("bkt1", "k", [b"old"])
    pair.src.put("bkt1", "d", [b"old"])
    await asyncio.sleep(0.01)
    pair.dst.put("bkt1", "k", [b"newer at central"])  # a later HLC
    pair.dst.put("bkt1", "d", [b"x"])
    pair.dst.delete("bkt1", "d")
    await sync(pair.sender())
    assert content(pair.dst, "k") == b"newer at central"
    assert pair.dst.index.version("bkt1", "d")["deleted"]
    assert pair.receiver.counters["skipped_have"] == 2


async def test_a_cut_mid_object_resumes_where_it_stopped(pair: Pair) -> None:
    data = os.urandom(200 * 1024)
    v = pair.src.put("bkt1", "big", [data])
    # A transfer that stops after 64 KiB (the sender died / the link was cut).
    dealer = pair.channel()
    dealer.open()
    tid, replies = dealer.open_transfer()
    await dealer.send(p.encode(p.OFFER, tid, site="site-a", **p.version_fields(v)), 5)
    want = await asyncio.wait_for(replies.get(), 5)
    assert (want.type, want["offset"]) == (p.WANT, 0)
    await dealer.send(p.encode(p.CHUNK, tid, data[: 64 * 1024], offset=0), 5)
    staged = pair.tmp / "staging" / staging_name("site-a", "bkt1", "big", v.hlc)
    for _ in range(200):
        if staged.exists() and staged.stat().st_size == 64 * 1024:
            break
        await asyncio.sleep(0.02)
    await dealer.close()
    # The real sender offers the same version again: only the rest travels.
    sender = pair.sender()
    await sync(sender)
    assert content(pair.dst, "big") == data
    assert pair.receiver.counters["resumed"] == 1
    assert sender.channel.counters["resumed"] == 1
    assert not staged.exists()


async def test_lying_bytes_are_refused_and_nothing_is_kept(pair: Pair) -> None:
    v = pair.src.put("bkt1", "k", [b"x" * 5000])
    blob = next(f for f in (pair.tmp / "a" / "blobs").rglob("*") if f.is_file())
    blob.write_bytes(b"y" * 5000)  # the source copy rotted
    sender = pair.sender()
    suspects: list[tuple[str, str]] = []
    sender.on_suspect = lambda b, k: suspects.append((b, k))
    sender.channel.open()
    try:
        with pytest.raises(Exception, match="checksum"):
            await sender.pass_once()
    finally:
        await sender.channel.close()
    assert suspects == [("bkt1", "k")]
    assert pair.dst.index.version("bkt1", "k") is None
    assert pair.receiver.counters["checksum_refused"] == 1
    assert sender.status["bkt1"].view()["last_error"].startswith("checksum")
    assert pair.cursors.get("bkt1", "central").seq == 0
    assert v.size == 5000


async def test_acks_wait_for_the_group_commit(pair: Pair) -> None:
    """Versions arriving together are committed together, and none is acked before
    its batch is durable in the index (the commit is held until every blob is written)."""
    keys = [f"k{i}" for i in range(10)]
    for key in keys[:-1]:
        pair.src.put("bkt1", key, [key.encode() * 10])  # inline
    pair.src.put("bkt1", keys[-1], [os.urandom(200 * 1024)])  # streamed in chunks
    real_commit = pair.dst.commit_replicas
    real_prepare, real_prepare_file = pair.dst.prepare_replica, pair.dst.prepare_replica_file
    prepared, release = threading.Semaphore(0), threading.Event()
    seen: dict[str, object] = {}

    def prepare(v, chunks):  # type: ignore[no-untyped-def]
        out = real_prepare(v, chunks)
        prepared.release()
        return out

    def prepare_file(v, staged):  # type: ignore[no-untyped-def]
        out = real_prepare_file(v, staged)
        prepared.release()
        return out

    def commit(batch):  # type: ignore[no-untyped-def]
        if not release.is_set():
            seen["acks_before_commit"] = pair.receiver.counters["sent_ack"]
            seen["visible_before_commit"] = pair.dst.list("bkt1")[0]
            release.wait(30)
        return real_commit(batch)

    pair.dst.prepare_replica = prepare  # type: ignore[method-assign]
    pair.dst.prepare_replica_file = prepare_file  # type: ignore[method-assign]
    pair.dst.commit_replicas = commit  # type: ignore[method-assign]

    async def hold_until_all_written() -> None:
        for _ in keys:
            await asyncio.to_thread(prepared.acquire, True, 30)
        release.set()

    holder = asyncio.create_task(hold_until_all_written())
    await sync(pair.sender())
    await holder
    assert seen == {"acks_before_commit": 0, "visible_before_commit": []}
    assert sorted(v.key for v in pair.dst.list("bkt1")[0]) == keys
    stats = pair.receiver.stats()
    assert stats["committed"] == 10
    assert stats["commit_batches"] < 10  # many versions, one transaction
    assert pair.receiver.counters["sent_ack"] == 10


async def test_a_failed_group_commit_is_nacked_and_leaves_nothing(pair: Pair) -> None:
    pair.src.put("bkt1", "a", [b"one"])
    pair.src.put("bkt1", "b", [os.urandom(100 * 1024)])

    def broken(batch):  # type: ignore[no-untyped-def]
        raise OSError("database or disk is full")

    real_commit = pair.dst.commit_replicas
    pair.dst.commit_replicas = broken  # type: ignore[method-assign]
    sender = pair.sender()
    sender.channel.open()
    try:
        with pytest.raises(Exception, match="store_error"):
            await sender.pass_once()
    finally:
        await sender.channel.close()
    assert pair.receiver.counters["sent_ack"] == 0
    assert pair.dst.list("bkt1")[0] == []
    assert pair.cursors.get("bkt1", "central").seq == 0
    # Once the store works again the same versions go through.
    pair.dst.commit_replicas = real_commit  # type: ignore[method-assign]
    await sync(pair.sender())
    assert sorted(v.key for v in pair.dst.list("bkt1")[0]) == ["a", "b"]


async def test_garbage_frames_are_dropped_and_counted(pair: Pair) -> None:
    dealer = pair.channel()
    dealer.open()
    sock = dealer.sock
    assert sock is not None
    for frames in (
        [b"offer"],
        raw("offer", offer(etag="zz")),
        [b"\x00" * 10, b"{}"],
        raw("chunk", {"id": 999, "offset": 0}, b"x"),
        raw("want", {"id": 1, "offset": 0}),
    ):
        await sock.send_multipart(frames)
    for _ in range(200):
        if sum(pair.receiver.drops.values()) >= 5:
            break
        await asyncio.sleep(0.02)
    await dealer.close()
    assert pair.receiver.drops["frame_count"] == 1
    assert pair.receiver.drops["bad_field"] == 1
    assert pair.receiver.drops["bad_type"] == 2
    assert pair.receiver.drops["unknown_transfer"] == 1
    # Still serving.
    pair.src.put("bkt1", "k", [b"after garbage"])
    await sync(pair.sender())
    assert content(pair.dst, "k") == b"after garbage"


async def test_an_unknown_key_is_refused_at_the_handshake(pair: Pair) -> None:
    pair.src.put("bkt1", "k", [b"x"])
    sender = pair.sender(new_keypair())
    sender.channel.open()
    sender.settings = Settings(reply_timeout_s=0.5)
    try:
        with pytest.raises(Exception, match="timeout"):
            await sender.pass_once()
    finally:
        await sender.channel.close()
    assert pair.zap.refused["unknown_peer_key"] >= 1
    assert pair.dst.index.version("bkt1", "k") is None


async def test_a_corrupt_object_is_repaired_from_a_replica(pair: Pair) -> None:
    data = os.urandom(150 * 1024)
    pair.src.put("bkt1", "k", [data])
    await sync(pair.sender())
    row = pair.src.index.version("bkt1", "k")
    path = pair.src.backend.path(row["blob_id"])
    flipped = bytearray(path.read_bytes())
    flipped[1000] ^= 0xFF
    path.write_bytes(bytes(flipped))
    channel = pair.channel()
    channel.open()
    try:
        repairer = Repairer("site-a", pair.src, lambda _b: [channel], pair.tmp, interval_s=0)
        assert await repairer.pass_once(scrub=True) == 1
    finally:
        await channel.close()
    assert repairer.counters["found_corrupt"] == 1
    assert content(pair.src, "k") == data
    assert pair.src.corrupt() == []


# -- a site's replication, as the daemon runs it -------------------------------------


def test_targets_follow_the_document() -> None:
    from edged.replication.site import plan_targets

    central = Target("central", "tcp://127.0.0.1:1", "x" * 40)
    peer_key = new_keypair().public
    doc = {
        "buckets": [
            {"name": "bkt1", "replicate_to_central": True, "peers": ["site-b"]},
            {"name": "bkt2", "replicate_to_central": False, "peers": ["site-c"]},
            {"name": "bkt3", "replicate_to_central": False, "peers": []},
        ],
        "replication_peers": [
            {"site": "site-b", "endpoint": "tcp://127.0.0.1:2", "public_key": peer_key},
            {"site": "site-c", "endpoint": "http://nope", "public_key": peer_key},
        ],
    }
    targets, buckets, problems = plan_targets(doc, central)
    assert sorted(targets) == ["central", "site-b"]
    assert buckets == {"central": ["bkt1"], "site-b": ["bkt1"]}
    assert any("endpoint" in p for p in problems)
    assert any("site-c" in p for p in problems)


async def test_site_replication_reaches_central_and_reports_lag(pair: Pair) -> None:
    from edged.replication.site import SiteReplication

    central = Target("central", pair.endpoint, pair.server.public)
    site = SiteReplication(
        "site-a",
        pair.src,
        pair.ctx,
        pair.tmp / "site-state",
        (pair.client.public, pair.client.secret),
        central,
        Settings(poll_s=0.05, reply_timeout_s=5.0),
        scrub_interval_s=0,
    )
    pair.src.put("bkt1", "one", [b"1"])
    site.start({"buckets": [{"name": "bkt1", "replicate_to_central": True, "peers": []}]})
    try:
        for _ in range(500):
            lag = site.status().get("bkt1", {}).get("central", {})
            if lag.get("sent") and lag.get("pending") == 0:
                break
            await asyncio.sleep(0.02)
        assert lag["pending"] == 0 and lag["lag_seconds"] == 0
        assert content(pair.dst, "one") == b"1"
    finally:
        await site.stop()
