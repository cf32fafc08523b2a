"""central repairs its own corrupt copies from a site, through the site's sender link.

Real ObjectStores (files backend), central's real Receiver (CURVE ROUTER, ZAP on
its context) with the SiteLinks hook, and the sites' real Channels (CURVE DEALERs)
answering ``fetch`` from their stores, on loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from edged.curvekeys import new_keypair
from edged.objects.stores import open_store
from edged.replication import protocol as p
from edged.replication.cursors import CursorStore
from edged.replication.peers import PeerKeys
from edged.replication.receiver import Receiver
from edged.replication.repair import Repairer
from edged.replication.reverse_fetch import FetchAnswers, SiteLinks
from edged.replication.sender import Channel, Sender, Settings, Target, fetch

SETTINGS = Settings(reply_timeout_s=5.0, poll_s=0.05, inline_max=1024, chunk_bytes=64 * 1024)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Site:
    """A site's store and its sender link to central, answering central's fetches."""

    def __init__(self, name: str, tmp: Path, central: Central, buckets: list[str]) -> None:
        self.name = name
        self.keys = new_keypair()
        self.store = open_store(name, tmp / name)
        for bucket in ("bkt1", "bkt2"):
            self.store.ensure_bucket("p1", bucket, {})
        self.cursors = CursorStore(tmp / name / "replication.db")
        target = Target("central", central.endpoint, central.server.public)
        self.channel = Channel(central.ctx, name, self.keys.public, self.keys.secret, target)
        self.channel.on_request = FetchAnswers(self.channel, self.store, lambda: buckets)
        self.sender = Sender(
            name, self.store, self.cursors, self.channel, lambda: buckets, SETTINGS
        )

    async def connect(self) -> None:
        """Open the link and replicate what the store holds (central learns the link)."""
        self.channel.open()
        self.store.put("bkt1", f"hello-from-{self.name}", [b"hi"])
        while await asyncio.wait_for(self.sender.pass_once(), 30):
            pass

    async def close(self) -> None:
        await self.channel.close()
        self.store.close()
        self.cursors.close()


class Central:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.store = open_store("central", tmp / "central")
        for bucket in ("bkt1", "bkt2"):
            self.store.ensure_bucket("p1", bucket, {})
        self.ctx = zmq.asyncio.Context()
        self.server = new_keypair()
        self.zap = PeerKeys(self.ctx)
        self.zap.start()
        self.connected: list[str] = []
        self.links = SiteLinks(lambda: self.receiver.sock, on_site=self.connected.append)
        self.receiver = Receiver(
            self.store, tmp / "staging", self.zap.site_of, intercept=self.links.intercept
        )
        self.endpoint = f"tcp://127.0.0.1:{_free_port()}"
        self.receiver.bind(self.ctx, self.endpoint, self.server.secret)
        self.receiver.start()
        self.policy: dict[str, list[str]] = {"bkt1": [], "bkt2": []}  # bucket -> its sites
        self.sites: list[Site] = []

    def site(self, name: str, buckets: list[str] | None = None) -> Site:
        site = Site(name, self.tmp, self, buckets if buckets is not None else ["bkt1"])
        self.sites.append(site)
        self.zap.admit({s.keys.public: s.name for s in self.sites})
        return site

    def repairer(self, **kw: float) -> Repairer:
        sources: Callable[[str], list] = lambda b: self.links.channels(self.policy[b])  # noqa: E731
        return Repairer("central", self.store, sources, self.tmp, interval_s=0, **kw)  # type: ignore[arg-type]

    def flip_a_byte(self, key: str, bucket: str = "bkt1") -> None:
        row = self.store.index.version(bucket, key)
        path = self.store.backend.path(row["blob_id"])
        flipped = bytearray(path.read_bytes())
        flipped[len(flipped) // 2] ^= 0xFF
        path.write_bytes(bytes(flipped))

    async def close(self) -> None:
        for site in self.sites:
            await site.close()
        await self.receiver.stop()
        self.zap.stop()
        self.ctx.destroy(linger=0)
        self.store.close()


@pytest.fixture
async def central(tmp_path: Path) -> AsyncIterator[Central]:
    c = Central(tmp_path)
    try:
        yield c
    finally:
        await c.close()


def content(store, key: str, bucket: str = "bkt1") -> bytes:  # type: ignore[no-untyped-def]
    _v, chunks = store.get(bucket, key)
    return b"".join(chunks)


async def until(check: Callable[[], bool]) -> None:
    for _ in range(1500):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never held")


async def test_central_repairs_a_flipped_byte_from_the_site_that_holds_it(
    central: Central,
) -> None:
    data = os.urandom(300 * 1024)  # several data frames
    a = central.site("site-a")
    central.policy["bkt1"] = ["site-a"]
    a.store.put("bkt1", "k", [data])
    await a.connect()
    assert content(central.store, "k") == data
    central.flip_a_byte("k")
    repairer = central.repairer()
    assert await repairer.pass_once(scrub=True) == 1
    assert repairer.counters["found_corrupt"] == 1
    assert repairer.counters["repaired"] == 1
    assert content(central.store, "k") == data
    assert central.store.corrupt() == []
    assert a.channel.counters["fetch_answered"] == 1
    assert central.links.stats()["connected"] == ["site-a"]
    assert repairer.stats()["corrupt_unrepaired"] == []


async def test_a_site_without_the_object_says_missing_and_central_asks_another(
    central: Central,
) -> None:
    a, b = central.site("site-a"), central.site("site-b")
    central.policy["bkt1"] = ["site-a", "site-b"]
    a.store.put("bkt1", "k", [b"x" * 5000])
    await a.connect()
    await b.connect()  # heard last: asked first, and it holds no "k"
    central.flip_a_byte("k")
    repairer = central.repairer()
    assert await repairer.pass_once(scrub=True) == 1
    assert repairer.counters["source_missing"] == 1
    assert b.channel.counters["fetch_answered"] == 1  # answered: missing
    assert a.channel.counters["fetch_answered"] == 1
    assert content(central.store, "k") == b"x" * 5000


async def test_no_connected_site_holding_the_bucket_is_retried_when_one_connects(
    central: Central,
) -> None:
    a, c = central.site("site-a"), central.site("site-c")
    central.policy["bkt1"] = ["site-a"]  # site-c holds a copy but the policy does not list it
    a.store.put("bkt1", "k", [b"good bytes"])
    a.channel.open()
    while await a.sender.pass_once():
        pass
    await a.channel.close()  # site-a goes away
    await c.connect()
    c.store.put("bkt1", "k", [b"c's bytes"])  # not sent: c's sender is not running
    central.flip_a_byte("k")
    repairer = central.repairer(retry_s=3600.0)
    assert await repairer.pass_once(scrub=True) == 0
    assert repairer.counters["no_source"] == 1
    assert c.channel.counters["fetch_answered"] == 0  # not asked: not in the policy
    [left] = repairer.stats()["corrupt_unrepaired"]
    assert left["key"] == "k" and "reachable" in left["why"]
    # The repairer runs on; site-a connecting again wakes it (no wait for a scrub).
    central.links.on_site = lambda _site: repairer.wake.set()
    task = asyncio.create_task(repairer.run())
    try:
        a.channel.open()
        a.store.put("bkt1", "other", [b"o"])  # any message tells central the link is back
        while await a.sender.pass_once():
            pass
        await until(lambda: repairer.counters["repaired"] == 1)
    finally:
        task.cancel()
    assert content(central.store, "k") == b"good bytes"
    assert repairer.stats()["corrupt_unrepaired"] == []


async def test_a_gone_link_is_tried_and_forgotten(central: Central) -> None:
    a = central.site("site-a")
    central.policy["bkt1"] = ["site-a"]
    a.store.put("bkt1", "k", [b"data"])
    await a.connect()
    await a.channel.close()
    central.flip_a_byte("k")
    repairer = central.repairer()
    # ROUTER_MANDATORY refuses a routing id whose connection is gone (once noticed).
    for _ in range(1500):
        if await _unreachable(central):
            break
        await asyncio.sleep(0.02)
    assert await repairer.pass_once(scrub=True) == 0
    assert "site-a" not in central.links.routes
    assert repairer.stats()["corrupt_unrepaired"][0]["key"] == "k"


async def _unreachable(central: Central) -> bool:
    sock = central.receiver.sock
    assert sock is not None
    routing = central.links.routes["site-a"][0]
    try:
        await sock.send_multipart([routing, *p.encode(p.MISSING, 1)])
    except zmq.ZMQError:
        return True
    return False


async def test_a_site_answers_only_for_its_buckets_and_only_central(central: Central) -> None:
    a = central.site("site-a", buckets=["bkt1"])
    central.policy["bkt2"] = ["site-a"]
    a.store.put("bkt2", "k", [b"not replicated to central"])
    await a.connect()
    [channel] = central.links.channels(["site-a"])
    with open(os.devnull, "wb") as sink:
        assert await fetch(channel, "central", "bkt2", "k", sink, 5) is None
        assert await fetch(channel, "site-b", "bkt1", "hello-from-site-a", sink, 5) is None
        got = await fetch(channel, "central", "bkt1", "hello-from-site-a", sink, 5)
    assert got is not None and got.size == 2
    assert a.channel.counters["fetch_refused"] == 2
    assert a.channel.counters["fetch_answered"] == 1


async def test_bad_frames_either_way_are_dropped_and_counted(central: Central) -> None:
    a = central.site("site-a")
    plain = central.site("site-b")
    central.policy["bkt1"] = ["site-a"]
    a.store.put("bkt1", "k", [b"data" * 100])
    await a.connect()
    await plain.connect()
    plain.channel.on_request = None  # a sender that answers no fetch (a peer link, say)
    sock = central.receiver.sock
    assert sock is not None
    to_a, to_plain = central.links.routes["site-a"][0], central.links.routes["site-b"][0]
    for frames in (
        [b"fetch", json.dumps({"id": 1, "site": "central", "bucket": "bkt1"}).encode()],
        [b"fetch", b"{not json"],
        [b"fetch", b"{}", b"unexpected data"],
    ):
        await sock.send_multipart([to_a, *frames])
    await sock.send_multipart(
        [to_plain, *p.encode(p.FETCH, 2, site="central", bucket="bkt1", key="k")]
    )
    await until(lambda: sum(a.channel.drops.values()) >= 3 and plain.channel.drops["bad_type"])
    assert a.channel.drops["bad_field"] == 1
    assert a.channel.drops["bad_json"] == 1
    assert a.channel.drops["frame_count"] == 1
    # Replies central did not ask for, and malformed ones, from a site.
    dealer = a.channel.sock
    assert dealer is not None
    await dealer.send_multipart(p.encode(p.DATA, 424242, b"x", offset=0))
    await dealer.send_multipart(p.encode(p.END, 424243))
    await dealer.send_multipart([b"version", json.dumps({"id": 5, "bucket": "b"}).encode()])
    await until(lambda: central.links.drops["unknown_transfer"] == 2)
    await until(lambda: central.receiver.drops["bad_field"] == 1)
    # Both ends still serve: a flipped byte is repaired.
    central.flip_a_byte("k")
    assert await central.repairer().pass_once(scrub=True) == 1
    assert content(central.store, "k") == b"data" * 100
