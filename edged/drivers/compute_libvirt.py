"""The libvirt implementation of :class:`~edged.drivers.compute.ComputeDriver`.

Servers are persistent libvirt domains named ``skerry-{site}-{server_id}``,
booted straight from an image's kernel + initrd with an empty qcow2 root disk, or
from a verified cached disk image (:class:`BootImage`: the root disk is a qcow2
overlay on it, the guest's arguments on a read-only raw config disk), with a
serial console written to a file, all under ``state_dir``::

    <state_dir>/disks/<server_id>.qcow2
    <state_dir>/disks/<server_id>.config   (disk-image boot only)
    <state_dir>/console/<server_id>.log

A domain is this site's iff its skerry metadata element names the site; every
other domain on the host is invisible here. NICs are found by their
``ua-sk-<port id>`` alias; hot-plug is live + persistent when the domain runs,
persistent only when it is shut off (by redefining the persistent XML where the
hypervisor cannot attach, as libvirt's test driver). Every libvirt error becomes a
:class:`ComputeError`. Calls are serialised by a lock, so the driver may be used
from a worker thread.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, suppress
from pathlib import Path

import libvirt

from edged.drivers.compute import (
    BootImage,
    ComputeDriver,
    ComputeError,
    Disk,
    Inventory,
    Nic,
    ObservedServer,
    ObservedState,
    Placement,
    ServerSpec,
)
from edged.drivers.domain_xml import (
    NS,
    Ownership,
    build_domain_xml,
    config_disk_bytes,
    config_disk_path,
    console_path,
    disk_alias,
    disk_path,
    disk_volume_ids,
    disk_xml,
    domain_name,
    free_target,
    image_paths,
    nic_alias,
    nic_port_ids,
    nic_xml,
    parse_ownership,
    with_disk,
    with_nic,
    without_disk,
    without_nic,
)
from edged.drivers.libvirt_ops import serialised

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ANY = "*"  # server id used in errors of host-wide calls
_POLL_S = 0.2
_LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
_CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG
_INACTIVE = libvirt.VIR_DOMAIN_XML_INACTIVE


def _ignore_libvirt_error(_ctx: object, _err: object) -> None:
    """Keep libvirt from printing every error to stderr; we raise them instead."""


def map_state(state: int, reason: int) -> ObservedState:
    """Map libvirt's ``dom.state()`` pair to an :data:`ObservedState`."""
    if state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED):
        return "running"
    if state == libvirt.VIR_DOMAIN_SHUTDOWN:  # shutting down: still running
        return "running"
    if state in (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PMSUSPENDED):
        return "paused"
    if state == libvirt.VIR_DOMAIN_CRASHED:
        return "crashed"
    if state == libvirt.VIR_DOMAIN_SHUTOFF:
        return "crashed" if reason == libvirt.VIR_DOMAIN_SHUTOFF_CRASHED else "shutoff"
    return "other"


def _err_code(exc: libvirt.libvirtError) -> int | None:
    return exc.get_error_code()


def _format_version(version: int) -> str:
    return f"{version // 1_000_000}.{version // 1000 % 1000}.{version % 1000}"


class LibvirtCompute(ComputeDriver):
    """Compute driver backed by libvirt (QEMU/TCG in production, ``test:`` in unit tests)."""

    def __init__(
        self,
        site: str,
        uri: str,
        state_dir: Path,
        image_dir: Path,
        virt_type: str = "auto",
        stop_grace_s: float = 5.0,
    ) -> None:
        if not _SAFE_NAME.fullmatch(site):
            raise ValueError(f"invalid site name {site!r}")
        if virt_type == "auto":
            virt_type = "test" if uri.startswith("test:") else "qemu"
        if virt_type not in ("qemu", "kvm", "test"):
            raise ValueError(f"unknown virt_type {virt_type!r}")
        self.site = site
        self.uri = uri
        self.state_dir = Path(state_dir).absolute()  # libvirtd resolves paths itself
        self.image_dir = Path(image_dir).absolute()
        self.virt_type = virt_type
        self.stop_grace_s = stop_grace_s
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.RLock()

    # --- connection and helpers -------------------------------------------------

    def connection(self) -> libvirt.virConnect:
        """The libvirt connection; opened lazily and reopened when it dropped."""
        with self._lock:
            return self._connection()

    def _connection(self) -> libvirt.virConnect:
        if self._conn is not None:
            try:
                if self._conn.isAlive():
                    return self._conn
            except libvirt.libvirtError:
                pass
            with suppress(libvirt.libvirtError):
                self._conn.close()
            self._conn = None
        libvirt.registerErrorHandler(_ignore_libvirt_error, None)
        self._conn = libvirt.open(self.uri)
        return self._conn

    def _op(self, server_id: str, what: str) -> AbstractContextManager[None]:
        """Serialise the call and turn libvirt/OS errors into ComputeError."""
        return serialised(self._lock, ComputeError, server_id, what)

    @staticmethod
    def _check_id(server_id: str) -> None:
        if not _SAFE_NAME.fullmatch(server_id):
            raise ComputeError(server_id, "invalid server id", permanent=True)

    def _ownership(self, dom: libvirt.virDomain) -> Ownership | None:
        """The domain's ownership when this site owns it, else None."""
        try:
            xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS)
        except libvirt.libvirtError:
            return None
        owner = parse_ownership(xml)
        if owner is None or owner.site != self.site:
            return None
        return owner

    def _lookup(self, server_id: str) -> tuple[libvirt.virDomain, Ownership] | None:
        """The owned domain of ``server_id``, or None (absent or not ours)."""
        try:
            dom = self._connection().lookupByName(domain_name(self.site, server_id))
        except libvirt.libvirtError as exc:
            if _err_code(exc) == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise
        owner = self._ownership(dom)
        if owner is None or owner.id != server_id:
            return None
        return dom, owner

    def _require(self, server_id: str) -> libvirt.virDomain:
        found = self._lookup(server_id)
        if found is None:
            raise ComputeError(server_id, "no such server")
        return found[0]

    @staticmethod
    def _is_active(dom: libvirt.virDomain) -> bool:
        try:
            return bool(dom.isActive())
        except libvirt.libvirtError as exc:
            if _err_code(exc) == libvirt.VIR_ERR_NO_DOMAIN:
                return False
            raise

    @staticmethod
    def _destroy(dom: libvirt.virDomain) -> None:
        """Hard power-off; a domain that is already off is fine."""
        try:
            dom.destroy()
        except libvirt.libvirtError as exc:
            if _err_code(exc) not in (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_NO_DOMAIN):
                raise

    @staticmethod
    def _undefine(dom: libvirt.virDomain) -> None:
        """Undefine, with the NVRAM/managed-save flags where the driver takes them."""
        flags = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        try:
            dom.undefineFlags(flags)
            return
        except libvirt.libvirtError as exc:
            code = _err_code(exc)
            if code == libvirt.VIR_ERR_NO_DOMAIN:
                return
            if code not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
                raise
        try:
            dom.undefine()
        except libvirt.libvirtError as exc:
            if _err_code(exc) != libvirt.VIR_ERR_NO_DOMAIN:
                raise

    def _remove_files(self, server_id: str) -> None:
        disk_path(self.state_dir, server_id).unlink(missing_ok=True)
        config_disk_path(self.state_dir, server_id).unlink(missing_ok=True)
        console_path(self.state_dir, server_id).unlink(missing_ok=True)

    def _make_disk(self, spec: ServerSpec, boot_image: BootImage | None = None) -> None:
        """An empty qcow2 root disk of ``disk_gb``, or a qcow2 overlay on ``boot_image``
        (backing format stated, never probed), grown to ``disk_gb`` when the image is smaller."""
        path = disk_path(self.state_dir, spec.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        console_path(self.state_dir, spec.id).parent.mkdir(parents=True, exist_ok=True)
        size = f"{spec.disk_gb}G"
        if boot_image is None:
            self._qemu_img(spec, "create", "-q", "-f", "qcow2", str(path), size)
            return
        backing = ["-F", boot_image.format, "-b", str(boot_image.path)]
        self._qemu_img(spec, "create", "-q", "-f", "qcow2", *backing, str(path))
        info = self._qemu_img(spec, "info", "--output=json", str(path))
        try:
            current = int(json.loads(info)["virtual-size"])
        except (ValueError, KeyError, TypeError):
            current = 0
        if current < spec.disk_gb * 2**30:
            self._qemu_img(spec, "resize", "-q", str(path), size)

    def _qemu_img(self, spec: ServerSpec, *args: str) -> str:
        """Run ``qemu-img ARGS``; its output, or a ComputeError."""
        try:
            proc = subprocess.run(
                ["qemu-img", *args], capture_output=True, text=True, timeout=60, check=False
            )
        except FileNotFoundError as exc:
            raise ComputeError(spec.id, "qemu-img not found", permanent=True) from exc
        except subprocess.TimeoutExpired as exc:
            raise ComputeError(spec.id, f"qemu-img {args[0]} timed out") from exc
        if proc.returncode != 0:
            msg = proc.stderr.strip() or f"exit {proc.returncode}"
            raise ComputeError(spec.id, f"qemu-img {args[0]} {args[-1]} failed: {msg}")
        return proc.stdout

    # --- ComputeDriver ----------------------------------------------------------

    def list_owned(self) -> dict[str, ObservedServer]:
        """Servers this site owns, by server id, with the NICs of both their definitions.

        One ``XMLDesc`` of the persistent definition (ownership and NIC aliases)
        and one ``state`` per domain, plus the live ``XMLDesc`` of running ones:
        a NIC whose hot-plug or unplug the guest has not completed yet is in one
        definition only, and is reported as ``half_plugged`` so it is retried.
        """
        with self._op(_ANY, "list domains"):
            owned: dict[str, ObservedServer] = {}
            for dom in self._connection().listAllDomains():
                try:
                    xml = dom.XMLDesc(_INACTIVE)
                    owner = parse_ownership(xml)
                    if owner is None or owner.site != self.site:
                        continue
                    state, reason = dom.state()
                    ports = frozenset(nic_port_ids(xml))
                    live = ports
                    volumes = set(disk_volume_ids(xml))
                    if dom.isActive():
                        live_xml = dom.XMLDesc(0)
                        live = frozenset(nic_port_ids(live_xml))
                        volumes.update(disk_volume_ids(live_xml))
                except libvirt.libvirtError as exc:
                    if _err_code(exc) == libvirt.VIR_ERR_NO_DOMAIN:
                        continue  # vanished while we looked
                    raise
                owned[owner.id] = ObservedServer(
                    id=owner.id,
                    state=map_state(state, reason),
                    build_hash=owner.build,
                    ports=ports | live,
                    half_plugged=ports ^ live,
                    volumes=frozenset(volumes),
                )
            return owned

    def list_leftovers(self) -> set[str]:
        """Server ids with a disk or console file but no owned domain."""
        with self._op(_ANY, "list leftovers"):
            ids: set[str] = set()
            for sub, suffix in (("disks", ".qcow2"), ("console", ".log")):
                folder = self.state_dir / sub
                if folder.is_dir():
                    ids.update(
                        p.name.removesuffix(suffix)
                        for p in folder.iterdir()
                        if p.name.endswith(suffix) and _SAFE_NAME.fullmatch(p.name)
                    )
            return ids - set(self.list_owned())

    def create(
        self,
        spec: ServerSpec,
        nics: Sequence[Nic] = (),
        placement: Placement | None = None,
        boot_image: BootImage | None = None,
        root_disk: Disk | None = None,
    ) -> None:
        """Define the server with ``nics`` and ``placement``; start it when it should run.

        With ``boot_image`` (a verified cached image) the guest boots from its root disk
        and its arguments go on a config disk; the root disk is ``root_disk`` (a volume,
        no file made) or else a qcow2 overlay on the image. A NIC or placement that
        cannot be expressed is a permanent error.
        """
        self._check_id(spec.id)
        if not _SAFE_NAME.fullmatch(spec.image):
            raise ComputeError(spec.id, f"invalid image name {spec.image!r}", permanent=True)
        if boot_image is not None:
            if not boot_image.path.is_file():
                raise ComputeError(spec.id, f"image file missing: {boot_image.path}")
        else:
            for path in image_paths(self.image_dir, spec.image):
                if not path.is_file():
                    raise ComputeError(spec.id, f"image file missing: {path}", permanent=True)
        with self._op(spec.id, "create"):
            found = self._lookup(spec.id)
            if found is not None:
                dom, owner = found
                if owner.build != spec.build_hash():
                    raise ComputeError(
                        spec.id,
                        f"exists with build {owner.build}, wanted {spec.build_hash()}; "
                        "delete it first",
                    )
                if spec.power == "running" and not self._is_active(dom):
                    dom.create()
                return
            conn = self._connection()
            name = domain_name(self.site, spec.id)
            try:
                conn.lookupByName(name)
            except libvirt.libvirtError as exc:
                if _err_code(exc) != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
            else:
                raise ComputeError(
                    spec.id, f"domain {name} exists but is not owned by site {self.site}"
                )
            try:
                xml = build_domain_xml(
                    spec,
                    site=self.site,
                    virt_type=self.virt_type,
                    state_dir=self.state_dir,
                    image_dir=self.image_dir,
                    nics=nics,
                    placement=placement,
                    boot_image=boot_image,
                    root_disk=root_disk,
                )
                config = config_disk_bytes(spec, nics) if boot_image is not None else None
            except ValueError as exc:
                raise ComputeError(spec.id, str(exc), permanent=True) from exc
            dom = None
            try:
                if root_disk is None:
                    self._make_disk(spec, boot_image)
                else:
                    console_path(self.state_dir, spec.id).parent.mkdir(parents=True, exist_ok=True)
                if config is not None:
                    config_disk_path(self.state_dir, spec.id).write_bytes(config)
                dom = conn.defineXML(xml)
                if spec.power == "running":
                    dom.create()
            except BaseException:
                if dom is not None:
                    with suppress(libvirt.libvirtError):
                        self._destroy(dom)
                        self._undefine(dom)
                self._remove_files(spec.id)
                raise

    def attach_nic(self, server_id: str, nic: Nic) -> None:
        """Add ``nic``: live + persistent when running, persistent when shut off."""
        self._check_id(server_id)
        try:
            xml = nic_xml(nic)
        except ValueError as exc:
            raise ComputeError(server_id, str(exc), permanent=True) from exc
        with self._op(server_id, f"attach port {nic.port_id}"):
            dom = self._require(server_id)
            flags = self._nic_flags(dom, nic.port_id, present=True)
            if flags:
                self._change_nic(
                    dom,
                    server_id,
                    flags,
                    lambda: dom.attachDeviceFlags(xml, flags),
                    lambda persistent: with_nic(persistent, nic),
                )

    def detach_nic(self, server_id: str, port_id: str) -> None:
        """Remove the NIC of ``port_id`` (by alias); a NIC that is not there is fine.

        A live removal completes when the guest releases the device; the
        persistent definition changes at once, and until the live one follows
        :meth:`list_owned` reports the port as ``half_plugged``.
        """
        self._check_id(server_id)
        try:
            alias = nic_alias(port_id)
        except ValueError as exc:
            raise ComputeError(server_id, str(exc), permanent=True) from exc
        with self._op(server_id, f"detach port {port_id}"):
            dom = self._require(server_id)
            flags = self._nic_flags(dom, port_id, present=False)
            if flags:
                self._change_nic(
                    dom,
                    server_id,
                    flags,
                    lambda: dom.detachDeviceAlias(alias, flags),
                    lambda persistent: without_nic(persistent, port_id),
                )

    def attach_disk(self, server_id: str, disk: Disk) -> None:
        """Add a volume's disk on the first free ``vdX``: live + persistent when running."""
        self._check_id(server_id)
        with self._op(server_id, f"attach volume {disk.volume_id}"):
            dom = self._require(server_id)
            persistent, live = self._definitions(dom)
            flags = self._disk_flags(persistent, live, disk.volume_id, present=True)
            if not flags:
                return
            try:
                target = free_target(persistent, *([live] if live else []))
                xml = disk_xml(disk, target)
            except ValueError as exc:
                raise ComputeError(server_id, str(exc), permanent=True) from exc
            self._change_nic(
                dom,
                server_id,
                flags,
                lambda: dom.attachDeviceFlags(xml, flags),
                lambda persistent: with_disk(persistent, disk, target),
            )

    def detach_disk(self, server_id: str, volume_id: str) -> None:
        """Remove a volume's disk (by alias); a disk that is not there is fine.

        As for NICs, a live removal completes when the guest releases the disk;
        until then :meth:`list_owned` still shows the volume in the domain.
        """
        self._check_id(server_id)
        try:
            alias = disk_alias(volume_id)
        except ValueError as exc:
            raise ComputeError(server_id, str(exc), permanent=True) from exc
        with self._op(server_id, f"detach volume {volume_id}"):
            dom = self._require(server_id)
            persistent, live = self._definitions(dom)
            flags = self._disk_flags(persistent, live, volume_id, present=False)
            if not flags:
                return
            try:
                self._change_nic(
                    dom,
                    server_id,
                    flags,
                    lambda: dom.detachDeviceAlias(alias, flags),
                    lambda persistent: without_disk(persistent, volume_id),
                )
            except libvirt.libvirtError as exc:
                # Asked again while the guest has not released the disk yet.
                if flags != _LIVE or _err_code(exc) != libvirt.VIR_ERR_OPERATION_FAILED:
                    raise

    def _definitions(self, dom: libvirt.virDomain) -> tuple[str, str | None]:
        """The persistent definition, and the live one when the domain runs."""
        persistent = dom.XMLDesc(_INACTIVE)
        return persistent, dom.XMLDesc(0) if self._is_active(dom) else None

    @staticmethod
    def _disk_flags(persistent: str, live: str | None, volume_id: str, *, present: bool) -> int:
        """The definitions where the volume's disk is not yet as wanted."""
        flags = 0
        if (volume_id in disk_volume_ids(persistent)) != present:
            flags |= _CONFIG
        if live is not None and (volume_id in disk_volume_ids(live)) != present:
            flags |= _LIVE
        return flags

    def _nic_flags(self, dom: libvirt.virDomain, port_id: str, *, present: bool) -> int:
        """The definitions (live, persistent) where ``port_id`` is not yet as wanted."""
        flags = 0
        if (port_id in nic_port_ids(dom.XMLDesc(_INACTIVE))) != present:
            flags |= _CONFIG
        if self._is_active(dom) and (port_id in nic_port_ids(dom.XMLDesc(0))) != present:
            flags |= _LIVE
        return flags

    def _change_nic(
        self,
        dom: libvirt.virDomain,
        server_id: str,
        flags: int,
        hotplug: Callable[[], object],
        edit: Callable[[str], str],
    ) -> None:
        """Hot-plug; where the driver cannot, redefine the persistent XML (shut off only)."""
        try:
            hotplug()
            return
        except libvirt.libvirtError as exc:
            if _err_code(exc) != libvirt.VIR_ERR_NO_SUPPORT:
                raise
        if flags & _LIVE:
            raise ComputeError(
                server_id, f"hypervisor ({self.virt_type}) cannot hot-plug devices while running"
            )
        persistent = dom.XMLDesc(_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
        self._connection().defineXML(edit(persistent))

    def start(self, server_id: str) -> None:
        """Power the server on (resume it when paused); running already is fine."""
        self._check_id(server_id)
        with self._op(server_id, "start"):
            dom = self._require(server_id)
            state, _reason = dom.state()
            if state in (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PMSUSPENDED):
                dom.resume()
            elif not self._is_active(dom):
                dom.create()

    def stop(self, server_id: str) -> None:
        """ACPI shutdown, then destroy after ``stop_grace_s``; shut off already is fine."""
        self._check_id(server_id)
        with self._op(server_id, "stop"):
            dom = self._require(server_id)
            if not self._is_active(dom):
                return
            try:
                dom.shutdown()
            except libvirt.libvirtError as exc:
                if _err_code(exc) == libvirt.VIR_ERR_OPERATION_INVALID:
                    return  # went off meanwhile
                raise
            deadline = time.monotonic() + self.stop_grace_s
            while self._is_active(dom) and time.monotonic() < deadline:
                time.sleep(_POLL_S)
            if self._is_active(dom):
                self._destroy(dom)

    def reboot(self, server_id: str) -> None:
        """``dom.reset()`` (a hard reset, as a reset button: an ACPI reboot request waits
        on the guest, and minimal images such as tiny ignore it); destroy + create where
        the hypervisor cannot reset."""
        self._check_id(server_id)
        with self._op(server_id, "reboot"):
            dom = self._require(server_id)
            if not self._is_active(dom):
                raise ComputeError(server_id, "not running, nothing to reboot")
            try:
                dom.reset(0)
                return
            except libvirt.libvirtError as exc:
                if _err_code(exc) not in (
                    libvirt.VIR_ERR_NO_SUPPORT,
                    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
                    libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
                ):
                    raise
            self._destroy(dom)
            dom.create()

    def delete(self, server_id: str) -> None:
        """Destroy and undefine the domain, remove its disk and console log."""
        self._check_id(server_id)
        with self._op(server_id, "delete"):
            found = self._lookup(server_id)
            if found is not None:
                dom = found[0]
                if self._is_active(dom):
                    self._destroy(dom)
                self._undefine(dom)
            self._remove_files(server_id)

    def inventory(self) -> Inventory:
        """CPUs, RAM (MiB) and disk (GiB, total of the state dir's filesystem)."""
        with self._op(_ANY, "inventory"):
            conn = self._connection()
            info = conn.getInfo()  # [model, memory MiB, cpus, mhz, nodes, sockets, cores, threads]
            self.state_dir.mkdir(parents=True, exist_ok=True)
            disk = shutil.disk_usage(self.state_dir)
            if self.virt_type == "test":
                hypervisor = "test"
            else:
                accel = "kvm" if self.virt_type == "kvm" else "qemu-tcg"
                hypervisor = f"{accel} ({conn.getType()} {_format_version(conn.getVersion())})"
            return Inventory(
                cpus=int(info[2]),
                ram_mb=int(info[1]),
                disk_gb=disk.total // 2**30,
                hypervisor=hypervisor,
            )

    def console_tail(self, server_id: str, max_bytes: int = 4096) -> str:
        """The last ``max_bytes`` of the serial console log ('' when there is none)."""
        self._check_id(server_id)
        path = console_path(self.state_dir, server_id)
        with self._op(server_id, "console"):
            try:
                with path.open("rb") as f:
                    size = f.seek(0, 2)
                    f.seek(max(0, size - max_bytes))
                    data = f.read(max_bytes)
            except FileNotFoundError:
                return ""
            return data.decode(errors="replace")

    def close(self) -> None:
        """Close the libvirt connection (reopened on next use)."""
        with self._lock:
            if self._conn is not None:
                with suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None
