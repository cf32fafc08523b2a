"""central's image feed with the real Hub's ZAP handler, and the site's client, over CURVE
on loopback: ranges served, refusals named, garbage dropped and counted, strangers kept out."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from central import zap
from central.config import CentralConfig
from central.hub import Hub
from central.image_feed import ImageFeed
from central.store import Store, now
from edged import image_wire
from edged.image_cache import ImageCache, ImageEntry
from edged.image_fetch import FeedRefused, FetchError, ImageClient
from edged.link import CurveKeys

DATA = os.urandom(2 * image_wire.CHUNK_MAX + 10)
IMAGE = {
    "id": "img-1",
    "sha256": hashlib.sha256(DATA).hexdigest(),
    "size": len(DATA),
    "format": "raw",
}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.config = CentralConfig(
            state_dir=tmp_path,
            hub_endpoint=f"tcp://127.0.0.1:{_port()}",
            image_endpoint=f"tcp://127.0.0.1:{_port()}",
        )
        self.store = Store(tmp_path / "central.db")
        self.ctx = zmq.asyncio.Context()
        self.hub = Hub(self.config, self.store, self.ctx)
        (tmp_path / "images").mkdir()
        (tmp_path / "images" / "img-1").write_bytes(DATA)
        (tmp_path / "images" / "img-2").write_bytes(b"another site's image")
        self.feed = ImageFeed(self.config.image_endpoint, tmp_path / "images", self.hub)
        self.site_key = zap.new_keypair()
        with self.store.transaction():
            self.store.db["sites"].insert(
                {"name": "site-a", "created_at": now(), "public_key": self.site_key.public}
            )
        self.client_ctx = zmq.asyncio.Context()

    async def start(self) -> None:
        await self.hub.start()
        await self.feed.start()
        self.hub.peers["site-a"].document = {"images": [IMAGE]}

    def client(self, pair: zap.KeyPair | None = None, timeout_s: float = 5.0) -> ImageClient:
        pair = pair or self.site_key
        keys = CurveKeys(pair.public, pair.secret, self.hub.keypair.public)
        return ImageClient(self.config.image_endpoint, lambda: keys, self.client_ctx, timeout_s)

    def raw(self) -> zmq.asyncio.Socket:
        sock = self.client_ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.hub.keypair.public.encode())
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.site_key.public.encode())
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.site_key.secret.encode())
        sock.connect(self.config.image_endpoint)
        return sock

    async def close(self) -> None:
        await self.feed.stop()
        await self.hub.stop()
        self.client_ctx.destroy(linger=0)
        self.ctx.destroy(linger=0)
        self.store.close()


@pytest.fixture
async def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    r = Rig(tmp_path)
    await r.start()
    yield r
    await r.close()


async def test_site_pulls_a_listed_image_into_its_cache(rig: Rig, tmp_path: Path) -> None:
    client = rig.client()
    cache = ImageCache(tmp_path / "site-cache")
    path = await cache.fetch(ImageEntry(**IMAGE), client.get)
    assert path.read_bytes() == DATA
    assert rig.feed.counters["chunks_sent"] == 3
    client.close()


async def test_refusals_name_the_reason(rig: Rig) -> None:
    client = rig.client()
    with pytest.raises(FeedRefused, match="not in site site-a's desired state"):
        await client.get("img-2", 0, 100)  # exists at central, not in this site's document
    with pytest.raises(FeedRefused, match="not in site site-a's desired state"):
        await client.get("nope", 0, 100)
    rig.hub.peers["site-a"].document = {"images": [IMAGE, {**IMAGE, "id": "gone"}]}
    with pytest.raises(FeedRefused, match="has no file"):
        await client.get("gone", 0, 100)
    with pytest.raises(FeedRefused, match="past the end"):
        await client.get("img-1", len(DATA) + 1, 100)
    client.close()


async def test_unenrolled_key_gets_nothing(rig: Rig) -> None:
    stranger = rig.client(zap.new_keypair(), timeout_s=1.0)
    with pytest.raises(FetchError):
        await stranger.get("img-1", 0, 100)
    assert rig.feed.counters["chunks_sent"] == 0
    # Refused at the CURVE handshake by the hub's ZAP handler (same context as the feed).
    assert rig.hub.refused["unenrolled_key"] >= 1
    stranger.close()


async def test_garbage_frames_dropped_counted_and_the_feed_serves_on(rig: Rig) -> None:
    sock = rig.raw()
    garbage: list[list[bytes]] = [
        [b"image_get"],
        [b"hello", b"{}"],
        [b"image_get", b"\xff\xfe"],
        [b"image_get", b'{"id":"img-1","offset":0,"length":99999999}'],
        [b"image_get", b'{"id":"img-1"}', b"extra"],
    ]
    for frames in garbage:
        await sock.send_multipart(frames)
    await sock.send_multipart(image_wire.encode_request("img-1", 0, 10))
    reply: Any = image_wire.decode_reply(await asyncio.wait_for(sock.recv_multipart(), 5))
    assert reply.data == DATA[:10] and reply.total == len(DATA) and not reply.eof
    assert sum(rig.feed.drops.values()) == len(garbage)
    assert set(rig.feed.drops) == {"frame_count", "bad_type", "bad_json", "bad_field"}
    sock.close(linger=0)
