"""The control-channel contract between central and edged.

This is the only module central imports from edged. A message is two ZeroMQ
frames, ``[type, body]`` (a ROUTER sees the sender's routing id in front),
where ``body`` is a JSON object carrying the envelope fields

* ``site``  - the site the message is from or for,
* ``epoch`` - the sender's process epoch (strictly increasing across restarts),
* ``seq``   - a counter within the epoch,

plus the fields of its type (``FIELDS``). ``decode`` turns frames into a
:class:`Message` or raises :class:`FrameError` naming why the frames were
dropped; :class:`ReplayGuard` drops messages whose ``(epoch, seq)`` is not
newer than the last one accepted from that peer.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_FRAME_BYTES = 1024 * 1024

HELLO = "hello"
DESIRED = "desired"
ACK = "ack"
STATUS = "status"
HEARTBEAT = "heartbeat"

# Fields each type must carry, with their JSON types (besides the envelope).
FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    HELLO: {"last_generation": int},
    DESIRED: {"generation": int, "document": dict},
    ACK: {"generation": int},
    STATUS: {"observed_generation": int, "resources": dict, "health": dict, "inventory": dict},
    HEARTBEAT: {"generation": int},
}
ENVELOPE: dict[str, type] = {"site": str, "epoch": int, "seq": int}

# Reasons a frame is dropped; counters are keyed by these.
DROP_REASONS = (
    "frame_count",
    "oversized",
    "bad_type",
    "bad_json",
    "bad_field",
    "replay",
    "unknown_site",
    "wrong_site",
)


class FrameError(Exception):
    """Frames that are not a valid message; ``reason`` is one of ``DROP_REASONS``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Message:
    """A decoded, validated control message."""

    type: str
    site: str
    epoch: int
    seq: int
    body: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.body[key]


def _check_fields(kind: str, body: Mapping[str, Any], spec: Mapping[str, Any]) -> None:
    for name, expected in spec.items():
        value = body.get(name)
        # bool is an int subclass in Python; it is never a valid integer field here.
        if not isinstance(value, expected) or isinstance(value, bool):
            want = expected.__name__ if isinstance(expected, type) else str(expected)
            raise FrameError("bad_field", f"{kind}: field {name!r} must be {want}")
        if expected is int and value < 0:
            raise FrameError("bad_field", f"{kind}: field {name!r} must be >= 0")


def decode(frames: list[bytes], max_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Message:
    """Validate ``[type, body]`` frames and return the message they carry."""
    if len(frames) != 2:
        raise FrameError("frame_count", f"expected 2 frames, got {len(frames)}")
    raw_type, raw_body = frames
    if len(raw_type) + len(raw_body) > max_bytes:
        raise FrameError("oversized", f"{len(raw_body)} bytes > limit {max_bytes}")
    try:
        kind = raw_type.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("bad_type", "type frame is not ASCII") from None
    if kind not in FIELDS:
        raise FrameError("bad_type", f"unknown message type {kind[:32]!r}")
    try:
        body = json.loads(raw_body)
    except (ValueError, RecursionError):
        raise FrameError("bad_json", f"{kind}: body is not JSON") from None
    if not isinstance(body, dict):
        raise FrameError("bad_json", f"{kind}: body is not a JSON object")
    _check_fields(kind, body, ENVELOPE)
    _check_fields(kind, body, FIELDS[kind])
    return Message(kind, body["site"], body["epoch"], body["seq"], body)


class Encoder:
    """Stamps outgoing messages with this process's epoch and a sequence number."""

    def __init__(self, site: str, epoch: int | None = None) -> None:
        self.site = site
        self.epoch = epoch if epoch is not None else time.time_ns()
        self._seq = itertools.count(1)

    def encode(self, kind: str, site: str | None = None, **fields: Any) -> list[bytes]:
        """Frames for a message of ``kind``; ``site`` defaults to the encoder's."""
        if kind not in FIELDS:
            raise ValueError(f"unknown message type {kind!r}")
        body = {"site": site or self.site, "epoch": self.epoch, "seq": next(self._seq), **fields}
        return [kind.encode(), json.dumps(body, separators=(",", ":")).encode()]


class ReplayGuard:
    """Accepts a peer's messages only in increasing ``(epoch, seq)`` order.

    A restarted peer has a higher epoch, so its first message is accepted; a
    duplicated or replayed frame is not newer than what was seen and is dropped.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}

    def accept(self, peer: str, msg: Message) -> bool:
        stamp = (msg.epoch, msg.seq)
        if stamp <= self._last.get(peer, (-1, -1)):
            return False
        self._last[peer] = stamp
        return True

    def forget(self, peer: str) -> None:
        self._last.pop(peer, None)


def next_epoch(previous: int | None) -> int:
    """An epoch above both the clock and the last one used (survives clock steps back)."""
    return max(time.time_ns(), (previous or 0) + 1)
