"""The image feed: sites pull image bytes from central over a CURVE ZeroMQ socket.

A ROUTER bound at ``image_endpoint`` on the hub's ZeroMQ context, so the hub's
ZAP handler admits exactly the enrolled site keys; the CURVE server key is the
hub's. A site asks for a byte range of an image (:mod:`edged.image_wire`) and
gets it from central's image store, at most ``CHUNK_MAX`` bytes per answer. The
site is known by the key it speaks with (the ZAP User-Id), never by what it
says, and it may only pull the images its own newest desired document lists.
Frames that are not a valid request are dropped and counted; nothing a peer
sends stops the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from central import zap
from central.hub import HANDSHAKE_IVL_MS, Hub
from edged import image_wire
from edged.wire import FrameError

log = logging.getLogger(__name__)


def read_range(path: Path, offset: int, length: int) -> tuple[int, bytes]:
    """The file's size and up to ``length`` bytes from ``offset``."""
    with path.open("rb") as f:
        total = os.fstat(f.fileno()).st_size
        f.seek(min(offset, total))
        return total, f.read(length)


class ImageFeed:
    """Serves byte ranges of the images in each site's desired document."""

    def __init__(self, endpoint: str, image_root: Path, hub: Hub) -> None:
        self.endpoint = endpoint
        self.image_root = image_root
        self.hub = hub
        self.sock: zmq.asyncio.Socket | None = None
        self.counters: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        sock = self.hub.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.hub.keypair.secret.encode())
        sock.setsockopt(zmq.ZAP_DOMAIN, zap.ZAP_DOMAIN.encode())
        sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_IVL_MS)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        sock.setsockopt(zmq.MAXMSGSIZE, 64 * 1024)  # requests are small
        try:
            sock.bind(self.endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise RuntimeError(f"image feed cannot bind {self.endpoint}: {exc}") from exc
        self.sock = sock
        self._task = asyncio.create_task(self._loop(), name="image-feed")
        log.info("image feed listening on %s (CURVE)", self.endpoint)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    def stats(self) -> dict[str, Any]:
        return {"messages": dict(self.counters), "dropped": dict(self.drops)}

    def _drop(self, reason: str, detail: str) -> None:
        self.drops[reason] += 1
        log.debug("image feed: frame dropped (%s): %s", reason, detail)

    async def _loop(self) -> None:
        assert self.sock is not None
        while True:
            parts = await self.sock.recv_multipart(copy=False)
            try:
                reply = await self._handle(parts)
            except Exception:  # a bug must not stop the feed
                self.drops["handler_error"] += 1
                log.exception("image feed: error handling a request")
                continue
            if reply is None:
                continue
            exc = self.sock.send_multipart([parts[0].bytes, *reply], flags=zmq.NOBLOCK).exception()
            if exc is not None:
                self.counters["send_failed"] += 1

    async def _handle(self, parts: list[zmq.Frame]) -> list[bytes] | None:
        try:
            key: str | None = parts[0].get("User-Id")
        except zmq.ZMQError:
            key = None
        site = self.hub.key_sites.get(key or "")
        if site is None:
            self._drop("unauthenticated", "no enrolled key on the request")
            return None
        try:
            req = image_wire.decode_request([p.bytes for p in parts[1:]])
        except FrameError as exc:
            self._drop(exc.reason, f"site {site}: {exc.detail}")
            return None
        peer = self.hub.peers.get(site)
        listed = peer.document.get("images", []) if peer is not None else []
        if not any(isinstance(i, dict) and i.get("id") == req.image_id for i in listed):
            self.counters["refused_not_listed"] += 1
            return image_wire.encode_error(
                req.image_id, f"image {req.image_id} is not in site {site}'s desired state"
            )
        try:
            total, data = await asyncio.to_thread(
                read_range, self.image_root / req.image_id, req.offset, req.length
            )
        except FileNotFoundError:
            self.counters["refused_no_file"] += 1
            return image_wire.encode_error(req.image_id, f"image {req.image_id} has no file")
        if req.offset > total:
            return image_wire.encode_error(
                req.image_id, f"offset {req.offset} is past the end ({total} bytes)"
            )
        self.counters["chunks_sent"] += 1
        self.counters["bytes_sent"] += len(data)
        return image_wire.encode_chunk(req.image_id, req.offset, total, data)
