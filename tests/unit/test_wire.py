"""edged.wire: decoding, drop reasons, replay protection and epochs."""

from __future__ import annotations

import itertools
import json
import random
import time

import pytest

from edged import wire
from edged.wire import DROP_REASONS, FIELDS, Encoder, FrameError, Message, ReplayGuard, decode

VALID_FIELDS: dict[str, dict] = {
    wire.HELLO: {"last_generation": 3},
    wire.DESIRED: {"generation": 4, "document": {"servers": [{"id": "s1"}]}},
    wire.ACK: {"generation": 4},
    wire.STATUS: {
        "observed_generation": 4,
        "resources": {"servers": {}},
        "health": {"ok": True},
        "inventory": {"cpus": 4},
    },
    wire.HEARTBEAT: {"generation": 0},
}


def frames(kind: str, body: object) -> list[bytes]:
    return [kind.encode(), json.dumps(body).encode()]


def envelope(**extra: object) -> dict:
    return {"site": "edge-a", "epoch": 5, "seq": 1, **extra}


def drop_reason(raw: list[bytes], **kw: int) -> str:
    with pytest.raises(FrameError) as err:
        decode(raw, **kw)
    assert err.value.reason in DROP_REASONS
    return err.value.reason


def test_every_type_has_a_valid_example() -> None:
    assert set(VALID_FIELDS) == set(FIELDS)


@pytest.mark.parametrize("kind", sorted(FIELDS))
def test_encode_decode_roundtrip(kind: str) -> None:
    enc = Encoder("edge-a", epoch=42)
    raw = enc.encode(kind, **VALID_FIELDS[kind])
    assert len(raw) == 2
    msg = decode(raw)
    assert isinstance(msg, Message)
    assert (msg.type, msg.site, msg.epoch, msg.seq) == (kind, "edge-a", 42, 1)
    for name, value in VALID_FIELDS[kind].items():
        assert msg[name] == value


def test_encoder_seq_increases_and_site_override() -> None:
    enc = Encoder("central", epoch=7)
    first = decode(enc.encode(wire.ACK, generation=1))
    second = decode(enc.encode(wire.ACK, site="edge-b", generation=2))
    assert (first.seq, second.seq) == (1, 2)
    assert first.site == "central"
    assert second.site == "edge-b"
    assert second.epoch == first.epoch == 7


def test_encoder_rejects_unknown_type() -> None:
    with pytest.raises(ValueError):
        Encoder("x").encode("bogus")


def test_encoder_default_epoch_is_clock() -> None:
    before = time.time_ns()
    enc = Encoder("x")
    assert before <= enc.epoch <= time.time_ns()


@pytest.mark.parametrize("count", [0, 1, 3, 4])
def test_drop_frame_count(count: int) -> None:
    raw = frames(wire.ACK, envelope(generation=1))
    raw = [*raw, b"extra", b"more"][:count]
    assert drop_reason(raw) == "frame_count"


def test_drop_oversized() -> None:
    body = envelope(generation=1, pad="x" * 2000)
    raw = frames(wire.ACK, body)
    assert drop_reason(raw, max_bytes=1024) == "oversized"
    # The same message is fine under a large enough limit.
    assert decode(raw, max_bytes=len(raw[0]) + len(raw[1])).type == wire.ACK


@pytest.mark.parametrize("kind", [b"bogus", b"", b"ACK", "h\u00e9llo".encode(), b"\xff\xfe"])
def test_drop_bad_type(kind: bytes) -> None:
    raw = [kind, json.dumps(envelope(generation=1)).encode()]
    assert drop_reason(raw) == "bad_type"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{not json",
        b"[1, 2, 3]",
        b'"a string"',
        b"42",
        b"null",
        b"\xff\xfe\xfd{",
        b'{"site": "\xc3\x28"}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_drop_bad_json(body: bytes) -> None:
    assert drop_reason([b"ack", body]) == "bad_json"


@pytest.mark.parametrize(
    "body",
    [
        envelope(generation=True),
        envelope(generation=False),
        envelope(generation=-1),
        envelope(generation=1.0),
        envelope(generation="1"),
        envelope(generation=None),
        envelope(),  # missing type field
        {"epoch": 5, "seq": 1, "generation": 1},  # no site
        {"site": "a", "seq": 1, "generation": 1},  # no epoch
        {"site": "a", "epoch": 5, "generation": 1},  # no seq
        envelope(generation=1, site=5),
        envelope(generation=1, epoch=-3),
        envelope(generation=1, seq=-1),
        envelope(generation=1, seq=True),
        envelope(generation=1, epoch=True),
    ],
)
def test_drop_bad_field(body: dict) -> None:
    assert drop_reason(frames(wire.ACK, body)) == "bad_field"


def test_drop_bad_field_container_types() -> None:
    body = envelope(generation=1, document=[1, 2])
    assert drop_reason(frames(wire.DESIRED, body)) == "bad_field"
    status = dict(VALID_FIELDS[wire.STATUS], health="ok")
    assert drop_reason(frames(wire.STATUS, envelope(**status))) == "bad_field"


def test_zero_values_are_valid() -> None:
    msg = decode(frames(wire.HEARTBEAT, {"site": "a", "epoch": 0, "seq": 0, "generation": 0}))
    assert (msg.epoch, msg.seq, msg["generation"]) == (0, 0, 0)


def msg(epoch: int, seq: int, site: str = "edge-a") -> Message:
    return Message(wire.HEARTBEAT, site, epoch, seq, {"generation": 0})


def test_replay_guard_increasing_seq_accepted() -> None:
    guard = ReplayGuard()
    assert all(guard.accept("edge-a", msg(10, seq)) for seq in range(1, 20))


def test_replay_guard_duplicate_and_older_dropped() -> None:
    guard = ReplayGuard()
    assert guard.accept("edge-a", msg(10, 5))
    assert not guard.accept("edge-a", msg(10, 5))
    assert not guard.accept("edge-a", msg(10, 4))
    assert not guard.accept("edge-a", msg(9, 100))
    assert guard.accept("edge-a", msg(10, 6))
    assert not guard.accept("edge-a", msg(10, 5))


def test_replay_guard_restart_with_higher_epoch() -> None:
    guard = ReplayGuard()
    assert guard.accept("edge-a", msg(10, 500))
    # The restarted peer counts from 1 again, in a higher epoch.
    assert guard.accept("edge-a", msg(11, 1))
    assert guard.accept("edge-a", msg(11, 2))
    # Frames of the old process are now stale.
    assert not guard.accept("edge-a", msg(10, 501))


def test_replay_guard_peers_independent() -> None:
    guard = ReplayGuard()
    assert guard.accept("edge-a", msg(10, 5))
    assert guard.accept("edge-b", msg(1, 1))
    assert guard.accept("edge-b", msg(10, 5))
    assert not guard.accept("edge-a", msg(10, 5))
    assert guard.accept("edge-b", msg(10, 6))
    assert guard.accept("edge-a", msg(10, 6))


def test_replay_guard_forget() -> None:
    guard = ReplayGuard()
    assert guard.accept("edge-a", msg(10, 5))
    guard.forget("edge-a")
    assert guard.accept("edge-a", msg(10, 5))
    guard.forget("never-seen")


def test_next_epoch_monotonic() -> None:
    first = next_epoch_chain(None, 50)
    assert all(b > a for a, b in itertools.pairwise(first))
    assert first[0] >= time.time_ns() - 10**10


def test_next_epoch_with_future_previous() -> None:
    future = time.time_ns() + 3600 * 10**9
    assert wire.next_epoch(future) == future + 1
    chain = next_epoch_chain(future, 20)
    assert chain[0] == future + 1
    assert all(b == a + 1 for a, b in itertools.pairwise(chain))


def test_next_epoch_above_clock() -> None:
    before = time.time_ns()
    assert wire.next_epoch(0) >= before
    assert wire.next_epoch(1) >= before


def next_epoch_chain(previous: int | None, n: int) -> list[int]:
    out = []
    for _ in range(n):
        previous = wire.next_epoch(previous)
        out.append(previous)
    return out


def random_frame(rng: random.Random) -> bytes:
    choice = rng.random()
    if choice < 0.3:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))
    if choice < 0.5:
        return rng.choice(sorted(FIELDS)).encode()
    if choice < 0.8:
        # Almost-valid JSON bodies with random values.
        values = [None, True, -1, 0, 7, 1.5, "x", [], {}, "\ud800", 10**30]
        body = {
            k: rng.choice(values)
            for k in ("site", "epoch", "seq", "generation", "document", "last_generation")
            if rng.random() < 0.7
        }
        text = json.dumps(body)
        if rng.random() < 0.3 and text:
            pos = rng.randrange(len(text))
            text = text[:pos] + chr(rng.randint(0, 0x2FF)) + text[pos + 1 :]
        return text.encode("utf-8", "surrogatepass")
    return rng.choice([b"", b"{}", b"[]", b"null", b"\x00", b'{"site":', b"9" * 5000])


def test_fuzz_only_frame_errors() -> None:
    rng = random.Random(7)
    decoded = 0
    for _ in range(2000):
        raw = [random_frame(rng) for _ in range(rng.choice([0, 1, 2, 2, 2, 2, 3]))]
        try:
            result = decode(raw, max_bytes=rng.choice([1024, wire.DEFAULT_MAX_FRAME_BYTES]))
        except FrameError as exc:
            assert exc.reason in DROP_REASONS
        else:
            assert isinstance(result, Message)
            decoded += 1
    assert decoded < 2000
