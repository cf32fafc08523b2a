"""The image data channel contract between central's image feed and a site's fetcher.

A site's DEALER (CURVE client, the site's own key) asks central's ROUTER for a
byte range of one image; central answers with the bytes or a reason::

    request  [b"image_get",   {"id": str, "offset": int, "length": int}]
    chunk    [b"image_chunk", {"id": str, "offset": int, "total": int, "eof": bool}, <bytes>]
    error    [b"image_error", {"id": str, "error": str}]

``length`` is at most :data:`CHUNK_MAX` (central sends at most that much); ``total``
is the size of the whole file; ``eof`` says the chunk ends it. Frames that are not
a valid message raise :class:`~edged.wire.FrameError` with a reason from
:data:`DROP_REASONS`, which both ends count and otherwise ignore.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from edged.wire import FrameError

IMAGE_GET = b"image_get"
IMAGE_CHUNK = b"image_chunk"
IMAGE_ERROR = b"image_error"
CHUNK_MAX = 1024 * 1024
HEADER_MAX = 4096  # a JSON header longer than this is not ours
IMAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
DROP_REASONS = ("frame_count", "oversized", "bad_type", "bad_json", "bad_field")


@dataclass(frozen=True)
class Request:
    image_id: str
    offset: int
    length: int


@dataclass(frozen=True)
class Chunk:
    image_id: str
    offset: int
    total: int
    eof: bool
    data: bytes


@dataclass(frozen=True)
class Refused:
    """central's answer that it will not serve the image (unknown, not in the site's document)."""

    image_id: str
    error: str


def _header(raw: bytes, kind: str) -> dict[str, Any]:
    if len(raw) > HEADER_MAX:
        raise FrameError("oversized", f"{kind}: header of {len(raw)} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise FrameError("bad_json", f"{kind}: header is not JSON") from None
    if not isinstance(body, dict):
        raise FrameError("bad_json", f"{kind}: header is not a JSON object")
    return body


def _int(body: dict[str, Any], name: str, kind: str, low: int = 0, high: int | None = None) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise FrameError("bad_field", f"{kind}: field {name!r} must be an integer >= {low}")
    if high is not None and value > high:
        raise FrameError("bad_field", f"{kind}: field {name!r} must be <= {high}")
    return value


def _image_id(body: dict[str, Any], kind: str) -> str:
    value = body.get("id")
    if not isinstance(value, str) or not IMAGE_ID.fullmatch(value):
        raise FrameError("bad_field", f"{kind}: field 'id' must be an image id")
    return value


def encode_request(image_id: str, offset: int, length: int) -> list[bytes]:
    body = {"id": image_id, "offset": offset, "length": length}
    return [IMAGE_GET, json.dumps(body, separators=(",", ":")).encode()]


def decode_request(frames: list[bytes]) -> Request:
    """A site's request, validated; FrameError otherwise."""
    if len(frames) != 2:
        raise FrameError("frame_count", f"expected 2 frames, got {len(frames)}")
    if frames[0] != IMAGE_GET:
        raise FrameError("bad_type", f"unknown message type {frames[0][:32]!r}")
    body = _header(frames[1], "image_get")
    return Request(
        _image_id(body, "image_get"),
        _int(body, "offset", "image_get"),
        _int(body, "length", "image_get", low=1, high=CHUNK_MAX),
    )


def encode_chunk(image_id: str, offset: int, total: int, data: bytes) -> list[bytes]:
    eof = offset + len(data) >= total
    body = {"id": image_id, "offset": offset, "total": total, "eof": eof}
    return [IMAGE_CHUNK, json.dumps(body, separators=(",", ":")).encode(), data]


def encode_error(image_id: str, error: str) -> list[bytes]:
    body = {"id": image_id, "error": error[:500]}
    return [IMAGE_ERROR, json.dumps(body, separators=(",", ":")).encode()]


def decode_reply(frames: list[bytes]) -> Chunk | Refused:
    """central's answer, validated; FrameError otherwise (the caller drops and counts it)."""
    if not frames:
        raise FrameError("frame_count", "no frames")
    kind = frames[0]
    if kind == IMAGE_ERROR:
        if len(frames) != 2:
            raise FrameError("frame_count", f"image_error: expected 2 frames, got {len(frames)}")
        body = _header(frames[1], "image_error")
        error = body.get("error")
        if not isinstance(error, str):
            raise FrameError("bad_field", "image_error: field 'error' must be a string")
        return Refused(_image_id(body, "image_error"), error[:500])
    if kind != IMAGE_CHUNK:
        raise FrameError("bad_type", f"unknown message type {kind[:32]!r}")
    if len(frames) != 3:
        raise FrameError("frame_count", f"image_chunk: expected 3 frames, got {len(frames)}")
    body = _header(frames[1], "image_chunk")
    data = frames[2]
    if len(data) > CHUNK_MAX:
        raise FrameError("oversized", f"image_chunk: {len(data)} bytes > {CHUNK_MAX}")
    offset = _int(body, "offset", "image_chunk")
    total = _int(body, "total", "image_chunk")
    eof = body.get("eof")
    if not isinstance(eof, bool):
        raise FrameError("bad_field", "image_chunk: field 'eof' must be a boolean")
    if offset + len(data) > total or eof != (offset + len(data) == total):
        raise FrameError("bad_field", "image_chunk: offset, length, total and eof disagree")
    if not data and not eof:
        raise FrameError("bad_field", "image_chunk: an empty chunk must end the file")
    return Chunk(_image_id(body, "image_chunk"), offset, total, eof, data)
