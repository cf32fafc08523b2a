"""The qemu-img implementation of :class:`~edged.drivers.volume.VolumeDriver`.

Volumes are qcow2 files in one directory under the site's state dir, each
with a small JSON sidecar saying which site made it (a qcow2 without its
sidecar is not ours and is never touched)::

    <root>/<volume_id>.qcow2        the volume (LUKS-in-qcow2 when encrypted)
    <root>/<volume_id>.json         {"site": ..., "id": ..., "encrypted": ...}
    <root>/keys/<volume_id>.key     the LUKS passphrase (the key in base64), mode 0600
    <root>/.tmp-<volume_id>.qcow2   a create in progress (renamed when complete)

A volume exists once its qcow2 has its final name: ``create`` builds it under
the temporary name and renames it last, so a crash leaves only leftovers that
``delete`` (or the next ``create``) clears. Keys reach ``qemu-img`` and libvirt
through files and ``secretSetValue``, never a command line, log or message.
QEMU takes only UTF-8 passphrases, so a volume's passphrase is its key (any
bytes) in base64.
Encrypted volumes are opened by QEMU with a persistent private libvirt secret
whose usage is the volume's path (``libvirt_uri`` must be set to attach them).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import math
import os
import subprocess
import threading
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager, suppress
from pathlib import Path

import libvirt

from edged.drivers.libvirt_ops import serialised
from edged.drivers.volume import (
    GIB,
    ObservedVolume,
    VolumeDriver,
    VolumeError,
    VolumeSpec,
    check_spec,
    check_volume_id,
    disk_xml,
    secret_xml,
)

log = logging.getLogger(__name__)

_SECRET_NS = uuid.UUID("6b1b8a52-3c1e-4f57-9a55-5f0c5e7a0d11")  # for stable secret UUIDs
_SOURCE_FORMATS = ("raw", "qcow2")
_FLAKY_BENCHMARK = "Unable to get accurate CPU usage"
_LUKS_ATTEMPTS = 8


def _opt(value: object) -> str:
    """``value`` escaped for a QEMU ``key=value,...`` option string."""
    return str(value).replace(",", ",,")


def passphrase(key: bytes) -> bytes:
    """The LUKS passphrase of ``key``: its base64 (QEMU wants valid UTF-8)."""
    return base64.b64encode(key)


def _ignore_libvirt_error(_ctx: object, _err: object) -> None:
    """Keep libvirt from printing every error to stderr; we raise them instead."""


class QemuImgVolumes(VolumeDriver):
    """Volume driver over a directory of qcow2 files, driven by ``qemu-img``."""

    def __init__(
        self,
        site: str,
        root: Path,
        libvirt_uri: str | None = None,
        luks_iter_time_ms: int | None = None,
        timeout_s: float = 600.0,
    ) -> None:
        self.site = site
        self.root = Path(root).absolute()  # libvirtd and QEMU resolve paths themselves
        self.keys = self.root / "keys"
        self.libvirt_uri = libvirt_uri
        # LUKS key-derivation time; None keeps QEMU's default (2 s). Tests lower it.
        self.luks_iter_time_ms = luks_iter_time_ms
        self.timeout_s = timeout_s
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.RLock()

    # --- paths and helpers ------------------------------------------------------

    def path(self, volume_id: str) -> Path:
        """The volume's qcow2 file."""
        return self.root / f"{volume_id}.qcow2"

    def _sidecar(self, volume_id: str) -> Path:
        return self.root / f"{volume_id}.json"

    def key_path(self, volume_id: str) -> Path:
        """The file holding an encrypted volume's key."""
        return self.keys / f"{volume_id}.key"

    def _tmp(self, volume_id: str) -> Path:
        return self.root / f".tmp-{volume_id}.qcow2"

    def _op(self, volume_id: str, what: str) -> AbstractContextManager[None]:
        """Serialise the call and turn libvirt/OS errors into VolumeError."""
        return serialised(self._lock, VolumeError, volume_id, what)

    def _run(self, volume_id: str, args: Sequence[str], *, permanent: bool = False) -> str:
        """Run ``qemu-img args``; its stdout, or a VolumeError naming the failure."""
        cmd = ["qemu-img", *args]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=self.timeout_s, check=False
            )
        except FileNotFoundError as exc:
            raise VolumeError(volume_id, "qemu-img not found", permanent=True) from exc
        except subprocess.TimeoutExpired as exc:
            raise VolumeError(volume_id, f"qemu-img {args[0]} timed out") from exc
        if proc.returncode != 0:
            msg = proc.stderr.strip() or f"exit {proc.returncode}"
            raise VolumeError(volume_id, f"qemu-img {args[0]} failed: {msg}", permanent=permanent)
        return proc.stdout

    def _info(self, volume_id: str, path: Path, *, permanent: bool = False) -> dict:
        """``qemu-img info`` of ``path`` (no key needed: it reads only the headers).

        ``-U`` (force-share): a volume a running guest has open is locked for writing.
        """
        out = self._run(volume_id, ["info", "-U", "--output=json", str(path)], permanent=permanent)
        return json.loads(out)

    def _secret_object(self, obj_id: str, volume_id: str) -> list[str]:
        """``--object secret`` reading ``volume_id``'s key file (the key stays in the file)."""
        keyfile = _opt(self.key_path(volume_id))
        return ["--object", f"secret,id={obj_id},file={keyfile},format=raw"]

    @staticmethod
    def _image_opts(path: Path, secret_id: str) -> str:
        return f"driver=qcow2,file.filename={_opt(path)},encrypt.key-secret={secret_id}"

    def _read_sidecar(self, volume_id: str) -> dict | None:
        """The volume's sidecar when this site made it, else None."""
        try:
            meta = json.loads(self._sidecar(volume_id).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("site") != self.site:
            return None
        if meta.get("id") != volume_id:
            return None
        return meta

    def _observe(self, volume_id: str) -> ObservedVolume | None:
        """The owned volume ``volume_id`` as it is on disk, or None."""
        meta = self._read_sidecar(volume_id)
        path = self.path(volume_id)
        if meta is None or not path.is_file():
            return None
        info = self._info(volume_id, path)
        encrypted = "encrypt" in info.get("format-specific", {}).get("data", {})
        size_gb = math.ceil(int(info["virtual-size"]) / GIB)
        return ObservedVolume(id=volume_id, size_gb=size_gb, encrypted=encrypted, path=path)

    def _require(self, volume_id: str) -> ObservedVolume:
        check_volume_id(volume_id)
        found = self._observe(volume_id)
        if found is None:
            raise VolumeError(volume_id, "no such volume")
        return found

    # --- keys and secrets ---------------------------------------------------------

    def _write_key(self, volume_id: str, key: bytes) -> None:
        self.keys.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.key_path(volume_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)  # the file may have existed with another mode
            os.write(fd, passphrase(key))
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read_key(self, volume_id: str) -> bytes:
        """The volume's passphrase (as stored: base64 of the key)."""
        try:
            return self.key_path(volume_id).read_bytes()
        except FileNotFoundError as exc:
            raise VolumeError(volume_id, "the volume's key is missing", permanent=True) from exc

    def _connection(self) -> libvirt.virConnect:
        if self.libvirt_uri is None:
            raise VolumeError("*", "no libvirt connection configured", permanent=True)
        if self._conn is not None:
            with suppress(libvirt.libvirtError):
                if self._conn.isAlive():
                    return self._conn
            self._conn = None
        libvirt.registerErrorHandler(_ignore_libvirt_error, None)
        self._conn = libvirt.open(self.libvirt_uri)
        return self._conn

    def _lookup_secret(self, path: Path) -> libvirt.virSecret | None:
        try:
            return self._connection().secretLookupByUsage(
                libvirt.VIR_SECRET_USAGE_TYPE_VOLUME, str(path)
            )
        except libvirt.libvirtError as exc:
            # A hypervisor without secrets (libvirt's test driver) holds none of ours.
            if exc.get_error_code() in (libvirt.VIR_ERR_NO_SECRET, libvirt.VIR_ERR_NO_SUPPORT):
                return None
            raise

    def _ensure_secret(self, volume_id: str) -> str:
        """Define (or refresh) the libvirt secret of an encrypted volume; its UUID."""
        path = self.path(volume_id)
        secret = self._lookup_secret(path)
        if secret is None:
            secret_uuid = str(uuid.uuid5(_SECRET_NS, f"{self.site}:{path}"))
            xml = secret_xml(secret_uuid, path, f"skerry site {self.site} volume {volume_id}")
            secret = self._connection().secretDefineXML(xml)
        secret.setValue(self._read_key(volume_id))
        return secret.UUIDString()

    def _remove_secret(self, volume_id: str) -> None:
        if self.libvirt_uri is None:
            return
        secret = self._lookup_secret(self.path(volume_id))
        if secret is not None:
            with suppress(libvirt.libvirtError):  # gone meanwhile: that is the goal
                secret.undefine()

    # --- building a volume --------------------------------------------------------

    def _probe_source(self, spec: VolumeSpec) -> list[str]:
        """Check an outside ``spec.source`` and give the convert arguments reading it.

        The format is probed, never trusted: only raw and qcow2, no backing file
        (it could point anywhere on the host), no encryption, and it must fit.
        """
        assert spec.source is not None
        source = Path(spec.source)
        if not source.is_file():
            raise VolumeError(spec.id, f"source {source} does not exist", permanent=True)
        info = self._info(spec.id, source, permanent=True)
        fmt = info.get("format")
        if fmt not in _SOURCE_FORMATS:
            raise VolumeError(spec.id, f"source format {fmt!r} is not raw or qcow2", permanent=True)
        if "backing-filename" in info or "full-backing-filename" in info:
            raise VolumeError(spec.id, "source has a backing file", permanent=True)
        if "encrypt" in info.get("format-specific", {}).get("data", {}):
            raise VolumeError(spec.id, "source is encrypted", permanent=True)
        if int(info["virtual-size"]) > spec.size_gb * GIB:
            need = math.ceil(int(info["virtual-size"]) / GIB)
            raise VolumeError(spec.id, f"source needs {need} GB, volume has {spec.size_gb}",
                              permanent=True)  # fmt: skip
        return ["-f", str(fmt), str(source)]

    def _build(self, spec: VolumeSpec, key: bytes | None, source_args: list[str]) -> None:
        """Create the qcow2 under its temporary name, fill it, then give it its name."""
        tmp = self._tmp(spec.id)
        with suppress(FileNotFoundError):
            tmp.unlink()
        create = ["create", "-q", "-f", "qcow2"]
        if key is not None:
            self._write_key(spec.id, key)
            opts = "encrypt.format=luks,encrypt.key-secret=sec0"
            if self.luks_iter_time_ms is not None:
                opts += f",encrypt.iter-time={int(self.luks_iter_time_ms)}"
            create += [*self._secret_object("sec0", spec.id), "-o", opts]
        for attempt in range(_LUKS_ATTEMPTS):
            try:
                self._run(spec.id, [*create, str(tmp), f"{spec.size_gb}G"])
                break
            except VolumeError as exc:
                # QEMU times its PBKDF benchmark by thread CPU time, which reads 0 ms
                # now and then on tick-accounted VMs: that failure is worth a retry.
                if _FLAKY_BENCHMARK not in exc.reason or attempt == _LUKS_ATTEMPTS - 1:
                    raise
                log.info("volume %s: LUKS benchmark misread CPU time, retrying", spec.id)
        if source_args:
            # A fresh qcow2 reads as zeros: only the source's data is written.
            convert = ["convert", "-n", "--target-is-zero", *source_args]
            if key is not None:
                convert += [*self._secret_object("sec0", spec.id), "--target-image-opts",
                            self._image_opts(tmp, "sec0")]  # fmt: skip
            else:
                convert += ["-O", "qcow2", str(tmp)]
            self._run(spec.id, convert)
        meta = {"site": self.site, "id": spec.id, "encrypted": spec.encrypted}
        side_tmp = self.root / f".tmp-{spec.id}.json"
        side_tmp.write_text(json.dumps(meta))
        side_tmp.replace(self._sidecar(spec.id))
        tmp.replace(self.path(spec.id))  # the volume exists from here on
        dir_fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _same(self, found: ObservedVolume, spec: VolumeSpec, key: bytes | None) -> ObservedVolume:
        """``found`` when it is what ``spec`` asks for; a permanent error otherwise."""
        if found.size_gb != spec.size_gb or found.encrypted != spec.encrypted:
            raise VolumeError(
                spec.id,
                f"exists with size {found.size_gb} GB, encrypted={found.encrypted}",
                permanent=True,
            )
        if key is not None and not hmac.compare_digest(self._read_key(spec.id), passphrase(key)):
            raise VolumeError(spec.id, "exists with a different key", permanent=True)
        return found

    def _create(self, spec: VolumeSpec, key: bytes | None, source_args: list[str]) -> None:
        """Build the volume; on any failure remove everything this call made."""
        if self.path(spec.id).exists():
            raise VolumeError(spec.id, "a file this site did not make is in the way",
                              permanent=True)  # fmt: skip
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._build(spec, key, source_args)
        except BaseException:
            self._remove_files(spec.id)
            raise
        log.info("volume %s created (%d GB, encrypted=%s)", spec.id, spec.size_gb, spec.encrypted)

    def _remove_files(self, volume_id: str) -> None:
        for path in (
            self.path(volume_id),
            self._tmp(volume_id),
            self._sidecar(volume_id),
            self.root / f".tmp-{volume_id}.json",
            self.key_path(volume_id),
        ):
            with suppress(FileNotFoundError):
                path.unlink()

    # --- VolumeDriver -------------------------------------------------------------

    def list_owned(self) -> dict[str, ObservedVolume]:
        with self._op("*", "list"):
            if not self.root.is_dir():
                return {}
            found: dict[str, ObservedVolume] = {}
            for sidecar in sorted(self.root.glob("*.json")):
                volume_id = sidecar.stem
                if volume_id.startswith(".tmp-"):
                    continue
                observed = self._observe(volume_id)
                if observed is not None:
                    found[volume_id] = observed
            return found

    def create(self, spec: VolumeSpec, key: bytes | None = None) -> ObservedVolume:
        check_spec(spec, key)
        with self._op(spec.id, "create"):
            found = self._observe(spec.id)
            if found is not None:
                return self._same(found, spec, key)
            source_args = self._probe_source(spec) if spec.source is not None else []
            self._create(spec, key, source_args)
            return self._require(spec.id)

    def delete(self, volume_id: str) -> None:
        check_volume_id(volume_id)
        with self._op(volume_id, "delete"):
            if self._read_sidecar(volume_id) is None and self.path(volume_id).exists():
                # Someone else's file: invisible, so "already gone" for us.
                log.warning("volume %s: a file not made by this site, left alone", volume_id)
                return
            self._remove_secret(volume_id)
            self._remove_files(volume_id)
            log.info("volume %s deleted", volume_id)

    def extend(self, volume_id: str, size_gb: int) -> ObservedVolume:
        with self._op(volume_id, "extend"):
            found = self._require(volume_id)
            if not isinstance(size_gb, int) or size_gb > 65536:
                raise VolumeError(volume_id, f"bad size {size_gb!r}", permanent=True)
            if size_gb < found.size_gb:
                raise VolumeError(volume_id, f"cannot shrink from {found.size_gb} GB to "
                                  f"{size_gb} GB", permanent=True)  # fmt: skip
            if size_gb == found.size_gb:
                return found
            if found.encrypted:
                args = [*self._secret_object("sec0", volume_id), "--image-opts",
                        self._image_opts(found.path, "sec0")]  # fmt: skip
            else:
                args = ["-f", "qcow2", str(found.path)]
            self._run(volume_id, ["resize", "-q", *args, f"{size_gb}G"])
            log.info("volume %s extended to %d GB", volume_id, size_gb)
            return self._require(volume_id)

    def snapshot(self, volume_id: str, snap_id: str) -> ObservedVolume:
        check_volume_id(snap_id)
        with self._op(snap_id, "snapshot"):
            existing = self._observe(snap_id)
            if existing is not None and self._observe(volume_id) is None:
                return existing  # made before the source went: done
            source = self._require(volume_id)
            # The copy shares the source's key (central has it already).
            key = base64.b64decode(self._read_key(volume_id)) if source.encrypted else None
            spec = VolumeSpec(snap_id, source.size_gb, encrypted=source.encrypted)
            if existing is not None:
                return self._same(existing, spec, key)
            if source.encrypted:
                args = [*self._secret_object("src0", volume_id), "--image-opts",
                        self._image_opts(source.path, "src0")]  # fmt: skip
            else:
                args = ["-f", "qcow2", str(source.path)]
            self._create(spec, key, args)
            return self._require(snap_id)

    def disk_xml(self, volume_id: str, target_dev: str) -> str:
        with self._op(volume_id, "disk_xml"):
            found = self._require(volume_id)
            secret_uuid = self._ensure_secret(volume_id) if found.encrypted else None
            return disk_xml(volume_id, found.path, target_dev, secret_uuid)

    def attachment(self, volume_id: str) -> tuple[Path, str | None]:
        with self._op(volume_id, "attachment"):
            found = self._require(volume_id)
            return found.path, self._ensure_secret(volume_id) if found.encrypted else None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None
