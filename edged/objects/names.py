"""What a bucket name, an object key and user metadata may be; ObjectError otherwise."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

from edged.objects.errors import ObjectError

BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MAX_KEY_BYTES = 1024
META_PREFIX = "x-object-meta-"
META_NAME = re.compile(r"^[a-z0-9-]{1,128}$")
MAX_META_BYTES = 2048


def bucket_name(name: str) -> str:
    """An S3-style bucket name: 3-63 of a-z 0-9 . -, not an IP address, no '..'."""
    if not isinstance(name, str) or not BUCKET.match(name):
        raise ObjectError(
            "bucket",
            f"bucket name {str(name)[:80]!r} must be 3-63 characters of a-z, 0-9, '.' and '-', "
            "starting and ending with a letter or digit",
        )
    if ".." in name or ".-" in name or "-." in name:
        raise ObjectError("bucket", f"bucket name {name!r} has '..', '.-' or '-.'")
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return name
    raise ObjectError("bucket", f"bucket name {name!r} looks like an IP address")


def object_key(key: str) -> str:
    """1-1024 bytes of UTF-8, no control characters, no '.' or '..' path segment."""
    if not isinstance(key, str) or not key:
        raise ObjectError("key", "object key must not be empty")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise ObjectError("key", "object key is not valid UTF-8") from None
    if size > MAX_KEY_BYTES:
        raise ObjectError("key", f"object key is {size} bytes; at most {MAX_KEY_BYTES}")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise ObjectError("key", "object key must not contain NUL or control characters")
    if any(seg in (".", "..") for seg in key.split("/")):
        raise ObjectError("key", f"object key {key[:80]!r} has a '.' or '..' path segment")
    return key


def metadata(meta: Mapping[str, str]) -> dict[str, str]:
    """User metadata: names of a-z 0-9 '-', printable values, at most 2 KiB in all."""
    out: dict[str, str] = {}
    total = 0
    for raw_name, value in meta.items():
        name = raw_name.lower()
        if not META_NAME.match(name):
            raise ObjectError(
                f"X-Object-Meta-{name}"[:120],
                f"metadata name {raw_name[:80]!r} must be 1-128 characters of a-z, 0-9 and '-'",
            )
        if not isinstance(value, str) or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ObjectError(
                f"X-Object-Meta-{name}", "metadata value must be text without control characters"
            )
        total += len(name.encode()) + len(value.encode())
        out[name] = value
    if total > MAX_META_BYTES:
        raise ObjectError(
            "X-Object-Meta-*", f"metadata is {total} bytes; at most {MAX_META_BYTES} in all"
        )
    return out


def metadata_from_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The ``X-Object-Meta-<name>`` headers as a validated ``{name: value}``."""
    found = {
        k[len(META_PREFIX) :]: v for k, v in headers.items() if k.lower().startswith(META_PREFIX)
    }
    return metadata(found)
