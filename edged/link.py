"""edged's end of the control channel: a DEALER with heartbeats and reconnect.

The DEALER's routing id is the site name. libzmq reconnects the TCP link by
itself; the link watches for silence from central (``central_timeout_s``)
and, when central is heard again, says ``hello`` with the generation held, so
a restarted central (or one that missed pushes) catches the site up.
Frames that are not valid new messages for this site are dropped and counted.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import zmq
import zmq.asyncio

from edged import wire
from edged.config import EdgeConfig

log = logging.getLogger(__name__)

MessageHandler = Callable[[wire.Message], Awaitable[None]]


class Link:
    """Talks to central; calls ``on_message`` for every valid desired/heartbeat."""

    def __init__(
        self,
        config: EdgeConfig,
        ctx: zmq.asyncio.Context,
        epoch: int,
        held_generation: Callable[[], int],
        on_message: MessageHandler,
        on_reconnect: Callable[[], Awaitable[None]],
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.encoder = wire.Encoder(config.site, epoch)
        self.guard = wire.ReplayGuard()
        self.held_generation = held_generation
        self.on_message = on_message
        self.on_reconnect = on_reconnect
        self.sock: zmq.asyncio.Socket | None = None
        self.reachable = False
        self.last_heard = 0.0
        self.need_hello = True
        self.counters: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()

    def open(self) -> None:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, self.config.site.encode())
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # never queue for a link that is not up
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        sock.setsockopt(zmq.MAXMSGSIZE, 4 * self.config.max_frame_bytes)
        sock.connect(self.config.central_endpoint)
        self.sock = sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    def stats(self) -> dict[str, Any]:
        return {
            "central_reachable": self.reachable,
            "messages": dict(self.counters),
            "dropped": dict(self.drops),
            "dropped_total": sum(self.drops.values()),
        }

    async def send(self, kind: str, **fields: Any) -> bool:
        """Send a message; False (and counted) when the link is down."""
        assert self.sock is not None
        try:
            await self.sock.send_multipart(self.encoder.encode(kind, **fields), flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            self.counters[f"send_failed_{kind}"] += 1
            return False
        self.counters[f"sent_{kind}"] += 1
        return True

    async def run(self) -> None:
        """Receive, heartbeat and watch for silence until cancelled."""
        assert self.sock is not None
        interval = self.config.heartbeat_interval_s
        next_beat = 0.0
        while True:
            now = time.monotonic()
            if self.reachable and now - self.last_heard > self.config.central_timeout_s:
                self.reachable = False
                self.need_hello = True
                log.warning("central unreachable (silent %.1fs); running on", now - self.last_heard)
            if self.need_hello and await self.send(
                wire.HELLO, last_generation=self.held_generation()
            ):
                self.need_hello = False
            if now >= next_beat:
                await self.send(wire.HEARTBEAT, generation=self.held_generation())
                next_beat = now + interval
            if await self.sock.poll(timeout=int(interval * 1000 / 2), flags=zmq.POLLIN):
                await self._receive(await self.sock.recv_multipart())

    async def _receive(self, frames: list[bytes]) -> None:
        try:
            msg = wire.decode(frames, self.config.max_frame_bytes)
        except wire.FrameError as exc:
            self._drop(exc.reason, exc.detail)
            return
        if msg.site != self.config.site:
            self._drop("wrong_site", f"message for site {msg.site!r}")
            return
        if msg.type not in (wire.DESIRED, wire.HEARTBEAT):
            self._drop("bad_type", f"{msg.type} is not sent by central")
            return
        if not self.guard.accept("central", msg):
            self._drop("replay", f"{msg.type} epoch={msg.epoch} seq={msg.seq}")
            return
        self.counters[f"received_{msg.type}"] += 1
        self.last_heard = time.monotonic()
        if not self.reachable:
            self.reachable = True
            log.info("central reachable")
            await self.on_reconnect()
        try:
            await self.on_message(msg)
        except Exception:  # a handler bug must not stop the link
            self.drops["handler_error"] += 1
            log.exception("error handling %s", msg.type)

    def _drop(self, reason: str, detail: str) -> None:
        self.drops[reason] += 1
        log.debug("frame dropped (%s): %s", reason, detail)
