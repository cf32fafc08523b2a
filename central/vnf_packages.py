"""VNF packages (ETSI SOL 005): receiving a CSAR, extracting it safely, onboarding it
with the descriptor parser, and what the lifecycle asks of onboarded packages.

An upload is streamed to ``<root>/.upload-*`` (bounded by ``max_bytes``), extracted
into ``<root>/.extract-*`` (refusing names that leave the root, symlinks, encrypted
members, more than :data:`MAX_MEMBERS` members or more than ``max_bytes`` extracted:
zip bombs), checked with :func:`central.vnfd.check_vnfd`, and only then renamed to
``<root>/<package id>/``. A refused package leaves nothing on disk. No HTTP here: a
refusal is a :class:`central.refusal.Refusal`; descriptor errors are
:class:`OnboardingFailed` carrying every error.

For the lifecycle: :func:`vnfd_for` (the model and folder of an onboarded, enabled
package by vnfdId) and :func:`mark_in_use`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import shutil
import stat
import uuid
import zipfile
from collections.abc import AsyncIterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from central import uploads
from central.refusal import Refusal
from central.store import Store, now
from central.uploads import Staged
from central.vnfd import Vnfd, VnfdError, check_vnfd, load_vnfd

EXTRACT_PREFIX = ".extract-"
MAX_MEMBERS = 10_000  # files and folders in one package
COPY_CHUNK = 1024 * 1024


class PackageError(Refusal):
    """A package upload that is refused (not a zip, unsafe, too large); ``field`` names it."""


class OnboardingFailed(Exception):
    """The package's descriptor does not validate: ``errors`` holds every problem."""

    def __init__(self, errors: list[VnfdError]) -> None:
        super().__init__(str(errors[0]) if errors else "invalid descriptor")
        self.errors = errors


@dataclass(frozen=True)
class Onboarded:
    """A package extracted and checked, not yet renamed to its final folder."""

    path: Path
    vnfd: Vnfd


def failure_details(errors: list[VnfdError], title: str = "Onboarding failed") -> dict[str, Any]:
    """SOL 005 ProblemDetails listing every error as ``file:line: path: message``."""
    return {
        "type": "about:blank",
        "title": title,
        "status": 400,
        "detail": "\n".join(str(e) for e in errors),
        "errors": [
            {"file": e.file, "line": e.line, "path": e.path, "message": e.message} for e in errors
        ],
    }


def refusal_details(exc: Refusal) -> dict[str, Any]:
    """ProblemDetails of a refused upload (not a zip, unsafe member, too large)."""
    return {
        "type": "about:blank",
        "title": "Package refused",
        "status": exc.status,
        "detail": f"{exc.field}: {exc.message}",
        "errors": [{"file": "", "line": None, "path": exc.field, "message": exc.message}],
    }


def software_images(vnfd: Vnfd) -> list[dict[str, Any]]:
    """SOL 005 VnfPackageSoftwareImageInfo of every VDU and storage image (once by node)."""
    found: dict[str, dict[str, Any]] = {}
    for flavour in vnfd.flavours.values():
        nodes = [(v.name, v.image) for v in flavour.vdus.values()]
        nodes += [(s.name, s.image) for s in flavour.storages.values()]
        for node, image in nodes:
            if image is None or node in found:
                continue
            found[node] = {
                "id": node,
                "name": image.name,
                "provider": vnfd.provider,
                "version": image.version,
                "checksum": {"algorithm": image.checksum_algorithm, "hash": image.checksum},
                "containerFormat": image.container_format,
                "diskFormat": image.disk_format,
                "minDisk": image.min_disk_gb,
                "minRam": image.min_ram_mb,
                "size": image.size_bytes,
                "imagePath": image.file,
            }
    return list(found.values())


def _unsafe(name: str) -> str | None:
    """Why a member name is refused, or None."""
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "an absolute or non-POSIX path"
    parts = name.split("/")
    if ".." in parts:
        return "a path leaving the package root (zip slip)"
    if "\0" in name:
        return "a NUL in the name"
    return None


def extract(archive: Path, dest: Path, max_bytes: int) -> None:
    """Extract a CSAR zip into the empty folder ``dest``, safely: every member is
    checked before any is written, and the bytes written are counted (a member's
    declared size is not trusted). Raises :class:`PackageError`; the caller removes
    ``dest`` on failure."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError):
        raise PackageError("package_content", "not a zip file (a CSAR is a zip)") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise PackageError(
                "package_content", f"more than {MAX_MEMBERS} members in the zip (refused)"
            )
        declared = 0
        seen: set[str] = set()
        for info in infos:
            name = info.filename
            problem = _unsafe(name)
            if problem:
                raise PackageError(f"package_content:{name}", f"{name!r}: {problem}")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise PackageError(f"package_content:{name}", f"{name!r}: a symlink (refused)")
            if info.flag_bits & 0x1:
                raise PackageError(f"package_content:{name}", f"{name!r}: encrypted (refused)")
            normal = posixpath.normpath(name)
            if normal in seen:
                raise PackageError(f"package_content:{name}", f"{name!r}: a duplicate member")
            seen.add(normal)
            declared += info.file_size
            if declared > max_bytes:
                raise PackageError(
                    "package_content", f"extracted files larger than {max_bytes} bytes (refused)"
                )
        written = 0
        for info in infos:
            target = dest.joinpath(*info.filename.split("/"))
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, target.open("xb") as out:
                    while chunk := src.read(COPY_CHUNK):
                        written += len(chunk)
                        if written > max_bytes:
                            raise PackageError(
                                "package_content",
                                f"extracted files larger than {max_bytes} bytes (refused)",
                            )
                        out.write(chunk)
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError) as exc:
                raise PackageError(
                    f"package_content:{info.filename}", f"{info.filename!r}: unreadable: {exc}"
                ) from None


def _relabel(errors: list[VnfdError], folder: Path) -> list[VnfdError]:
    """Errors naming the temporary folder name the package root instead."""
    prefix = str(folder)
    out = []
    for e in errors:
        file = e.file.replace(prefix, "(package)")
        message = e.message.replace(prefix, "(package)")
        out.append(VnfdError(file, e.path, e.line, message))
    return out


class PackageStore:
    """Package uploads and extracted packages under one directory."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".*-*"):  # left by a central that stopped mid-upload
            self._remove(stale)

    def path(self, package_id: str) -> Path:
        return self.root / package_id

    async def receive(self, chunks: AsyncIterable[bytes], expected: int | None) -> Staged:
        """The body in a temporary file, hashed, bounded by ``max_bytes`` (see
        :func:`central.uploads.receive`); nothing is left when this raises."""
        return await uploads.receive(
            self.root, chunks, expected, self.max_bytes, PackageError, "package_content", "package"
        )

    def onboard(self, staged: Staged) -> Onboarded:
        """Extract and check an upload (blocking: run it in a thread). Raises
        :class:`PackageError` or :class:`OnboardingFailed`; nothing is left then."""
        folder = self.root / f"{EXTRACT_PREFIX}{uuid.uuid4().hex}"
        folder.mkdir()
        try:
            extract(staged.path, folder, self.max_bytes)
            vnfd, errors = check_vnfd(folder)
            if vnfd is None:
                raise OnboardingFailed(_relabel(errors, folder))
        except BaseException:
            self._remove(folder)
            raise
        finally:
            self._remove(staged.path)
        return Onboarded(folder, vnfd)

    def keep(self, onboarded: Onboarded, package_id: str) -> Path:
        final = self.path(package_id)
        os.replace(onboarded.path, final)
        return final

    def discard(self, onboarded: Onboarded) -> None:
        self._remove(onboarded.path)

    def remove(self, package_id: str) -> None:
        self._remove(self.path(package_id))

    @staticmethod
    def _remove(path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


async def onboard(packages: PackageStore, staged: Staged) -> Onboarded:
    """:meth:`PackageStore.onboard` off the event loop."""
    return await asyncio.to_thread(packages.onboard, staged)


# -- for the lifecycle ----------------------------------------------------------------------


def vnfd_for(store: Store, vnfd_id: str, project_id: str | None) -> tuple[Vnfd, Path]:
    """The model and extracted folder of the project's onboarded, ENABLED package with
    this vnfdId (``project_id`` None: any project's, for a cloud admin); the folder's
    name is the package id (for :func:`mark_in_use`). A Refusal
    naming ``vnfdId`` otherwise: 400 when none is onboarded, 409 when it is disabled."""
    if project_id is None:
        row = store.one(
            "SELECT * FROM vnf_packages WHERE vnfd_id = ? AND onboarding_state = 'ONBOARDED' "
            "ORDER BY created_at LIMIT 1",
            (vnfd_id,),
        )
    else:
        row = store.one(
            "SELECT * FROM vnf_packages WHERE vnfd_id = ? AND project_id = ? "
            "AND onboarding_state = 'ONBOARDED'",
            (vnfd_id, project_id),
        )
    if row is None:
        raise Refusal("vnfdId", f"no onboarded VNF package has vnfdId {vnfd_id!r}")
    if row["operational_state"] != "ENABLED":
        raise Refusal(
            "vnfdId", f"VNF package {row['id']!r} (vnfdId {vnfd_id!r}) is DISABLED", status=409
        )
    path = Path(row["path"])
    return load_vnfd(path), path


def mark_in_use(store: Store, package_id: str, in_use: bool) -> None:
    """Set a package's usageState (IN_USE while a VNF instance is made from it)."""
    with store.transaction() as db:
        cur = db.conn.execute(
            "UPDATE vnf_packages SET usage_state = ?, updated_at = ? WHERE id = ?",
            ("IN_USE" if in_use else "NOT_IN_USE", now(), package_id),
        )
        if cur.rowcount != 1:
            raise Refusal("vnfPkgId", f"VNF package {package_id!r} does not exist")
