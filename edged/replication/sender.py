"""The sending end of object replication: one CURVE DEALER per target, one cursor per bucket.

A :class:`Channel` is the DEALER to one target (central, or a peer site's
receiver) with a reply dispatcher keyed by transfer id. A :class:`Sender`
walks the target's buckets: it reads ``store.changes_since(bucket, cursor)``,
sends only the newest version of each key in the batch (a few objects in
flight at once), and moves the cursor, durably, to the longest prefix of the
batch the target acknowledged. Errors and silent targets back off
exponentially with jitter (capped); nothing is lost, since the cursor only
moves on acknowledgements. The sender never re-hashes source bytes: the
receiver checks them against the etag, and a ``checksum`` refusal means the
source copy is bad, which is handed to ``on_suspect`` (the scrubber).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

from edged.objects.errors import ObjectCorrupt, ObjectError
from edged.replication import protocol as p
from edged.replication.cursors import CursorStore
from edged.replication.store_api import ReplicaStore
from edged.wire import FrameError

log = logging.getLogger(__name__)

HANDSHAKE_IVL_MS = 5000


@dataclass(frozen=True)
class Target:
    """Where a stream goes: ``name`` is ``central`` or a peer's site id."""

    name: str
    endpoint: str
    public_key: str


@dataclass(frozen=True)
class Settings:
    chunk_bytes: int = 1024 * 1024
    inline_max: int = 256 * 1024  # objects up to this size travel inside the offer
    in_flight: int = 4  # streamed objects in transfer at once per target
    # Inline objects (one message each) in transfer at once per target, besides: enough
    # that the receiver commits many of them in one group commit (one fsync for all).
    inline_in_flight: int = 32
    window: int = 8  # chunks queued per connection (the DEALER's send high-water mark)
    batch: int = 256  # changes read per look
    reply_timeout_s: float = 15.0
    poll_s: float = 1.0  # caught up: look for new changes this often
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0


class TransferError(Exception):
    """A version did not reach the target; ``reason`` says why (``timeout``, a nack reason)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}{': ' + detail if detail else ''}")
        self.reason = reason


def wall_seconds(hlc: str) -> float | None:
    """The wall time an HLC stamp carries (its first 12 hex digits are milliseconds)."""
    try:
        return int(hlc[:12], 16) / 1000.0
    except ValueError:
        return None


class Channel:
    """A CURVE DEALER to one target plus a reply dispatcher."""

    def __init__(
        self, ctx: zmq.asyncio.Context, site: str, public: str, secret: str, target: Target
    ) -> None:
        self.ctx = ctx
        self.site = site
        self.public, self.secret = public, secret
        self.target = target
        self.sock: zmq.asyncio.Socket | None = None
        self.waiting: dict[int, asyncio.Queue[p.Msg]] = {}
        self.tids = itertools.count(time.time_ns() // 1000)
        self.drops: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self.window = Settings.window
        self._reader: asyncio.Task[None] | None = None
        # Answers a ``fetch`` the target sends down this link (central repairing its own
        # copy: edged/replication/reverse_fetch.py); None: such a request is dropped.
        self.on_request: Callable[[p.Msg], None] | None = None

    def open(self) -> None:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.target.public_key.encode())
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public.encode())
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret.encode())
        sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_IVL_MS)
        sock.setsockopt(zmq.ROUTING_ID, f"{self.site}/{time.time_ns()}".encode())
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.SNDHWM, self.window)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
        sock.setsockopt(zmq.MAXMSGSIZE, p.MAX_CHUNK_BYTES + p.MAX_HEADER_BYTES + 64)
        sock.connect(self.target.endpoint)
        self.sock = sock
        self._reader = asyncio.create_task(self._read(), name=f"repl-{self.target.name}")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    async def reset(self) -> None:
        """A fresh socket and handshake (libzmq gives up on a refused one; stale frames go)."""
        self.counters["resets"] += 1
        await self.close()
        self.open()

    async def _read(self) -> None:
        assert self.sock is not None
        while True:
            frames = await self.sock.recv_multipart(copy=False)
            try:
                msg = p.decode([f.buffer for f in frames])
            except FrameError as exc:
                self.drops[exc.reason] += 1
                continue
            except Exception:
                self.drops["handler_error"] += 1
                log.exception("replication to %s: bad reply", self.target.name)
                continue
            if msg.type == p.FETCH:  # not a reply: the target asks for our copy
                if self.on_request is None:
                    self.drops["bad_type"] += 1
                else:
                    self.on_request(msg)
                continue
            queue = self.waiting.get(msg.id)
            if queue is None:
                self.drops["unknown_transfer"] += 1
                continue
            if msg.type in (p.DATA, p.VERSION, p.END, p.MISSING):
                await queue.put(msg)  # a fetch's stream: back-pressure, never drop
            else:
                queue.put_nowait(msg)

    async def send(self, frames: list[Any], timeout: float) -> None:
        assert self.sock is not None
        try:
            await asyncio.wait_for(self.sock.send_multipart(frames, copy=False), timeout)
        except TimeoutError:
            raise TransferError("timeout", f"{self.target.name} takes nothing") from None

    def open_transfer(self) -> tuple[int, asyncio.Queue[p.Msg]]:
        tid = next(self.tids)
        queue: asyncio.Queue[p.Msg] = asyncio.Queue(64)
        self.waiting[tid] = queue
        return tid, queue

    def close_transfer(self, tid: int) -> None:
        self.waiting.pop(tid, None)


async def _read_chunks(store: ReplicaStore, v: Any, offset: int, chunk_bytes: int):  # type: ignore[no-untyped-def]
    """The version's bytes from ``offset``, read off the event loop, in pieces <= chunk_bytes."""
    it = iter(store.read_version(v, offset))
    while True:
        chunk = await asyncio.to_thread(next, it, None)
        if chunk is None:
            return
        view = memoryview(chunk)
        for start in range(0, len(view), chunk_bytes):
            yield view[start : start + chunk_bytes]


async def transfer(
    channel: Channel, store: ReplicaStore, v: Any, settings: Settings, site: str
) -> bool:
    """Offer ``v`` and send what the target wants; whether it changed anything there."""
    tid, replies = channel.open_transfer()
    timeout = settings.reply_timeout_s
    try:
        data = None
        if not v.deleted and v.size <= settings.inline_max:
            data = b"".join(await asyncio.to_thread(lambda: list(store.read_version(v))))
            if len(data) != v.size:
                raise TransferError("source_size", f"{v.bucket}/{v.key}: {len(data)} bytes")
        offer = p.encode(p.OFFER, tid, data, site=site, **p.version_fields(v))
        await channel.send(offer, timeout)
        while True:
            try:
                msg = await asyncio.wait_for(replies.get(), timeout)
            except TimeoutError:
                raise TransferError("timeout", f"no answer from {channel.target.name}") from None
            if msg.type == p.ACK:
                return bool(msg["applied"])
            if msg.type == p.NACK:
                raise TransferError(msg["reason"], f"{v.bucket}/{v.key}")
            if msg.type != p.WANT or v.deleted:
                channel.drops["bad_type"] += 1
                continue
            offset = msg["offset"]
            if offset > v.size:
                raise TransferError("bad_offset", f"{offset} > {v.size}")
            channel.counters["resumed" if offset else "streamed"] += 1
            async for piece in _read_chunks(store, v, offset, settings.chunk_bytes):
                await channel.send(p.encode(p.CHUNK, tid, piece, offset=offset), timeout)
                offset += len(piece)
            await channel.send(p.encode(p.DONE, tid), timeout)
    finally:
        channel.close_transfer(tid)


@dataclass
class StreamStatus:
    """Lag of one (bucket, target) stream, as the APIs show it."""

    pending: int = 0
    pending_more: bool = False  # more than ``pending`` changes wait (one batch was counted)
    oldest_pending_hlc: str | None = None
    last_success: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    sent: int = 0

    def view(self) -> dict[str, Any]:
        oldest = wall_seconds(self.oldest_pending_hlc) if self.oldest_pending_hlc else None
        lag = max(0.0, time.time() - oldest) if oldest is not None and self.pending else 0.0
        return {
            "pending": self.pending,
            "pending_more": self.pending_more,
            "lag_seconds": round(lag, 3),
            "last_success": self.last_success,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "sent": self.sent,
        }


@dataclass
class Sender:
    """Replicates the buckets ``buckets()`` names to one target, until cancelled."""

    site: str
    store: ReplicaStore
    cursors: CursorStore
    channel: Channel
    buckets: Callable[[], list[str]]
    settings: Settings = field(default_factory=Settings)
    on_suspect: Callable[[str, str], None] = lambda _b, _k: None
    status: dict[str, StreamStatus] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def target(self) -> str:
        return self.channel.target.name

    def stream(self, bucket: str) -> StreamStatus:
        if bucket not in self.status:
            cur = self.cursors.get(bucket, self.target)
            self.status[bucket] = StreamStatus(
                last_success=cur.last_success,
                last_error=cur.last_error,
                last_error_at=cur.last_error_at,
            )
        return self.status[bucket]

    async def run(self) -> None:
        self.channel.window = self.settings.window
        self.channel.open()
        backoff = self.settings.backoff_initial_s
        try:
            while True:
                try:
                    progressed = await self.pass_once()
                except TransferError as exc:
                    delay = backoff * random.uniform(0.5, 1.0)
                    log.info("replication to %s: %s; again in %.1fs", self.target, exc, delay)
                    if exc.reason == "timeout":
                        await self.channel.reset()
                    await asyncio.sleep(delay)
                    backoff = min(backoff * 2, self.settings.backoff_max_s)
                    continue
                backoff = self.settings.backoff_initial_s
                if not progressed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), self.settings.poll_s)
                    self.wake.clear()
        finally:
            await self.channel.close()

    async def pass_once(self) -> bool:
        """One look at every bucket; whether anything was sent. Raises the first failure."""
        progressed = False
        failure: TransferError | None = None
        for bucket in self.buckets():
            try:
                progressed = await self.sync_bucket(bucket) or progressed
            except TransferError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return progressed

    async def sync_bucket(self, bucket: str) -> bool:
        status = self.stream(bucket)
        start = (await asyncio.to_thread(self.cursors.get, bucket, self.target)).seq
        changes = await asyncio.to_thread(
            self.store.changes_since, bucket, start, self.settings.batch
        )
        status.pending = len(changes)
        status.pending_more = len(changes) >= self.settings.batch
        status.oldest_pending_hlc = changes[0].hlc if changes else None
        if not changes:
            return False
        latest: dict[str, Any] = {}
        for v in changes:
            latest[v.key] = v  # ordered by seq: the newest version of each key wins
        done: set[str] = set()
        errors: list[TransferError] = []
        gate = asyncio.Semaphore(self.settings.in_flight)
        inline_gate = asyncio.Semaphore(self.settings.inline_in_flight)

        async def one(v: Any) -> None:
            inline = v.deleted or v.size <= self.settings.inline_max
            async with inline_gate if inline else gate:
                if errors:
                    return
                try:
                    await transfer(self.channel, self.store, v, self.settings, self.site)
                except TransferError as exc:
                    errors.append(exc)
                    if exc.reason == "checksum":
                        self.on_suspect(v.bucket, v.key)
                    return
                except ObjectError as exc:
                    if exc.status != 409:
                        raise
                    # Superseded since the batch was read: the newer version has a
                    # later seq and goes in a later batch; this one is done with.
                    done.add(v.key)
                    return
                except ObjectCorrupt as exc:  # our copy is bad: repair it, then send it
                    errors.append(TransferError("source_corrupt", str(exc)))
                    self.on_suspect(v.bucket, v.key)
                    return
                done.add(v.key)
                status.sent += 1

        await asyncio.gather(*(one(v) for v in sorted(latest.values(), key=lambda v: v.seq)))
        new = start
        for v in changes:
            if v.key not in done:
                break
            new = v.seq
        if new > start:
            await asyncio.to_thread(self.cursors.advance, bucket, self.target, new)
            status.last_success = time.time()
        remaining = [v for v in changes if v.seq > new]
        status.pending = len(remaining)
        status.oldest_pending_hlc = remaining[0].hlc if remaining else None
        if errors:
            status.last_error, status.last_error_at = str(errors[0]), time.time()
            await asyncio.to_thread(self.cursors.failed, bucket, self.target, str(errors[0]))
            raise errors[0]
        return True


async def fetch(
    channel: Channel, site: str, bucket: str, key: str, into: Any, timeout: float
) -> Any:
    """Pull the target's copy of bucket/key into the open binary file ``into``.

    Returns the target's ObjectVersion (its bytes are in ``into``) or None when
    the target holds no good copy. The bytes are not trusted here:
    ``store.repair`` checks them against the version's etag.
    """
    from edged.replication.store_api import make_version

    tid, replies = channel.open_transfer()
    try:
        await channel.send(p.encode(p.FETCH, tid, site=site, bucket=bucket, key=key), timeout)
        version = None
        offset = 0
        while True:
            try:
                msg = await asyncio.wait_for(replies.get(), timeout)
            except TimeoutError:
                raise TransferError("timeout", f"no answer from {channel.target.name}") from None
            if msg.type in (p.MISSING, p.NACK):
                return None
            if msg.type == p.VERSION:
                version = make_version(msg.body)
            elif msg.type == p.DATA and version is not None and msg["offset"] == offset:
                await asyncio.to_thread(into.write, msg.data)
                offset += len(msg.data or b"")
            elif msg.type == p.END and version is not None:
                await asyncio.to_thread(into.flush)
                return version
            else:
                channel.drops["out_of_order"] += 1
                return None
    finally:
        channel.close_transfer(tid)
