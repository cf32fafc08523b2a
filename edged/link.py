"""edged's end of the control channel: a DEALER with heartbeats and reconnect.

The DEALER's routing id is the site name. libzmq reconnects the TCP link by
itself; the link watches for silence from central (``central_timeout_s``)
and, when central is heard again, says ``hello`` with the generation held, so
a restarted central (or one that missed pushes) catches the site up.
Frames that are not valid new messages for this site are dropped and counted.

The link is always CURVE: the DEALER authenticates with the site's key pair
(``curve_secret_key_file``) and accepts only a server holding
``central_public_key``. :func:`load_curve_keys` reads and checks both before
the daemon starts (``skerry-edged`` refuses to start without them). The key
file holds two lines, ``public: <z85>`` and ``secret: <z85>`` (blank lines and
``#`` comments ignored), mode 0600 — the format ``skerry sites enroll
--write-secret`` writes (``edged/curvekeys.py``).
"""

from __future__ import annotations

import logging
import stat
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from edged import wire
from edged.config import EdgeConfig
from edged.configfile import ConfigError
from edged.curvekeys import KeyFileError, parse_key_file, z85_key_problem

log = logging.getLogger(__name__)

MessageHandler = Callable[[wire.Message], Awaitable[None]]

HANDSHAKE_IVL_MS = 5000  # a stalled CURVE handshake is retried after this (libzmq: 30 s)
# libzmq does not reconnect after central's ZAP handler refused our key (not yet
# enrolled, revoked, rotated): a link silent this long is closed and opened anew,
# re-reading the key file, so a site enrolled (or re-keyed) later comes in by itself.
RELINK_AFTER_S = 10.0


@dataclass(frozen=True)
class CurveKeys:
    public: str  # this site's
    secret: str
    server: str  # central's public key


def load_curve_keys(config: EdgeConfig, source: str = "<config>") -> CurveKeys:
    """The link's CURVE keys; ConfigError naming ``source``, the key and the file otherwise."""
    if not config.central_public_key:
        raise ConfigError(
            f"{source}: key 'central_public_key' is required (central's CURVE public key, "
            "Z85; `skerry hub key` prints it): edged never talks to central in the clear"
        )
    problem = z85_key_problem(config.central_public_key)
    if problem:
        raise ConfigError(f"{source}: key 'central_public_key' {problem}")
    path: Path | None = config.curve_secret_key_file
    if path is None:
        raise ConfigError(
            f"{source}: key 'curve_secret_key_file' is required (the site's CURVE key pair, "
            "as written by `skerry sites enroll NAME --write-secret FILE`)"
        )
    where = f"{source}: key 'curve_secret_key_file': {path}"
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not a text key file") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{where}: holds a secret key but is open to group/others "
            f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it"
        )
    try:
        pair = parse_key_file(text, where)
    except KeyFileError as exc:
        raise ConfigError(str(exc)) from None
    return CurveKeys(pair.public, pair.secret, config.central_public_key)


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
        self.opened_at = 0.0
        self.need_hello = True
        self.counters: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()

    def open(self) -> None:
        keys = load_curve_keys(self.config)
        sock = self.ctx.socket(zmq.DEALER)
        # CURVE (and every other option) before connect.
        sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server.encode())
        sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public.encode())
        sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret.encode())
        sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_IVL_MS)
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
        self.opened_at = time.monotonic()
        log.info("link: CURVE key %s, central's key %s", keys.public[:8], keys.server[:8])

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
            relink_after = max(RELINK_AFTER_S, 2 * self.config.central_timeout_s)
            if not self.reachable and now - max(self.last_heard, self.opened_at) > relink_after:
                self._relink()
            if self.need_hello and await self.send(
                wire.HELLO, last_generation=self.held_generation()
            ):
                self.need_hello = False
            if now >= next_beat:
                await self.send(wire.HEARTBEAT, generation=self.held_generation())
                next_beat = now + interval
            if await self.sock.poll(timeout=int(interval * 1000 / 2), flags=zmq.POLLIN):
                await self._receive(await self.sock.recv_multipart())

    def _relink(self) -> None:
        """A fresh socket (and handshake): libzmq gives up on a link whose key was refused."""
        log.info("link: nothing from central for %.0fs; reconnecting afresh", RELINK_AFTER_S)
        self.counters["relinks"] += 1
        self.close()
        try:
            self.open()
        except ConfigError as exc:  # the key file went bad while running: keep trying
            log.error("link: %s", exc)
            self.sock = self.ctx.socket(zmq.DEALER)  # an unconnected socket: sends fail
            self.opened_at = time.monotonic()
        self.need_hello = True

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
