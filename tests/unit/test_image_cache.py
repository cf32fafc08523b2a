"""The site's image cache and puller: resume, verification while streaming, signatures,
garbage collection with an injected clock, and the image wire contract's validation."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edged import image_wire
from edged.image_cache import (
    ImageCache,
    ImageEntry,
    ImageVerifyError,
    entries_from_document,
    signature_problem,
)
from edged.image_fetch import FetchError, ImagePuller
from edged.wire import FrameError

DATA = os.urandom(3 * image_wire.CHUNK_MAX + 777)
SHA = hashlib.sha256(DATA).hexdigest()
ENTRY = ImageEntry("img-1", SHA, len(DATA), "raw")


class Feed:
    """Serves DATA like central's feed; ``fail_after`` chunks, then the link 'drops'."""

    def __init__(self, data: bytes = DATA, fail_after: int | None = None) -> None:
        self.data = data
        self.fail_after = fail_after
        self.offsets: list[int] = []

    async def get(self, image_id: str, offset: int, length: int) -> image_wire.Chunk:
        if self.fail_after is not None and len(self.offsets) >= self.fail_after:
            raise FetchError("central unreachable")
        self.offsets.append(offset)
        frames = image_wire.encode_chunk(
            image_id, offset, len(self.data), self.data[offset : offset + length]
        )
        reply = image_wire.decode_reply(frames)  # the real contract, both ways
        assert isinstance(reply, image_wire.Chunk)
        return reply


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


# -- the cache -------------------------------------------------------------------------


async def test_fetch_verifies_and_keeps(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path)
    seen: list[int] = []
    path = await cache.fetch(ENTRY, Feed().get, seen.append)
    assert path.read_bytes() == DATA
    assert seen[-1] == len(DATA)
    assert cache.has(ENTRY)
    assert cache.cached_path("img-1") == path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img-1", "img-1.json"]


async def test_fetch_resumes_a_part_after_an_outage(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path)
    with pytest.raises(FetchError):
        await cache.fetch(ENTRY, Feed(fail_after=2).get)
    assert cache.partial_bytes("img-1") == 2 * image_wire.CHUNK_MAX
    assert not cache.has(ENTRY)
    # A new cache object (edged restarted): resumes from the .part's length.
    again = Feed()
    await ImageCache(tmp_path).fetch(ENTRY, again.get)
    assert again.offsets[0] == 2 * image_wire.CHUNK_MAX
    assert (tmp_path / "img-1").read_bytes() == DATA
    assert not (tmp_path / "img-1.part").exists()


async def test_resumed_part_with_wrong_prefix_is_caught(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path)
    (tmp_path / "img-1.part").write_bytes(b"x" * 1000)  # not the image's first bytes
    with pytest.raises(ImageVerifyError, match="sha256 mismatch"):
        await cache.fetch(ENTRY, Feed().get)
    assert list(tmp_path.iterdir()) == []


async def test_hash_mismatch_leaves_nothing_in_the_cache(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path)
    changed = bytearray(DATA)
    changed[12345] ^= 1
    with pytest.raises(ImageVerifyError) as err:
        await cache.fetch(ENTRY, Feed(bytes(changed)).get)
    assert f"expected {SHA}, got {hashlib.sha256(changed).hexdigest()}" in str(err.value)
    assert list(tmp_path.iterdir()) == []
    assert cache.cached_path("img-1") is None


async def test_size_mismatch_refused(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path)
    with pytest.raises(ImageVerifyError, match="size mismatch"):
        await cache.fetch(ENTRY, Feed(DATA + b"more").get)
    assert list(tmp_path.iterdir()) == []


async def test_cached_path_rehashes_and_drops_a_changed_file(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path)
    path = await cache.fetch(ENTRY, Feed().get)
    with path.open("r+b") as f:
        f.seek(99)
        f.write(b"\0" if DATA[99] else b"\1")
    assert cache.has(ENTRY)  # by its record
    assert cache.cached_path("img-1") is None  # by its bytes
    assert list(tmp_path.iterdir()) == []


async def test_gc_keeps_referenced_and_recent_removes_old_unreferenced(tmp_path: Path) -> None:
    clock = Clock()
    cache = ImageCache(tmp_path, clock=clock)
    small = b"small image"
    entries = {
        name: ImageEntry(name, hashlib.sha256(small).hexdigest(), len(small), "raw")
        for name in ("kept", "old", "recent")
    }
    for entry in entries.values():
        await cache.fetch(entry, Feed(small).get)
    (tmp_path / "stale.part").write_bytes(b"half")
    os.utime(tmp_path / "stale.part", (clock.now - 10_000, clock.now - 10_000))
    clock.now += 5000
    cache.touch(["recent"])
    clock.now += 500
    removed = cache.gc(referenced={"kept"}, ttl_s=1000)
    assert sorted(removed) == ["old", "stale.part"]
    assert cache.cached_ids() == {"kept", "recent"}
    clock.now += 1000
    assert cache.gc(referenced={"kept"}, ttl_s=1000) == ["recent"]
    assert cache.cached_ids() == {"kept"}


# -- signatures -------------------------------------------------------------------------


def _signed(entry: ImageEntry, message: bytes | None = None) -> tuple[ImageEntry, dict[str, str]]:
    signer = Ed25519PrivateKey.generate()
    public = signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    sig = base64.b64encode(signer.sign(message or entry.sha256.encode())).decode()
    keys = {"k1": base64.b64encode(public).decode()}
    return ImageEntry(**{**entry.__dict__, "signature": sig, "signing_key_id": "k1"}), keys


def test_signature_checks() -> None:
    good, keys = _signed(ENTRY)
    assert signature_problem(good, keys, require_signed=True) is None
    forged, keys2 = _signed(ENTRY, b"something else")
    assert "does not verify with trusted key k1" in (signature_problem(forged, keys2, False) or "")
    assert "not trusted" in (signature_problem(good, {}, False) or "")
    assert signature_problem(ENTRY, {}, require_signed=False) is None
    assert "unsigned and this site requires signed images" in (
        signature_problem(ENTRY, {}, require_signed=True) or ""
    )


def test_entries_from_document_skip_malformed() -> None:
    doc = {
        "images": [
            {"id": "a", "sha256": SHA, "size": 5, "format": "qcow2"},
            {"id": "../etc", "sha256": SHA, "size": 5, "format": "qcow2"},
            {"id": "b", "sha256": "nothex", "size": 5, "format": "qcow2"},
            {"id": "c", "sha256": SHA, "size": True, "format": "qcow2"},
            {"id": "d", "sha256": SHA, "size": 5, "format": "vmdk"},
            "junk",
        ]
    }
    assert list(entries_from_document(doc)) == ["a"]
    assert entries_from_document({"images": "junk"}) == {}


# -- the puller ------------------------------------------------------------------------


async def test_puller_reports_progress_refusal_and_ready(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path)
    bad = bytearray(DATA)
    bad[0] ^= 1
    doc = {"images": [ENTRY.__dict__]}
    flaky = Feed(fail_after=1)
    cached: list[bool] = []
    puller = ImagePuller(cache, flaky.get, lambda: doc, on_cached=lambda: cached.append(True))
    await puller.pass_once()  # one chunk, then central "goes away"
    status = puller.status(ENTRY, doc)
    assert status.state == "pending"
    assert status.reason.startswith("pulling image img-1: 33%")
    assert "central unreachable" in status.reason
    puller.get_range = Feed().get
    await puller.pass_once()
    assert puller.status(ENTRY, doc).state == "ready" and cached == [True]

    other = ImageEntry("img-2", SHA, len(DATA), "raw")
    doc2 = {"images": [other.__dict__]}
    puller2 = ImagePuller(cache, Feed(bytes(bad)).get, lambda: doc2)
    await puller2.pass_once()
    status = puller2.status(other, doc2)
    assert status.state == "error" and "sha256 mismatch" in status.reason
    assert not cache.has(other) and cache.partial_bytes("img-2") == 0
    # img-1 is no longer referenced by doc2, but recent: kept.
    assert cache.cached_ids() == {"img-1"}


async def test_puller_does_not_download_what_may_not_boot(tmp_path: Path) -> None:
    feed = Feed()
    doc = {"images": [ENTRY.__dict__], "settings": {"require_signed_images": True}}
    puller = ImagePuller(ImageCache(tmp_path), feed.get, lambda: doc)
    await puller.pass_once()
    assert feed.offsets == []
    assert "requires signed images" in puller.status(ENTRY, doc).reason
    site_policy = ImagePuller(ImageCache(tmp_path), feed.get, lambda: {}, require_signed=True)
    assert site_policy.status(ENTRY, {"images": []}).state == "error"


# -- the wire contract -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([image_wire.IMAGE_GET], "frame_count"),
        ([b"nope", b"{}"], "bad_type"),
        ([image_wire.IMAGE_GET, b"{not json"], "bad_json"),
        ([image_wire.IMAGE_GET, b"[1]"], "bad_json"),
        ([image_wire.IMAGE_GET, b"x" * 5000], "oversized"),
        ([image_wire.IMAGE_GET, b'{"id":"../x","offset":0,"length":1}'], "bad_field"),
        ([image_wire.IMAGE_GET, b'{"id":"a","offset":-1,"length":1}'], "bad_field"),
        ([image_wire.IMAGE_GET, b'{"id":"a","offset":0,"length":0}'], "bad_field"),
        ([image_wire.IMAGE_GET, b'{"id":"a","offset":true,"length":1}'], "bad_field"),
        ([image_wire.IMAGE_GET, b'{"id":"a","offset":0,"length":9999999}'], "bad_field"),
    ],
)
def test_bad_requests_refused(frames: list[bytes], reason: str) -> None:
    with pytest.raises(FrameError) as err:
        image_wire.decode_request(frames)
    assert err.value.reason == reason


def _chunk(header: dict, data: bytes = b"abc") -> list[bytes]:
    return [image_wire.IMAGE_CHUNK, json.dumps(header).encode(), data]


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([], "frame_count"),
        ([image_wire.IMAGE_CHUNK, b"{}"], "frame_count"),
        ([b"other", b"{}", b""], "bad_type"),
        (_chunk({"id": "a", "offset": 0, "total": 3}), "bad_field"),  # no eof
        (_chunk({"id": "a", "offset": 0, "total": 2, "eof": True}), "bad_field"),  # past total
        (_chunk({"id": "a", "offset": 0, "total": 9, "eof": True}), "bad_field"),  # eof lies
        (_chunk({"id": "a", "offset": 0, "total": 9, "eof": False}, b""), "bad_field"),
        (
            _chunk({"id": "a", "offset": 0, "total": 10**9, "eof": False}, b"x" * (2**20 + 1)),
            "oversized",
        ),
        ([image_wire.IMAGE_ERROR, b'{"id":"a"}'], "bad_field"),
        ([image_wire.IMAGE_ERROR, b'{"id":"a","error":"x"}', b"extra"], "frame_count"),
    ],
)
def test_bad_replies_refused(frames: list[bytes], reason: str) -> None:
    with pytest.raises(FrameError) as err:
        image_wire.decode_reply(frames)
    assert err.value.reason == reason


def test_good_replies() -> None:
    chunk = image_wire.decode_reply(image_wire.encode_chunk("a", 3, 6, b"def"))
    assert chunk == image_wire.Chunk("a", 3, 6, True, b"def")
    refused = image_wire.decode_reply(image_wire.encode_error("a", "no such image"))
    assert refused == image_wire.Refused("a", "no such image")
