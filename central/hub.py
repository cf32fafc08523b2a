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

Security (CURVE). The ROUTER is a CURVE server with central's key pair
(``hub_curve.key`` in the state directory, made on first start). A ZAP handler
on the same context admits exactly the enrolled site keys, from an in-memory
map the API updates on enroll and revoke (:meth:`Hub.enroll`, :meth:`Hub.revoke`).
Each message carries its sender's key as the ZAP User-Id; it is accepted only
if that key is enrolled *now* for the site named by the routing id and by the
body. Otherwise it is dropped as ``revoked_key`` or ``wrong_site``, logged at
WARNING and reported through :attr:`Hub.on_security_event`. The hub sends to a
site only while the key of its last accepted message is still the site's
enrolled key, so a revoked site's open connection receives nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

from central import orchestrator, zap
from central.bucket_replication import advertised, peers_of
from central.config import CentralConfig
from central.store import Store, dumps
from edged import wire

log = logging.getLogger(__name__)

BATCH_MAX = 1000  # messages handled between two commits (and two yields to the API)
HANDSHAKE_IVL_MS = 10_000  # a CURVE handshake not done by then is dropped (libzmq default: 30 s)
SECURITY_LOG_EVERY_S = 10.0  # per (reason, routing id, key): WARNING lines and security events
security_log = logging.getLogger("central.security")


def _log_security_event(kind: str, site: str, detail: str) -> None:
    security_log.info("security event %s (site %s): %s", kind, site, detail)


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
    key: str | None = None  # public key of the last accepted message's connection


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
        self.refused: Counter[str] = Counter()  # CURVE handshakes the ZAP handler refused
        self._tasks: list[asyncio.Task[None]] = []
        key_file = config.hub_secret_key_file or config.state_dir / zap.HUB_KEY_FILE
        self.keypair = zap.load_or_create(key_file)
        self.site_keys: dict[str, str] = {}  # site -> its enrolled public key
        self.key_sites: dict[str, str] = {}  # enrolled public key -> site (the ZAP allow-list)
        self.authenticator: zap.SiteKeyAuthenticator | None = None
        # Called as (kind, site, detail) on every refused or misattributed message
        # (rate-limited per peer); the audit log hooks in here.
        self.on_security_event: Callable[[str, str, str], None] = _log_security_event
        self._security_logged: dict[tuple[str, str, str], tuple[float, int]] = {}

    # -- lifecycle -------------------------------------------------------------------

    def _load(self) -> None:
        rows = self.store.query("SELECT name, acked_generation, public_key FROM sites")
        for row in rows:
            if row["public_key"]:
                self.enroll(row["name"], row["public_key"])
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
        # ZAP must run on the ROUTER's own context: libzmq asks the handler bound
        # at inproc://zeromq.zap.01 of that context (none there = every key admitted).
        self.authenticator = zap.SiteKeyAuthenticator(self.ctx, self.key_sites, self.refused)
        self.authenticator.start()
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.keypair.secret.encode())
        sock.setsockopt(zmq.ZAP_DOMAIN, zap.ZAP_DOMAIN.encode())
        sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_IVL_MS)
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
        log.info(
            "hub listening on %s (CURVE, server key %s; %d sites known, %d keys enrolled)",
            self.config.hub_endpoint,
            zap.fingerprint(self.keypair.public),
            len(self.peers),
            len(self.key_sites),
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None

    def stats(self) -> dict[str, Any]:
        return {
            "messages": dict(self.counters),
            "dropped": dict(self.drops),
            "dropped_total": sum(self.drops.values()),
            "sites_connected": sum(1 for p in self.peers.values() if p.up),
            "refused": dict(self.refused),
            "refused_total": sum(self.refused.values()),
            "public_key": self.keypair.public,
        }

    # -- enrollment (the API calls these after its transaction committed) --------------

    def enroll(self, site: str, public_key: str) -> None:
        """``site`` authenticates with ``public_key`` from now on (its old key stops working)."""
        old = self.site_keys.get(site)
        if old is not None and self.key_sites.get(old) == site:
            del self.key_sites[old]
        self.site_keys[site] = public_key
        self.key_sites[public_key] = site
        log.info("site %s: key %s enrolled", site, zap.fingerprint(public_key))

    def revoke(self, site: str) -> None:
        """Cut ``site`` off: its key is refused at handshake, its open link is ignored."""
        old = self.site_keys.pop(site, None)
        if old is not None and self.key_sites.get(old) == site:
            del self.key_sites[old]
            log.info("site %s: key %s revoked", site, zap.fingerprint(old))

    # -- from the API ----------------------------------------------------------------

    def published(self, site: str, generation: int, document: dict[str, Any]) -> None:
        """A new document for ``site`` committed: remember it and push it."""
        peer = self.peers.setdefault(site, Peer())
        if generation > peer.generation:
            peer.generation, peer.document = generation, document
        if self.sock is not None and peer.up and self._trusted(site, peer):
            self._send(site, wire.DESIRED, generation=generation, document=document)
            peer.sent_generation, peer.sent_at = generation, time.monotonic()

    # -- sending ---------------------------------------------------------------------

    def _trusted(self, site: str, peer: Peer) -> bool:
        """Whether the connection holding ``site``'s routing id last spoke with its enrolled key."""
        return peer.key is not None and self.site_keys.get(site) == peer.key

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
        if not self._trusted(site, peer):
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

    def _security_drop(self, reason: str, site: str, key: str | None, detail: str) -> None:
        """Drop a message whose key does not entitle it; WARNING + security event (rate-limited)."""
        self.drops[reason] += 1
        now = time.monotonic()
        slot = (reason, site, key or "")
        last, suppressed = self._security_logged.get(slot, (-1e9, 0))
        if now - last < SECURITY_LOG_EVERY_S:
            self._security_logged[slot] = (last, suppressed + 1)
            return
        if len(self._security_logged) > 10_000:
            self._security_logged.clear()
        self._security_logged[slot] = (now, 0)
        detail = f"key {zap.fingerprint(key)}: {detail}"
        if suppressed:
            detail += f" (+{suppressed} more since the last report)"
        log.warning("message dropped (%s) on routing id %r: %s", reason, site[:64], detail)
        try:
            self.on_security_event(reason, site, detail)
        except Exception:
            log.exception("hub: on_security_event failed")

    async def _receive_loop(self) -> None:
        assert self.sock is not None
        while True:
            # copy=False: zmq.Frame objects, which carry the sender's ZAP User-Id.
            batch = [await self.sock.recv_multipart(copy=False)]
            while len(batch) < BATCH_MAX and self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                batch.append(await self.sock.recv_multipart(copy=False))
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

    def _handle(self, parts: list[zmq.Frame]) -> None:
        try:
            key: str | None = parts[0].get("User-Id")
        except zmq.ZMQError:  # no metadata: not through ZAP (cannot happen with CURVE on)
            key = None
        identity = parts[0].bytes
        site = identity.decode(errors="replace")
        if not key:
            self._security_drop("unauthenticated", site, None, "message without a ZAP user id")
            return
        owner = self.key_sites.get(key)
        if owner is None:
            # Admitted at handshake, revoked (or rotated away) since.
            self._security_drop("revoked_key", site, key, "key no longer enrolled")
            return
        if owner != site:
            # This connection now holds ``site``'s routing id (ROUTER_HANDOVER):
            # send nothing to that routing id until ``site``'s own key speaks again.
            peer = self.peers.get(site)
            if peer is not None:
                peer.key = None
            self._security_drop(
                "wrong_site", site, key, f"key enrolled for {owner!r} used with routing id {site!r}"
            )
            return
        try:
            msg = wire.decode([p.bytes for p in parts[1:]], self.config.max_frame_bytes)
        except wire.FrameError as exc:
            self._drop(exc.reason, exc.detail)
            return
        if msg.site != site:
            self._security_drop(
                "wrong_site", site, key, f"key of {site!r} sent a message for {msg.site[:64]!r}"
            )
            return
        peer = self.peers.get(site)
        if peer is None:
            self._drop("unknown_site", f"site {site!r} is not registered")
            return
        if not self.guard.accept(site, msg):
            self._drop("replay", f"{msg.type} from {site} epoch={msg.epoch} seq={msg.seq}")
            return
        self.counters[f"received_{msg.type}"] += 1
        peer.key = key
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
        republish: set[str] = set()
        with self.store.transaction():
            for site, peer in dirty:
                if peer.status is not None:
                    msg, peer.status = peer.status, None
                    orchestrator.apply_status(
                        self.store, site, msg["observed_generation"], msg["resources"]
                    )
                    if self._endpoint_changed(site, msg["inventory"]):
                        republish.update(peers_of(self.store, site))
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
            # A site's replication endpoint is new or moved: its peers' documents name it
            # (in the same transaction, so a crash cannot lose the change for them).
            published = [
                (other, orchestrator.publish(self.store, other, self.config.keep_generations))
                for other in sorted(republish)
            ]
        for other, (generation, document) in published:
            self.published(other, generation, document)

    def _endpoint_changed(self, site: str, inventory: Any) -> bool:
        row = self.store.one("SELECT inventory FROM sites WHERE name = ?", (site,))
        try:
            before = json.loads(row["inventory"]) if row else {}
        except ValueError:
            before = {}
        return advertised(before) != advertised(inventory)

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
