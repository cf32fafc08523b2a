"""The receiving end of object replication: a CURVE ROUTER that takes offered versions.

One component on both sides: central binds one at ``replication_endpoint``
(authenticated by the hub's ZAP handler: enrolled site keys), a site binds one
at ``replication_bind`` when peers replicate to it (its own ZAP handler admits
the peers its desired document names).

Per offered version the receiver decides (off the event loop) whether it
needs the bytes: a local version with the same or a newer HLC means
``ack{applied: false}``; a tombstone or a small object sent inline is
written at once; otherwise, once a writer thread is free for it, it answers
``want{offset}``, where ``offset`` is the size of a partial copy staged by an
earlier, interrupted transfer of the same version (a resume), or 0. Chunks
are appended in order to the staging file (a ``ReplicaFile``, hashed as they
arrive: the one pass over the bytes); complete, the file goes to
``store.prepare_replica_file``, which refuses it unless size and sha256 match
the offer (``nack{reason: "checksum"}``, file removed) and otherwise makes the
file itself the blob. Prepared versions are committed in groups
(:class:`~edged.replication.group_commit.GroupCommit`: one index transaction
for whatever was prepared meanwhile) and each is acked only after its group
committed. ``fetch`` (repair) streams this store's copy of an object back.

Nothing a peer sends stops the loop: bad frames are dropped and counted by
reason (``drops``), a store error becomes a ``nack``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from edged.objects.replica_file import ReplicaFile
from edged.replication import protocol as p
from edged.replication.group_commit import GroupCommit
from edged.replication.store_api import (
    REPAIRED,
    ReplicaStore,
    checksum_refusal,
    good_version,
    make_version,
    prepare_file_or_repair,
    prepare_or_repair,
    wants,
)
from edged.wire import FrameError

log = logging.getLogger(__name__)

HANDSHAKE_IVL_MS = 10_000
SESSION_IDLE_S = 120.0  # a transfer silent this long is forgotten (its staged bytes stay)
STAGING_MAX_AGE_S = 24 * 3600.0  # staged partial copies older than this are removed
QUEUE_DEPTH = 16
WRITERS = 8  # versions written into the store at once (each holds a thread while streaming)
READ_CHUNK = 1024 * 1024

# (site, bucket) -> may this site replicate into this bucket here?
Authorize = Callable[[str, str], bool]
# ZAP user id (the peer's Z85 public key) -> the site it is enrolled for, or None.
PeerSite = Callable[[str], "str | None"]
# Sees every valid message of an admitted peer first: (routing id, site, message) ->
# whether it took it (central's fetches through a site's link: reverse_fetch.py).
Intercept = Callable[[bytes, str, p.Msg], Awaitable[bool]]


def staging_name(site: str, bucket: str, key: str, hlc: str) -> str:
    text = "\0".join((site, bucket, key, hlc)).encode()
    return hashlib.sha256(text).hexdigest() + ".part"


CUT = "cut"  # _prepare: the transfer stopped before its last byte
REFUSED = "refused"  # _prepare: the bytes do not hash to the offered etag


class TransferCut(Exception):
    """A transfer stopped before its last byte (idle, or replaced by a retry)."""


class Incoming:
    """One offered version being received from one peer connection."""

    def __init__(self, routing: bytes, site: str, msg: p.Msg, path: Path) -> None:
        self.routing = routing
        self.site = site
        self.tid = msg.id
        self.offer = msg
        self.version = make_version(msg.body)
        self.path = path
        self.queue: asyncio.Queue[p.Msg | None] = asyncio.Queue(QUEUE_DEPTH)
        self.cut = False
        self.file: ReplicaFile | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def received(self) -> int:
        return self.file.size if self.file is not None else 0

    def open_staging(self) -> int:
        """Open (or resume) the staging file; the offset to resume from."""
        self.file = ReplicaFile(self.path, self.version.size)
        return self.file.size

    def cut_off(self) -> None:
        """End this transfer: the thread feeding the store gets no more chunks."""
        self.cut = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


class Receiver:
    """Takes replicas into ``store``; serves ``fetch`` from it."""

    def __init__(
        self,
        store: ReplicaStore,
        staging_dir: Path,
        peer_site: PeerSite,
        authorize: Authorize | None = None,
        name: str = "receiver",
        writers: int = WRITERS,
        intercept: Intercept | None = None,
    ) -> None:
        self.store = store
        self.intercept = intercept
        self.staging_dir = staging_dir
        self.peer_site = peer_site
        self.authorize = authorize or (lambda _site, _bucket: True)
        self.name = name
        self.sock: zmq.asyncio.Socket | None = None
        self.sessions: dict[tuple[bytes, int], Incoming] = {}
        self.by_path: dict[Path, Incoming] = {}
        self.counters: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self.group = GroupCommit(store)
        # Writers have their own threads, and a session asks for bytes (``want``) only
        # once it holds one: chunks then always have a thread draining them, so the
        # receive loop, which blocks on a full session queue, cannot wait on a session
        # that waits for a thread (nor starve the index look-ups and commits).
        self.writer_slots = asyncio.Semaphore(writers)
        self.writer_pool = ThreadPoolExecutor(writers, thread_name_prefix=f"{name}-writer")

    # -- lifecycle -------------------------------------------------------------------

    def bind(self, ctx: zmq.asyncio.Context, endpoint: str, secret_key: str) -> None:
        """Bind the CURVE ROUTER (a ZAP handler on ``ctx`` decides who gets in)."""
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        self._sweep_staging()
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, secret_key.encode())
        sock.setsockopt(zmq.ZAP_DOMAIN, b"skerry")
        sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_IVL_MS)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
        sock.setsockopt(zmq.RCVHWM, 64)
        sock.setsockopt(zmq.SNDHWM, 64)
        sock.setsockopt(zmq.MAXMSGSIZE, p.MAX_CHUNK_BYTES + p.MAX_HEADER_BYTES + 64)
        sock.bind(endpoint)
        self.sock = sock
        log.info("%s: replication receiver on %s (CURVE)", self.name, endpoint)

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self.run(), name=f"{self.name}-loop")

    async def stop(self) -> None:
        for s in self.sessions.values():
            s.cut_off()
        tasks = [t for t in (self._loop_task, *self._tasks) if t is not None]
        for s in self.sessions.values():
            if s.task is not None:
                tasks.append(s.task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.group.stop()
        self.writer_pool.shutdown(wait=False, cancel_futures=True)
        for s in list(self.sessions.values()):
            s.close()
        self.sessions.clear()
        self.by_path.clear()
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    def stats(self) -> dict[str, Any]:
        return {
            "messages": dict(self.counters),
            "dropped": dict(self.drops),
            "dropped_total": sum(self.drops.values()),
            "transfers_open": len(self.sessions),
            "commit_batches": self.group.batches,
            "committed": self.group.committed,
        }

    def _sweep_staging(self) -> None:
        cutoff = time.time() - STAGING_MAX_AGE_S
        for path in self.staging_dir.glob("*.part"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()

    # -- receiving -------------------------------------------------------------------

    def _drop(self, reason: str, detail: str) -> None:
        self.drops[reason] += 1
        log.debug("%s: frame dropped (%s): %s", self.name, reason, detail)

    async def run(self) -> None:
        assert self.sock is not None
        while True:
            frames = await self.sock.recv_multipart(copy=False)
            try:
                await self._handle(frames)
            except Exception:  # a bug must not stop the receiver
                self.drops["handler_error"] += 1
                log.exception("%s: error handling a message", self.name)

    async def _handle(self, frames: list[zmq.Frame]) -> None:
        routing = frames[0].bytes
        try:
            key = frames[0].get("User-Id")
        except zmq.ZMQError:
            key = None
        site = self.peer_site(key) if key else None
        if not key:
            self._drop("unauthenticated", "no ZAP user id")
            return
        if site is None:
            self._drop("unknown_peer", f"key {key[:8]} is not (or no longer) admitted")
            return
        try:
            msg = p.decode([f.buffer for f in frames[1:]])
        except FrameError as exc:
            self._drop(exc.reason, exc.detail)
            return
        self.counters[f"received_{msg.type}"] += 1
        if self.intercept is not None and await self.intercept(routing, site, msg):
            return
        if msg.type == p.OFFER:
            await self._on_offer(routing, site, msg)
        elif msg.type == p.FETCH:
            self._spawn(self._serve_fetch(routing, site, msg))
        elif msg.type in (p.CHUNK, p.DONE):
            session = self.sessions.get((routing, msg.id))
            if session is None or session.site != site:
                self._drop("unknown_transfer", f"{msg.type} for transfer {msg.id}")
                return
            await session.queue.put(msg)  # a full queue holds the loop: back-pressure
        else:
            self._drop("bad_type", f"{msg.type} is not sent to a receiver")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, routing: bytes, kind: str, tid: int, data: Any = None, **f: Any) -> None:
        assert self.sock is not None
        try:
            await self.sock.send_multipart([routing, *p.encode(kind, tid, data, **f)])
        except zmq.ZMQError as exc:  # the peer went away: it offers again later
            self.counters[f"send_failed_{kind}"] += 1
            log.debug("%s: %s to a gone peer: %s", self.name, kind, exc)
            return
        self.counters[f"sent_{kind}"] += 1

    async def _on_offer(self, routing: bytes, site: str, msg: p.Msg) -> None:
        if msg["site"] != site:
            await self._send(routing, p.NACK, msg.id, reason="unauthorized")
            self.counters["refused_wrong_site"] += 1
            return
        if not self.authorize(site, msg["bucket"]):
            await self._send(routing, p.NACK, msg.id, reason="unauthorized")
            self.counters["refused_bucket"] += 1
            return
        path = self.staging_dir / staging_name(site, msg["bucket"], msg["key"], msg["hlc"])
        old = self.by_path.pop(path, None)
        if old is not None:  # the sender retried: the old transfer's frames are stale now
            self._forget(old)
            old.cut_off()
            if old.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await old.task
            old.close()
        try:
            session = Incoming(routing, site, msg, path)
        except ValueError as exc:
            await self._send(routing, p.NACK, msg.id, reason="bad_version")
            self._drop("bad_field", str(exc))
            return
        self.sessions[(routing, msg.id)] = session
        self.by_path[path] = session
        session.task = asyncio.create_task(self._run_session(session))

    def _forget(self, session: Incoming) -> None:
        self.sessions.pop((session.routing, session.tid), None)
        if self.by_path.get(session.path) is session:
            del self.by_path[session.path]

    async def _run_session(self, s: Incoming) -> None:
        try:
            await self._session(s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.counters["store_errors"] += 1
            log.warning(
                "%s: %s/%s from %s: %s", self.name, s.version.bucket, s.version.key, s.site, exc
            )
            await self._send(s.routing, p.NACK, s.tid, reason="store_error")
        finally:
            s.close()
            self._forget(s)

    async def _session(self, s: Incoming) -> None:
        v = s.version
        need = await asyncio.to_thread(wants, self.store, v)
        if s.cut:
            return
        if not need:
            self.counters["skipped_have"] += 1
            await self._send(s.routing, p.ACK, s.tid, applied=False)
            return
        async with self.writer_slots:  # released once the blob is written, not committed
            if s.cut:
                return
            prepared = await self._prepare(s)
        if prepared is not CUT:
            await self._commit(s, prepared)

    async def _prepare(self, s: Incoming) -> Any:
        """The version's blob written and checked (``prepare_or_repair``): what to commit,
        REFUSED when the bytes did not match, CUT when the transfer stopped first."""
        v = s.version
        if v.deleted or s.offer.data is not None:
            body = [] if v.deleted else [bytes(s.offer.data)]
            return await self._write(s, prepare_or_repair, self.store, v, body)
        staged = await asyncio.to_thread(s.open_staging)
        if staged:
            self.counters["resumed"] += 1
        await self._send(s.routing, p.WANT, s.tid, offset=staged)
        try:
            prepared = await self._write(s, self._received, s, asyncio.get_running_loop())
        except TransferCut:
            self.counters["transfers_cut"] += 1
            await asyncio.to_thread(s.close)  # the staged prefix stays for a resume
            return CUT
        await asyncio.to_thread(s.discard)  # unlinking a large file takes a while
        return prepared

    def _received(self, s: Incoming, loop: asyncio.AbstractEventLoop) -> Any:
        """In a writer thread: each chunk appended to the staging file as it arrives (and
        hashed: the one pass over the bytes), then the complete file handed to the
        store, which checks it against the etag and makes it the blob."""
        assert s.file is not None
        while s.file.size < s.version.size:
            data = asyncio.run_coroutine_threadsafe(self._next_chunk(s), loop).result()
            if data is None:
                raise TransferCut(f"transfer {s.tid} ended at {s.received}")
            s.file.append(data)
        return prepare_file_or_repair(self.store, s.version, s.file)

    async def _next_chunk(self, s: Incoming) -> bytes | memoryview | None:
        """The next in-order chunk; None when the transfer went idle or was replaced."""
        while True:
            try:
                msg = await asyncio.wait_for(s.queue.get(), SESSION_IDLE_S)
            except TimeoutError:
                self.counters["transfers_idle"] += 1
                return None
            if msg is None or s.cut:
                return None
            if msg.type == p.DONE:  # chunks were lost on the way: ask for the rest
                await self._send(s.routing, p.WANT, s.tid, offset=s.received)
                continue
            data = msg.data or b""
            if msg["offset"] != s.received or s.received + len(data) > s.version.size:
                self._drop("out_of_order", f"chunk at {msg['offset']}, expected {s.received}")
                continue
            self.counters["chunks"] += 1
            return data

    async def _write(self, s: Incoming, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a writer thread; REFUSED when the bytes do not match the etag."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.writer_pool, fn, *args)
        except Exception as exc:
            if not checksum_refusal(exc):
                raise
        return REFUSED

    async def _commit(self, s: Incoming, prepared: Any) -> None:
        """Ack once the version is durable and committed (its group commit), or nack."""
        if prepared is REFUSED:
            self.counters["checksum_refused"] += 1
            log.warning(
                "%s: %s/%s from %s does not match its etag",
                self.name,
                s.version.bucket,
                s.version.key,
                s.site,
            )
            await asyncio.to_thread(s.discard)
            await self._send(s.routing, p.NACK, s.tid, reason="checksum")
            return
        if prepared is None:
            applied = False
        elif prepared is REPAIRED:
            applied = True
        else:
            applied = await self.group.commit(prepared)
        self.counters["applied" if applied else "not_applied"] += 1
        await self._send(s.routing, p.ACK, s.tid, applied=bool(applied))

    # -- repair ------------------------------------------------------------------------

    async def _serve_fetch(self, routing: bytes, site: str, msg: p.Msg) -> None:
        if msg["site"] != site or not self.authorize(site, msg["bucket"]):
            await self._send(routing, p.NACK, msg.id, reason="unauthorized")
            return
        self.counters["fetches"] += 1
        await serve_fetch(
            self.store,
            msg["bucket"],
            msg["key"],
            lambda kind, data=None, **f: self._send(routing, kind, msg.id, data, **f),
        )


async def serve_fetch(store: ReplicaStore, bucket: str, key: str, send: Any) -> None:
    """Stream this store's good copy of ``bucket/key`` through ``send``, or say ``missing``."""
    v = await asyncio.to_thread(good_version, store, bucket, key)
    if v is None:
        await send(p.MISSING)
        return
    await send(p.VERSION, **p.version_fields(v))
    if v.deleted:
        await send(p.END)
        return
    it = iter(store.read_version(v))
    offset = 0
    while True:
        chunk = await asyncio.to_thread(next, it, None)
        if chunk is None:
            break
        for start in range(0, len(chunk), READ_CHUNK):
            piece = chunk[start : start + READ_CHUNK]
            await send(p.DATA, piece, offset=offset)
            offset += len(piece)
    await send(p.END)
