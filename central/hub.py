"""The hub: central's end of the control channel (a ZeroMQ ROUTER).

Sites connect DEALERs whose routing id is their site name. The hub answers
``hello`` with the newest desired document when the site holds an older one,
records ``ack`` and ``status``, answers heartbeats, marks silent sites down,
and resends documents that were not acknowledged in time. Every frame that is
not a valid, new message from a known site is dropped and counted by reason;
nothing a peer sends can stop the receive loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio

from central import orchestrator
from central.config import CentralConfig
from central.store import Store, dumps
from edged import wire

log = logging.getLogger(__name__)


@dataclass
class Peer:
    """What the hub knows of a connected site between database writes."""

    last_seen: float = 0.0
    held_generation: int = -1
    sent_generation: int = 0
    sent_at: float = 0.0
    up: bool = False


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

    async def start(self) -> None:
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
        for row in self.store.query("SELECT name FROM sites WHERE state = 'up'"):
            # Until a site speaks again after our restart, it counts as down.
            self.store.db["sites"].update(row["name"], {"state": "down"})
        self._tasks = [
            asyncio.create_task(self._receive_loop(), name="hub-receive"),
            asyncio.create_task(self._sweep_loop(), name="hub-sweep"),
        ]
        log.info("hub listening on %s", self.config.hub_endpoint)

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

    # -- sending ---------------------------------------------------------------------

    async def _send(self, site: str, kind: str, **fields: Any) -> bool:
        assert self.sock is not None
        frames = self.encoder.encode(kind, site=site, **fields)
        try:
            await self.sock.send_multipart([site.encode(), *frames], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            self.counters[f"send_failed_{kind}"] += 1
            log.debug("site %s: %s not sent: %s", site, kind, exc)
            return False
        self.counters[f"sent_{kind}"] += 1
        return True

    async def push(self, site: str, *, force: bool = False) -> None:
        """Send ``site`` its newest document if it holds an older one.

        Without ``force`` a document already sent less than ``resend_after_s``
        ago is not sent again.
        """
        peer = self.peers.get(site)
        if peer is None or not peer.up:
            return
        latest = orchestrator.latest_document(self.store, site)
        if latest is None:
            return
        generation, document = latest
        if peer.held_generation >= generation:
            return
        fresh = time.monotonic() - peer.sent_at < self.config.resend_after_s
        if not force and peer.sent_generation >= generation and fresh:
            return
        if await self._send(site, wire.DESIRED, generation=generation, document=document):
            peer.sent_generation, peer.sent_at = generation, time.monotonic()

    def notify(self, site: str) -> None:
        """Called after a change to ``site`` committed: push without waiting."""
        if self.sock is not None:
            asyncio.get_running_loop().create_task(self.push(site))

    # -- receiving -------------------------------------------------------------------

    def _drop(self, reason: str, detail: str) -> None:
        self.drops[reason] += 1
        log.debug("frame dropped (%s): %s", reason, detail)

    async def _receive_loop(self) -> None:
        assert self.sock is not None
        while True:
            frames = await self.sock.recv_multipart()
            try:
                await self._handle(frames)
            except Exception:  # a bug must not stop the hub; log and count it
                self.drops["handler_error"] += 1
                log.exception("hub: error handling a message")

    async def _handle(self, frames: list[bytes]) -> None:
        identity, rest = frames[0], frames[1:]
        try:
            msg = wire.decode(rest, self.config.max_frame_bytes)
        except wire.FrameError as exc:
            self._drop(exc.reason, exc.detail)
            return
        try:
            site = identity.decode()
        except UnicodeDecodeError:
            site = ""
        if msg.site != site:
            self._drop("wrong_site", f"routing id {identity[:64]!r} claims site {msg.site!r}")
            return
        if self.store.db["sites"].count_where("name = ?", [site]) == 0:
            self._drop("unknown_site", f"site {site!r} is not registered")
            return
        if not self.guard.accept(site, msg):
            self._drop("replay", f"{msg.type} from {site} epoch={msg.epoch} seq={msg.seq}")
            return
        self.counters[f"received_{msg.type}"] += 1
        peer = self.peers.setdefault(site, Peer())
        peer.last_seen = time.time()
        if not peer.up:
            peer.up = True
            self.store.db["sites"].update(site, {"state": "up", "last_seen": peer.last_seen})
            log.info("site %s is up", site)
        handler = getattr(self, f"_on_{msg.type}")
        await handler(site, peer, msg)

    async def _on_hello(self, site: str, peer: Peer, msg: wire.Message) -> None:
        held = msg["last_generation"]
        peer.held_generation = held
        desired = self.store.db["sites"].get(site)["desired_generation"]
        log.info("site %s: hello, holds generation %d (desired %d)", site, held, desired)
        if held > desired:
            # The site holds a generation this store never made (central restored
            # from an older copy): reassert central's truth above it.
            orchestrator.publish(self.store, site, self.config.keep_generations, floor=held)
        await self.push(site, force=True)

    async def _on_ack(self, site: str, peer: Peer, msg: wire.Message) -> None:
        generation = msg["generation"]
        peer.held_generation = max(peer.held_generation, generation)
        with self.store.transaction():
            self.store.db.execute(
                "UPDATE sites SET acked_generation = MAX(acked_generation, ?) WHERE name = ?",
                (generation, site),
            )

    async def _on_status(self, site: str, peer: Peer, msg: wire.Message) -> None:
        orchestrator.apply_status(self.store, site, msg["observed_generation"], msg["resources"])
        self.store.db["sites"].update(
            site,
            {"inventory": dumps(msg["inventory"]), "health": dumps(msg["health"])},
        )

    async def _on_heartbeat(self, site: str, peer: Peer, msg: wire.Message) -> None:
        peer.held_generation = msg["generation"]
        desired = self.store.db["sites"].get(site)["desired_generation"]
        await self._send(site, wire.HEARTBEAT, generation=desired)
        if peer.held_generation < desired:
            await self.push(site)

    # -- periodic sweep ----------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(min(self.config.heartbeat_interval_s, 1.0) / 2)
            try:
                await self.sweep()
            except Exception:
                log.exception("hub: sweep failed")

    async def sweep(self) -> None:
        """Mark silent sites down, persist last-seen times, resend unacked documents."""
        cutoff = time.time() - self.config.site_down_after_s
        with self.store.transaction():
            for site, peer in self.peers.items():
                if peer.up and peer.last_seen < cutoff:
                    peer.up = False
                    peer.sent_generation = 0
                    self.store.db["sites"].update(
                        site, {"state": "down", "last_seen": peer.last_seen}
                    )
                    log.warning(
                        "site %s is down (silent for %.1fs)", site, time.time() - peer.last_seen
                    )
                elif peer.up:
                    self.store.db["sites"].update(site, {"last_seen": peer.last_seen})
        for site, peer in list(self.peers.items()):
            if peer.up:
                await self.push(site)
