"""The site's image cache: central images pulled, verified, kept, and collected when unused.

Layout under ``<state_dir>/images``::

    <id>        the verified image (only ever made by an atomic rename)
    <id>.part   a download in progress; resumed from its length after a restart
    <id>.json   {"sha256", "size", "format", "last_used"} of a cached image

A download is hashed while it streams: a resumed ``.part`` re-hashes its prefix
first. The file is renamed into the cache only when its size and sha256 match
the desired document's entry; otherwise the ``.part`` is deleted, so nothing
unverified is ever in the cache. Signatures (Ed25519 over the ASCII hex sha256,
as central signs) are checked against the trusted keys in the document, never
against central's word that an image is signed. Before a server is created from
a cached image its bytes are hashed again (:meth:`ImageCache.cached_path`).
An image no desired document references is removed ``ttl_s`` after its last use.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edged.image_wire import CHUNK_MAX, IMAGE_ID, Chunk

log = logging.getLogger(__name__)

PART = ".part"
META = ".json"
HASH_BLOCK = 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
FORMATS = ("qcow2", "raw")


class ImageVerifyError(Exception):
    """The bytes or the signature of an image fail verification (a permanent refusal)."""


@dataclass(frozen=True)
class ImageEntry:
    """One entry of the desired document's ``images`` section."""

    id: str
    sha256: str
    size: int
    format: str
    signature: str | None = None
    signing_key_id: str | None = None


def _entry(raw: Any) -> ImageEntry | None:
    if not isinstance(raw, dict):
        return None
    image_id, sha, size, fmt = raw.get("id"), raw.get("sha256"), raw.get("size"), raw.get("format")
    sig, key = raw.get("signature"), raw.get("signing_key_id")
    if not (isinstance(image_id, str) and IMAGE_ID.fullmatch(image_id)):
        return None
    if not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0 or fmt not in FORMATS:
        return None
    if sig is not None and not isinstance(sig, str):
        return None
    if key is not None and not isinstance(key, str):
        return None
    return ImageEntry(image_id, sha, size, fmt, sig, key)


def entries_from_document(document: Mapping[str, Any] | None) -> dict[str, ImageEntry]:
    """The document's image entries by id; a malformed entry is left out (and logged)."""
    raw = (document or {}).get("images") or []
    entries: dict[str, ImageEntry] = {}
    for item in raw if isinstance(raw, list) else []:
        entry = _entry(item)
        if entry is None:
            log.warning("desired document: image entry ignored (malformed): %.200r", item)
            continue
        entries[entry.id] = entry
    return entries


def trusted_keys(document: Mapping[str, Any] | None) -> dict[str, str]:
    """Signing key id -> base64 Ed25519 public key, from the document."""
    raw = (document or {}).get("image_signing_keys") or []
    keys: dict[str, str] = {}
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, dict):
            key_id, public = item.get("id"), item.get("public_key")
            if isinstance(key_id, str) and isinstance(public, str):
                keys[key_id] = public
    return keys


def fleet_requires_signed(document: Mapping[str, Any] | None) -> bool:
    settings = (document or {}).get("settings") or {}
    return isinstance(settings, dict) and settings.get("require_signed_images") is True


def _verifies(sha256_hex: str, signature_b64: str, public_key_b64: str) -> bool:
    try:
        public = base64.b64decode(public_key_b64, validate=True)
        signature = base64.b64decode(signature_b64, validate=True)
        Ed25519PublicKey.from_public_bytes(public).verify(signature, sha256_hex.encode("ascii"))
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True


def signature_problem(
    entry: ImageEntry, keys: Mapping[str, str], require_signed: bool
) -> str | None:
    """Why the image must not boot as far as its signature goes, or None.

    A signed image must verify with a trusted key (the one it names, or any);
    an unsigned one is refused when the fleet or this site requires signatures.
    """
    if entry.signature is None:
        if require_signed:
            return f"image {entry.id}: unsigned and this site requires signed images"
        return None
    if entry.signing_key_id is not None:
        candidates = {entry.signing_key_id: keys.get(entry.signing_key_id, "")}
        if not candidates[entry.signing_key_id]:
            return f"image {entry.id}: signing key {entry.signing_key_id} is not trusted"
    else:
        candidates = dict(keys)
    if not candidates:
        return f"image {entry.id}: signed, but no trusted signing key is known"
    for public in candidates.values():
        if _verifies(entry.sha256, entry.signature, public):
            return None
    named = ", ".join(sorted(candidates))
    return f"image {entry.id}: signature does not verify with trusted key {named}"


def hash_file(path: Path, limit: int | None = None) -> tuple[Any, int]:
    """(sha256 object, bytes read) over the file's first ``limit`` bytes (all when None)."""
    digest = hashlib.sha256()
    done = 0
    with path.open("rb") as f:
        while limit is None or done < limit:
            block = f.read(HASH_BLOCK if limit is None else min(HASH_BLOCK, limit - done))
            if not block:
                break
            digest.update(block)
            done += len(block)
    return digest, done


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


GetRange = Callable[[str, int, int], Awaitable[Chunk]]


class ImageCache:
    """Verified images in one directory; ``clock`` gives wall-clock seconds (tests inject it)."""

    def __init__(self, root: Path, clock: Callable[[], float] = time.time) -> None:
        self.root = Path(root)
        self.clock = clock
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, image_id: str) -> Path:
        return self.root / image_id

    def part_path(self, image_id: str) -> Path:
        return self.root / f"{image_id}{PART}"

    def meta_path(self, image_id: str) -> Path:
        return self.root / f"{image_id}{META}"

    def meta(self, image_id: str) -> dict[str, Any] | None:
        try:
            value = json.loads(self.meta_path(image_id).read_text())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def _write_meta(self, image_id: str, meta: dict[str, Any]) -> None:
        tmp = self.root / f".{image_id}{META}.tmp"
        tmp.write_text(json.dumps(meta, sort_keys=True))
        os.replace(tmp, self.meta_path(image_id))

    def has(self, entry: ImageEntry) -> bool:
        """Whether the cache holds this entry's image (by its record; no hashing)."""
        meta = self.meta(entry.id)
        return (
            meta is not None
            and meta.get("sha256") == entry.sha256
            and self.path(entry.id).is_file()
        )

    def image_format(self, image_id: str) -> str | None:
        meta = self.meta(image_id)
        return meta.get("format") if meta else None

    def cached_path(self, image_id: str) -> Path | None:
        """The cached image's file after hashing it again, or None when it is not cached.

        A file whose bytes no longer match its recorded sha256 (changed on disk) is
        removed and None returned; a good one counts as used now.
        """
        meta = self.meta(image_id)
        path = self.path(image_id)
        if meta is None or not path.is_file():
            return None
        digest, size = hash_file(path)
        if digest.hexdigest() != meta.get("sha256") or size != meta.get("size"):
            log.warning(
                "image cache: %s changed on disk (sha256 %s, expected %s); removed",
                image_id,
                digest.hexdigest(),
                meta.get("sha256"),
            )
            self.remove(image_id)
            return None
        self.touch([image_id])
        return path

    def touch(self, image_ids: Iterable[str]) -> None:
        """Mark cached images as used now (the held document references them)."""
        now = self.clock()
        for image_id in image_ids:
            meta = self.meta(image_id)
            if meta is not None:
                meta["last_used"] = now
                self._write_meta(image_id, meta)

    def remove(self, image_id: str) -> None:
        for path in (self.meta_path(image_id), self.path(image_id), self.part_path(image_id)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def cached_ids(self) -> set[str]:
        return {
            p.name.removesuffix(META)
            for p in self.root.iterdir()
            if p.name.endswith(META) and not p.name.startswith(".")
        }

    def gc(self, referenced: Iterable[str], ttl_s: float) -> list[str]:
        """Remove images (and stale ``.part`` files) not referenced and unused for ``ttl_s``."""
        keep = set(referenced)
        now = self.clock()
        removed = []
        for image_id in sorted(self.cached_ids() - keep):
            meta = self.meta(image_id) or {}
            last = meta.get("last_used", 0)
            if not isinstance(last, (int, float)) or now - last >= ttl_s:
                self.remove(image_id)
                removed.append(image_id)
        for part in self.root.glob(f"*{PART}"):
            image_id = part.name.removesuffix(PART)
            with contextlib.suppress(FileNotFoundError):
                if image_id not in keep and now - part.stat().st_mtime >= ttl_s:
                    part.unlink()
                    removed.append(part.name)
        if removed:
            log.info("image cache: collected %s", ", ".join(removed))
        return removed

    def partial_bytes(self, image_id: str) -> int:
        try:
            return self.part_path(image_id).stat().st_size
        except FileNotFoundError:
            return 0

    async def fetch(
        self,
        entry: ImageEntry,
        get_range: GetRange,
        progress: Callable[[int], None] = lambda _done: None,
    ) -> Path:
        """Download ``entry`` (resuming its ``.part``), verify it, and keep it.

        ``get_range(id, offset, length)`` returns the next chunk (it raises when
        central cannot be reached: the ``.part`` stays for the next try). A size or
        sha256 that does not match the entry raises :class:`ImageVerifyError` and
        leaves nothing behind.
        """
        part = self.part_path(entry.id)
        if part.exists() and part.stat().st_size > entry.size:
            part.unlink()
        digest, done = hash_file(part) if part.exists() else (hashlib.sha256(), 0)
        if done:
            log.info("image %s: resuming at %d of %d bytes", entry.id, done, entry.size)
        with part.open("ab") as out:
            while done < entry.size:
                chunk = await get_range(entry.id, done, min(CHUNK_MAX, entry.size - done))
                if chunk.total != entry.size:
                    out.close()
                    part.unlink(missing_ok=True)
                    raise ImageVerifyError(
                        f"image {entry.id}: size mismatch: expected {entry.size} bytes, "
                        f"central has {chunk.total}"
                    )
                if not chunk.data:
                    break
                digest.update(chunk.data)
                out.write(chunk.data)
                done += len(chunk.data)
                progress(done)
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if done != entry.size or got != entry.sha256:
            part.unlink(missing_ok=True)
            raise ImageVerifyError(
                f"image {entry.id}: sha256 mismatch: expected {entry.sha256}, got {got}"
            )
        meta = {
            "sha256": entry.sha256,
            "size": entry.size,
            "format": entry.format,
            "last_used": self.clock(),
        }
        self._write_meta(entry.id, meta)
        os.replace(part, self.path(entry.id))
        _fsync_dir(self.root)
        log.info("image %s: %d bytes verified (sha256 %s) and cached", entry.id, done, got)
        return self.path(entry.id)
