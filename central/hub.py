"""The hub: central's end of the control channel (a ZeroMQ ROUTER).

Sites connect DEALERs whose routing id is their site name. The hub answers
``hello`` with the newest desired document when the site holds an older one,
records ``ack`` and ``status``, answers heartbeats, marks silent sites down,
and resends documents that were not acknowledged in time. Every frame that is
not a valid, new message from a known site is dropped and counted by reason;
nothing a peer sends can stop the receive loop.

Messages are handled in batches: everything queued on the socket is read,
handled against in-memory state, and what must reach the store (acks, status,
up/down, last seen) is written in one transaction per batch, so a burst of
a thousand acks costs one commit, not a thousand. The hub keeps each site's
newest document in memory; the API hands it over through :meth:`Hub.published`
after its transaction committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

from central import orchestrator
from central.config import CentralConfig
from central.store import Store, dumps
from edged import wire

log = logging.getLogger(__name__)

BATCH_MAX = 1000  # messages handled between two commits (and two yields to the API)


@dataclass
class Peer:
    """What the hub knows of one site between database writes."""

    generation: int = 0  # newest desired generation
    document: dict[str, Any] = field(default_factory=dict)
    up: bool = False
    last_seen: float = 0.0
    flushed_seen: float = 0.0
    held_generation: int = -1
    acked_generation: int = 0
    sent_generation: int = 0
    sent_at: float = 0.0
    dirty: bool = False
    status: wire.Message | None = None


class Hub:
    """Pushes desired state to sites and takes their acks, status and heartbeats."""

    def __init__(self, config: CentralConfig, store: Store, ctx: zmq.asyncio.Context) -> None:
        self.config = config
        self.store = store
        self.ctx = ctx
        self.sock: zmq.asyncio.Socket | None = None
        self.encoder = wire.Encoder("central")
        self.guard = wire.ReplayGuard()
        self.peers: dict[str, Peer] = {}
        self.counters: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -------------------------------------------------------------------

    def _load(self) -> None:
        rows = self.store.query("SELECT name, acked_generation FROM sites")
        for row in rows:
            peer = Peer(acked_generation=row["acked_generation"])
            latest = orchestrator.latest_document(self.store, row["name"])
            if latest is not None:
                peer.generation, peer.document = latest
            self.peers[row["name"]] = peer
        with self.store.transaction():
            # Until a site speaks again after our restart, it counts as down.
            self.store.db.execute("UPDATE sites SET state = 'down' WHERE state = 'up'")

    async def start(self) -> None:
        self._load()
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted site takes its identity back
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unroutable sends raise, not vanish
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        # A hard ceiling for memory: libzmq disconnects a peer sending more than this.
        sock.setsockopt(zmq.MAXMSGSIZE, 4 * self.config.max_frame_bytes)
        sock.bind(self.config.hub_endpoint)
        self.sock = sock
        self._tasks = [
            asyncio.create_task(self._receive_loop(), name="hub-receive"),
            asyncio.create_task(self._sweep_loop(), name="hub-sweep"),
        ]
        log.info("hub listening on %s (%d sites known)", self.config.hub_endpoint, len(self.peers))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    def stats(self) -> dict[str, Any]:
        return {
            "messages": dict(self.counters),
            "dropped": dict(self.drops),
            "dropped_total": sum(self.drops.values()),
            "sites_connected": sum(1 for p in self.peers.values() if p.up),
        }

    # -- from the API ----------------------------------------------------------------

    def published(self, site: str, generation: int, document: dict[str, Any]) -> None:
        """A new document for ``site`` committed: remember it and push it."""
        peer = self.peers.setdefault(site, Peer())
        if generation > peer.generation:
            peer.generation, peer.document = generation, document
        if self.sock is not None and peer.up:
            self._send(site, wire.DESIRED, generation=generation, document=document)
            peer.sent_generation, peer.sent_at = generation, time.monotonic()

    # -- sending ---------------------------------------------------------------------

    def _send(self, site: str, kind: str, **fields: Any) -> bool:
        assert self.sock is not None
        frames = self.encoder.encode(kind, site=site, **fields)
        # With NOBLOCK the future is resolved at once: sent, or failed (unroutable, HWM).
        exc = self.sock.send_multipart([site.encode(), *frames], flags=zmq.NOBLOCK).exception()
        if exc is not None:
            self.counters[f"send_failed_{kind}"] += 1
            log.debug("site %s: %s not sent: %s", site, kind, exc)
            return False
        self.counters[f"sent_{kind}"] += 1
        return True

    def _push(self, site: str, peer: Peer, *, force: bool = False) -> None:
        """Send the newest document if the site holds an older one (and no recent send)."""
        if not peer.up or peer.held_generation >= peer.generation or not peer.generation:
            return
        fresh = time.monotonic() - peer.sent_at < self.config.resend_after_s
        if not force and peer.sent_generation >= peer.generation and fresh:
            return
        if self._send(site, wire.DESIRED, generation=peer.generation, document=peer.document):
            peer.sent_generation, peer.sent_at = peer.generation, time.monotonic()

    # -- receiving -------------------------------------------------------------------

    def _drop(self, reason: str, detail: str) -> None:
        self.drops[reason] += 1
        log.debug("frame dropped (%s): %s", reason, detail)

    async def _receive_loop(self) -> None:
        assert self.sock is not None
        while True:
            batch = [await self.sock.recv_multipart()]
            while len(batch) < BATCH_MAX and self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                batch.append(await self.sock.recv_multipart())
            for frames in batch:
                try:
                    self._handle(frames)
                except Exception:  # a bug must not stop the hub; log and count it
                    self.drops["handler_error"] += 1
                    log.exception("hub: error handling a message")
            try:
                self._flush()
            except Exception:
                log.exception("hub: writing the batch to the store failed")
            await asyncio.sleep(0)  # let the API run between batches

    def _handle(self, frames: list[bytes]) -> None:
        identity, rest = frames[0], frames[1:]
        try:
            msg = wire.decode(rest, self.config.max_frame_bytes)
        except wire.FrameError as exc:
            self._drop(exc.reason, exc.detail)
            return
        site = identity.decode(errors="replace")
        if msg.site != site:
            self._drop("wrong_site", f"routing id {identity[:64]!r} claims site {msg.site!r}")
            return
        peer = self.peers.get(site)
        if peer is None:
            self._drop("unknown_site", f"site {site!r} is not registered")
            return
        if not self.guard.accept(site, msg):
            self._drop("replay", f"{msg.type} from {site} epoch={msg.epoch} seq={msg.seq}")
            return
        self.counters[f"received_{msg.type}"] += 1
        peer.last_seen = time.time()
        if not peer.up:
            peer.up, peer.dirty = True, True
            log.info("site %s is up", site)
        if msg.type == wire.HELLO:
            self._on_hello(site, peer, msg["last_generation"])
        elif msg.type == wire.ACK:
            peer.held_generation = max(peer.held_generation, msg["generation"])
            if msg["generation"] > peer.acked_generation:
                peer.acked_generation, peer.dirty = msg["generation"], True
        elif msg.type == wire.STATUS:
            peer.status, peer.dirty = msg, True
        elif msg.type == wire.HEARTBEAT:
            peer.held_generation = msg["generation"]
            self._send(site, wire.HEARTBEAT, generation=peer.generation)
            self._push(site, peer)
        else:
            self._drop("bad_type", f"{msg.type} is not sent by sites")

    def _on_hello(self, site: str, peer: Peer, held: int) -> None:
        peer.held_generation = held
        log.info("site %s: hello, holds generation %d (desired %d)", site, held, peer.generation)
        if held > peer.generation:
            # The site holds a generation this store never made (central restored
            # from an older copy): reassert central's truth above it.
            generation, document = orchestrator.publish(
                self.store, site, self.config.keep_generations, floor=held
            )
            peer.generation, peer.document = generation, document
        self._push(site, peer, force=True)

    def _flush(self) -> None:
        """Write what the last batch changed, in one transaction."""
        dirty = [(site, p) for site, p in self.peers.items() if p.dirty]
        if not dirty:
            return
        with self.store.transaction():
            for site, peer in dirty:
                if peer.status is not None:
                    msg, peer.status = peer.status, None
                    orchestrator.apply_status(
                        self.store, site, msg["observed_generation"], msg["resources"]
                    )
                    self.store.db.execute(
                        "UPDATE sites SET inventory = ?, health = ? WHERE name = ?",
                        (dumps(msg["inventory"]), dumps(msg["health"]), site),
                    )
                self.store.db.execute(
                    "UPDATE sites SET state = ?, last_seen = ?, acked_generation = ? "
                    "WHERE name = ?",
                    ("up" if peer.up else "down", peer.last_seen, peer.acked_generation, site),
                )
                peer.flushed_seen = peer.last_seen
                peer.dirty = False

    # -- periodic sweep ----------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(min(self.config.heartbeat_interval_s, 1.0) / 2)
            try:
                self.sweep()
            except Exception:
                log.exception("hub: sweep failed")

    def sweep(self) -> None:
        """Mark silent sites down, refresh last-seen times, resend unacked documents."""
        now = time.time()
        cutoff = now - self.config.site_down_after_s
        for site, peer in self.peers.items():
            if peer.up and peer.last_seen < cutoff:
                peer.up, peer.dirty, peer.sent_generation = False, True, 0
                log.warning("site %s is down (silent for %.1fs)", site, now - peer.last_seen)
            elif peer.up:
                peer.dirty = peer.dirty or now - peer.flushed_seen >= 1.0
                self._push(site, peer)
        self._flush()
