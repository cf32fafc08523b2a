"""The replication wire contract: frames, message types and their validation.

A message is ``[type, header]`` or ``[type, header, data]`` (a ROUTER sees
the peer's routing id in front). ``header`` is a JSON object; every message
carries ``id``, the sender's transfer id, which the replies echo. Only
``offer`` (inline body of a small object), ``chunk`` and ``data`` carry a
data frame. See docs/objects.md, "Replication", for the exchange.

:func:`decode` raises :class:`FrameError` (from ``edged.wire``) naming the
reason a frame was dropped; receivers count drops by that reason and never
stop on a bad frame.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edged.wire import FrameError

# sender -> receiver
OFFER = "offer"  # a version: header fields below; inline data when small
CHUNK = "chunk"  # bytes of the offered version at ``offset``
DONE = "done"  # every chunk sent
FETCH = "fetch"  # repair: send me your copy of bucket/key
# receiver -> sender
WANT = "want"  # send from ``offset`` (0, or where a staged partial copy ends)
ACK = "ack"  # version handled: ``applied`` says whether it changed anything
NACK = "nack"  # refused: ``reason`` (checksum, bad_version, unauthorized, store_error)
VERSION = "version"  # fetch answer: the version, then ``data`` frames, then ``end``
DATA = "data"  # fetched bytes at ``offset``
END = "end"  # fetch done
MISSING = "missing"  # fetch answer: no good copy here

MAX_CHUNK_BYTES = 4 * 1024 * 1024  # a data frame is never larger (the sender uses <= 1 MiB)
MAX_HEADER_BYTES = 64 * 1024
MAX_META_BYTES = 8 * 1024

_VERSION_FIELDS: dict[str, type | tuple[type, ...]] = {
    "bucket": str,
    "key": str,
    "hlc": str,
    "etag": str,
    "size": int,
    "meta": dict,
    "deleted": bool,
}

FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    OFFER: {"site": str, **_VERSION_FIELDS},
    CHUNK: {"offset": int},
    DONE: {},
    FETCH: {"site": str, "bucket": str, "key": str},
    WANT: {"offset": int},
    ACK: {"applied": bool},
    NACK: {"reason": str},
    VERSION: _VERSION_FIELDS,
    DATA: {"offset": int},
    END: {},
    MISSING: {},
}
WITH_DATA = {CHUNK, DATA}  # always a data frame
MAY_HAVE_DATA = {OFFER}  # inline body of a small object

DROP_REASONS = (
    "frame_count",
    "oversized",
    "bad_type",
    "bad_json",
    "bad_field",
    "unauthenticated",
    "unknown_peer",
    "unknown_transfer",
    "out_of_order",
)

HLC_TEXT = re.compile(r"^[0-9A-Za-z:._-]{1,64}$")
ETAG_TEXT = re.compile(r"^[0-9a-f]{64}$")  # sha256 hex of the content


@dataclass(frozen=True)
class Msg:
    """A decoded, validated replication message."""

    type: str
    id: int
    body: Mapping[str, Any] = field(default_factory=dict)
    data: bytes | memoryview | None = None

    def __getitem__(self, key: str) -> Any:
        return self.body[key]


def _check(kind: str, body: Mapping[str, Any], spec: Mapping[str, Any]) -> None:
    for name, expected in spec.items():
        value = body.get(name)
        if expected is bool:
            ok = isinstance(value, bool)
        else:
            ok = isinstance(value, expected) and not isinstance(value, bool)
        if not ok:
            want = expected.__name__ if isinstance(expected, type) else str(expected)
            raise FrameError("bad_field", f"{kind}: field {name!r} must be {want}")
        if expected is int and value < 0:
            raise FrameError("bad_field", f"{kind}: field {name!r} must be >= 0")


def _check_version(kind: str, body: Mapping[str, Any]) -> None:
    if not HLC_TEXT.match(body["hlc"]):
        raise FrameError("bad_field", f"{kind}: field 'hlc' is not an HLC stamp")
    if not body["deleted"] and not ETAG_TEXT.match(body["etag"]):
        raise FrameError("bad_field", f"{kind}: field 'etag' must be 64 hex digits (sha256)")
    if not (0 < len(body["bucket"]) <= 255 and 0 < len(body["key"]) <= 1024):
        raise FrameError("bad_field", f"{kind}: field 'bucket' or 'key' has a bad length")
    meta = body["meta"]
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise FrameError("bad_field", f"{kind}: field 'meta' must map strings to strings")
    if sum(len(k) + len(v) for k, v in meta.items()) > MAX_META_BYTES:
        raise FrameError("bad_field", f"{kind}: field 'meta' is larger than {MAX_META_BYTES}")


def decode(frames: list[bytes] | list[memoryview]) -> Msg:
    """Validate ``[type, header(, data)]`` and return the message they carry."""
    if len(frames) not in (2, 3):
        raise FrameError("frame_count", f"expected 2 or 3 frames, got {len(frames)}")
    raw_type, raw_header = bytes(frames[0]), frames[1]
    data = frames[2] if len(frames) == 3 else None
    if len(raw_header) > MAX_HEADER_BYTES:
        raise FrameError("oversized", f"header of {len(raw_header)} bytes")
    if data is not None and len(data) > MAX_CHUNK_BYTES:
        raise FrameError("oversized", f"data frame of {len(data)} bytes")
    try:
        kind = raw_type.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("bad_type", "type frame is not ASCII") from None
    if kind not in FIELDS:
        raise FrameError("bad_type", f"unknown message type {kind[:32]!r}")
    if (kind in WITH_DATA) != (data is not None) and kind not in MAY_HAVE_DATA:
        raise FrameError(
            "frame_count", f"{kind}: data frame {'missing' if data is None else 'unexpected'}"
        )
    try:
        body = json.loads(bytes(raw_header))
    except (ValueError, RecursionError):
        raise FrameError("bad_json", f"{kind}: header is not JSON") from None
    if not isinstance(body, dict):
        raise FrameError("bad_json", f"{kind}: header is not a JSON object")
    _check(kind, body, {"id": int})
    _check(kind, body, FIELDS[kind])
    if kind in (OFFER, VERSION):
        _check_version(kind, body)
        if data is not None and len(data) != body["size"]:
            raise FrameError("bad_field", f"{kind}: inline data is not 'size' bytes")
    return Msg(kind, body["id"], body, data)


def encode(kind: str, tid: int, data: bytes | memoryview | None = None, **fields: Any) -> list[Any]:
    """Frames for a message of ``kind`` about transfer ``tid``."""
    if kind not in FIELDS:
        raise ValueError(f"unknown message type {kind!r}")
    header = json.dumps({"id": tid, **fields}, separators=(",", ":")).encode()
    return [kind.encode(), header] if data is None else [kind.encode(), header, data]


def version_fields(v: Any) -> dict[str, Any]:
    """The wire fields of an ObjectVersion (``seq`` is local to a store, never sent)."""
    return {
        "bucket": v.bucket,
        "key": v.key,
        "hlc": v.hlc,
        "etag": v.etag,
        "size": v.size,
        "meta": dict(v.meta),
        "deleted": v.deleted,
    }
