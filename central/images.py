"""central's image store: image files in one directory, received, checked and kept.

An upload is streamed to a temporary ``.upload-*`` file in the store directory,
hashed as it arrives and bounded in size; ``qemu-img info`` then says what the
file really is (the client's word is never trusted). Only a file that passed
every check is fsynced and renamed, atomically, to ``<dir>/<image id>``; a
refused upload leaves nothing behind. Signatures are Ed25519 over the ASCII
hex sha256 of the bytes. No HTTP here: the API maps :class:`ImageError` to 4xx.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from central import uploads
from central.refusal import Refusal
from central.uploads import Staged

log = logging.getLogger(__name__)

FORMATS = ("qcow2", "raw")
QEMU_IMG_TIMEOUT_S = 30.0
ED25519_KEY_BYTES = 32
ED25519_SIG_BYTES = 64


class ImageError(Refusal):
    """An upload or a key that is refused; ``field`` names what was wrong."""


@dataclass(frozen=True)
class DiskInfo:
    """What ``qemu-img info`` says of a file."""

    format: str
    virtual_size: int
    backing_file: str | None


def decode_b64(value: str, length: int, field: str) -> bytes:
    """Strict base64 of exactly ``length`` bytes, or an ImageError naming ``field``."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(field, f"{field} is not valid base64") from None
    if len(raw) != length:
        raise ImageError(field, f"{field} must decode to {length} bytes, got {len(raw)}")
    return raw


def signature_verifies(sha256_hex: str, signature_b64: str, public_key_b64: str) -> bool:
    """Whether the Ed25519 signature over the ASCII hex digest verifies with the key."""
    key = Ed25519PublicKey.from_public_bytes(
        decode_b64(public_key_b64, ED25519_KEY_BYTES, "public_key")
    )
    try:
        key.verify(
            decode_b64(signature_b64, ED25519_SIG_BYTES, "signature"), sha256_hex.encode("ascii")
        )
    except InvalidSignature:
        return False
    return True


def verifying_key(sha256_hex: str, signature_b64: str, keys: Iterable[tuple[str, str]]) -> str:
    """The id of the first of ``keys`` (id, base64 public key) the signature verifies with."""
    for key_id, public_key in keys:
        if signature_verifies(sha256_hex, signature_b64, public_key):
            return key_id
    raise ImageError("signature", "signature does not verify against a trusted signing key")


async def disk_info(path: Path) -> DiskInfo:
    """``qemu-img info --output=json`` of a file; an unreadable one is an ImageError."""
    proc = await asyncio.create_subprocess_exec(
        "qemu-img",
        "info",
        "--output=json",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), QEMU_IMG_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ImageError("disk_format", "qemu-img info timed out on the upload") from None
    if proc.returncode != 0:
        log.info("qemu-img info refused %s: %s", path.name, err.decode(errors="replace").strip())
        raise ImageError("disk_format", "the upload is not a disk image qemu-img can read")
    info = json.loads(out)
    return DiskInfo(
        format=str(info.get("format", "")),
        virtual_size=int(info.get("virtual-size", 0)),
        backing_file=info.get("backing-filename") or info.get("full-backing-filename"),
    )


def check_disk(info: DiskInfo, disk_format: str) -> None:
    """The file must be of the declared format, and self-contained."""
    if info.format not in FORMATS:
        raise ImageError("disk_format", f"format {info.format!r} is not supported")
    if info.format != disk_format:
        raise ImageError(
            "disk_format", f"the upload is {info.format}, but the image says {disk_format}"
        )
    if info.backing_file is not None:
        raise ImageError("disk_format", "a qcow2 with a backing file is refused")


class ImageStore:
    """Image files under one directory; at most one upload per image at a time."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._uploading: set[str] = set()
        root.mkdir(parents=True, exist_ok=True)

    def path(self, image_id: str) -> Path:
        return self.root / image_id

    @contextlib.contextmanager
    def upload_slot(self, image_id: str):  # type: ignore[no-untyped-def]
        """Hold the image for one upload; a second concurrent one is refused (409)."""
        if image_id in self._uploading:
            raise ImageError("id", f"image {image_id!r} is being uploaded", status=409)
        self._uploading.add(image_id)
        try:
            yield
        finally:
            self._uploading.discard(image_id)

    async def receive(self, chunks: AsyncIterable[bytes], expected: int | None) -> Staged:
        """The body in a temporary file, hashed, bounded by ``max_bytes`` (see
        :func:`central.uploads.receive`); nothing is left when this raises."""
        return await uploads.receive(
            self.root, chunks, expected, self.max_bytes, ImageError, "size", "image"
        )

    def discard(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def keep(self, staged: Staged, image_id: str) -> Path:
        """Rename a checked upload to its final name, durably (file, then directory)."""
        final = self.path(image_id)
        os.replace(staged.path, final)
        dir_fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return final

    def remove(self, image_id: str) -> None:
        """Delete an image's file; already gone is fine."""
        self.discard(self.path(image_id))
