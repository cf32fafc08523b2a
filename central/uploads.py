"""Streamed uploads (images, VNF packages): a body written to a temporary file,
hashed on the way, bounded in size; nothing is left behind when it is refused."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterable
from dataclasses import dataclass
from pathlib import Path

from central.refusal import Refusal

UPLOAD_PREFIX = ".upload-"


@dataclass(frozen=True)
class Staged:
    """A received upload, not yet checked or kept: the file, its size and sha256."""

    path: Path
    size: int
    sha256: str


async def receive(
    root: Path,
    chunks: AsyncIterable[bytes],
    expected: int | None,
    max_bytes: int,
    refuse: type[Refusal],
    field: str,
    what: str,
) -> Staged:
    """Write ``chunks`` to ``<root>/.upload-*``, hashing them, at most ``max_bytes`` (413)
    and, when given, exactly ``expected`` bytes (400); fsynced. ``refuse(field, ...)``
    names the problem; nothing is left when this raises."""
    too_big = f"{what} larger than {max_bytes} bytes"
    if expected is not None and expected > max_bytes:
        raise refuse(field, too_big, status=413)
    path = root / f"{UPLOAD_PREFIX}{uuid.uuid4().hex}"
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("xb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise refuse(field, too_big, status=413)
                if expected is not None and size > expected:
                    raise refuse(field, f"body longer than Content-Length {expected}")
                digest.update(chunk)
                out.write(chunk)
            if expected is not None and size != expected:
                raise refuse(
                    field, f"body of {size} bytes is shorter than Content-Length {expected}"
                )
            if size == 0:
                raise refuse(field, "the upload is empty")
            out.flush()
            await asyncio.to_thread(os.fsync, out.fileno())  # seconds for a large file
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Staged(path, size, digest.hexdigest())
