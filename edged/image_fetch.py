"""Pulling images from central: a CURVE DEALER client, and the puller that fills the cache.

The client asks central's image feed (``central_image_endpoint``) for one byte
range at a time with the site's own CURVE key pair (the same as the control
link's): the site's key is its only credential. Replies that are malformed, or
that answer another request (a late reply to one that timed out), are dropped
and counted. A request not answered within ``timeout_s`` fails; the socket is
then made afresh (libzmq gives up on a link whose handshake was refused).

The puller runs in the daemon's event loop: for every image the held document
lists and the cache lacks, it checks the signature (an image that may not boot
is not downloaded), then downloads it; progress and refusals are what the
reconcile pass reports as the reason of the servers waiting for the image.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import zmq
import zmq.asyncio

from edged import image_wire
from edged.config import EdgeConfig
from edged.image_cache import (
    ImageCache,
    ImageEntry,
    ImageVerifyError,
    entries_from_document,
    fleet_requires_signed,
    signature_problem,
    trusted_keys,
)
from edged.link import CurveKeys
from edged.wire import FrameError

log = logging.getLogger(__name__)

DEFAULT_IMAGE_PORT = 8702
HANDSHAKE_IVL_MS = 5000


class FetchError(Exception):
    """Central could not be asked or did not answer (temporary: the download resumes later)."""


class FeedRefused(Exception):
    """Central answered that it will not serve the image."""


def image_endpoint(config: EdgeConfig) -> str:
    """``central_image_endpoint``, or central_endpoint's host with port 8702."""
    if config.central_image_endpoint:
        return config.central_image_endpoint
    parts = urlsplit(config.central_endpoint)
    host = parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme or 'tcp'}://{host}:{DEFAULT_IMAGE_PORT}"


class ImageClient:
    """One request at a time to central's image feed."""

    def __init__(
        self,
        endpoint: str,
        keys: Callable[[], CurveKeys],
        ctx: zmq.asyncio.Context,
        timeout_s: float = 10.0,
    ) -> None:
        self.endpoint = endpoint
        self.keys = keys  # read at every (re)connect, as the control link does
        self.ctx = ctx
        self.timeout_s = timeout_s
        self.drops: Counter[str] = Counter()
        self.sock: zmq.asyncio.Socket | None = None
        self._lock = asyncio.Lock()

    def _open(self) -> zmq.asyncio.Socket:
        if self.sock is None:
            keys = self.keys()
            sock = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server.encode())
            sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public.encode())
            sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret.encode())
            sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_IVL_MS)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)
            sock.setsockopt(zmq.RECONNECT_IVL, 200)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
            sock.setsockopt(zmq.MAXMSGSIZE, image_wire.CHUNK_MAX + 2 * image_wire.HEADER_MAX)
            sock.connect(self.endpoint)
            self.sock = sock
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    async def get(self, image_id: str, offset: int, length: int) -> image_wire.Chunk:
        """The chunk at ``offset``; FetchError when central does not answer in time,
        FeedRefused when it refuses."""
        async with self._lock:
            sock = self._open()
            try:
                await asyncio.wait_for(
                    sock.send_multipart(image_wire.encode_request(image_id, offset, length)),
                    self.timeout_s,
                )
                deadline = time.monotonic() + self.timeout_s
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError
                    frames = await asyncio.wait_for(sock.recv_multipart(), left)
                    try:
                        reply = image_wire.decode_reply(frames)
                    except FrameError as exc:
                        self.drops[exc.reason] += 1
                        log.debug("image feed reply dropped (%s): %s", exc.reason, exc.detail)
                        continue
                    if reply.image_id != image_id:
                        self.drops["stale"] += 1
                        continue
                    if isinstance(reply, image_wire.Refused):
                        raise FeedRefused(reply.error)
                    if reply.offset != offset:
                        self.drops["stale"] += 1
                        continue
                    return reply
            except TimeoutError:
                self.close()  # a fresh socket and handshake next time
                raise FetchError(f"no answer from central's image feed {self.endpoint}") from None


@dataclass(frozen=True)
class ImageStatus:
    """Whether a server may be created from an image: ready, pending (why) or error (why)."""

    state: str  # "ready" | "pending" | "error"
    reason: str = ""


class ImagePuller:
    """Keeps the cache holding every image the held document lists."""

    def __init__(
        self,
        cache: ImageCache,
        get_range: Callable[..., Any],
        document: Callable[[], Mapping[str, Any] | None],
        *,
        require_signed: bool = False,
        ttl_s: float = 7 * 86400.0,
        on_cached: Callable[[], None] = lambda: None,
        retry_s: float = 3.0,
    ) -> None:
        self.cache = cache
        self.get_range = get_range
        self.document = document
        self.require_signed = require_signed
        self.ttl_s = ttl_s
        self.on_cached = on_cached
        self.retry_s = retry_s
        self.wake = asyncio.Event()
        # (image id, sha256) -> why it was refused: not pulled again for that entry.
        self.failed: dict[tuple[str, str], str] = {}
        self.progress: dict[str, int] = {}
        self.trouble: dict[str, str] = {}  # image id -> why the last try stopped
        self.counters: Counter[str] = Counter()

    # -- what the reconcile pass asks (from its worker thread; reads only) ---------------

    def requires_signed(self, document: Mapping[str, Any] | None) -> bool:
        return self.require_signed or fleet_requires_signed(document)

    def status(self, entry: ImageEntry, document: Mapping[str, Any] | None) -> ImageStatus:
        problem = signature_problem(entry, trusted_keys(document), self.requires_signed(document))
        if problem:
            return ImageStatus("error", problem)
        refused = self.failed.get((entry.id, entry.sha256))
        if refused:
            return ImageStatus("error", refused)
        if self.cache.has(entry):
            return ImageStatus("ready")
        done = self.progress.get(entry.id, self.cache.partial_bytes(entry.id))
        why = f"pulling image {entry.id}: {100 * done // entry.size}%"
        if entry.id in self.trouble:
            why += f" ({self.trouble[entry.id]})"
        return ImageStatus("pending", why)

    def refuse(self, entry: ImageEntry, reason: str) -> None:
        """Remember a verification failure found at create time (the file changed on disk)."""
        self.failed[(entry.id, entry.sha256)] = reason

    # -- the loop ----------------------------------------------------------------------

    async def pass_once(self) -> None:
        document = self.document()
        entries = entries_from_document(document)
        keys = trusted_keys(document)
        require = self.requires_signed(document)
        self.failed = {
            k: v
            for k, v in self.failed.items()
            if entries.get(k[0]) and entries[k[0]].sha256 == k[1]
        }
        for entry in entries.values():
            if self.cache.has(entry) or (entry.id, entry.sha256) in self.failed:
                continue
            if signature_problem(entry, keys, require):
                continue  # may not boot: not worth the bytes
            await self._pull(entry)
        self.cache.touch(i for i in entries if i in self.cache.cached_ids())
        self.cache.gc(entries, self.ttl_s)

    async def _pull(self, entry: ImageEntry) -> None:
        def progress(done: int) -> None:
            self.progress[entry.id] = done

        try:
            await self.cache.fetch(entry, self.get_range, progress)
        except ImageVerifyError as exc:
            self.counters["verify_failed"] += 1
            self.failed[(entry.id, entry.sha256)] = str(exc)
            log.warning("%s", exc)
            self.on_cached()
        except FeedRefused as exc:
            self.counters["refused"] += 1
            self.trouble[entry.id] = f"central refused: {exc}"
            log.warning("image %s: central refused: %s", entry.id, exc)
        except FetchError as exc:
            self.counters["unreachable"] += 1
            self.trouble[entry.id] = str(exc)
            log.info("image %s: %s; resuming later", entry.id, exc)
        else:
            self.counters["cached"] += 1
            self.trouble.pop(entry.id, None)
            self.on_cached()
        finally:
            self.progress.pop(entry.id, None)

    async def run(self) -> None:
        while True:
            try:
                await self.pass_once()
            except Exception:
                log.exception("image puller: pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.retry_s)
            self.wake.clear()
