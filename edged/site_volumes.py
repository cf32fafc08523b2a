"""The thin side of reconciling a site's volumes: apply the plan through the drivers, report.

:class:`SiteVolumes` is what the executor calls in its pass: ``prepare``
(detach, delete, create, extend, snapshot; before servers are created, after
servers are deleted), ``root_disk`` (a boot volume for a server create),
``attach`` (after servers are created) and ``report``. A failed action is
logged, counted and reported as the volume's reason; it never stops the pass.
Keys go from the document to the volume driver and nowhere else.

Volumes copied from an image take the image's file from an :class:`ImageSource`
(the site's image cache); until it has the image the volume stays ``pending``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edged.drivers.compute import ComputeDriver, ComputeError, Disk, ObservedServer
from edged.drivers.volume import ObservedVolume, VolumeDriver, VolumeError, VolumeSpec
from edged.reconcile_volumes import (
    VolumeAction,
    VolumeDesired,
    VolumesDesired,
    plan_volumes,
    volumes_from_document,
    waiting_reason,
)
from edged.sealed import open_sealed

log = logging.getLogger(__name__)

PREPARE = ("detach", "delete", "create", "extend", "snapshot")


class ImageSource(Protocol):
    """Where volumes made from an image find its file at the site."""

    def cached_path(self, image_id: str) -> Path | None:
        """The image's verified file in the site cache, or None while it is not there."""


class NoImageCache:
    """A site without an image cache: no image is ever there."""

    def cached_path(self, image_id: str) -> Path | None:
        return None


def from_config(
    site: str,
    kind: str,
    root: Path,
    libvirt_uri: str,
    compute: ComputeDriver,
    luks_iter_time_ms: int = 0,
    site_secret: Callable[[], str | None] = lambda: None,
    images: ImageSource | None = None,
) -> SiteVolumes | None:
    """The site's volumes as its config says (``kind``: ``qemu-img`` or ``none``)."""
    if kind == "none":
        return None
    from edged.drivers.volume_qemuimg import QemuImgVolumes

    driver = QemuImgVolumes(site, root, libvirt_uri, luks_iter_time_ms or None)
    return SiteVolumes(driver, compute, site_secret=site_secret, images=images or NoImageCache())


def attachments(observed: Mapping[str, ObservedServer]) -> dict[str, frozenset[str]]:
    """Server id -> volume ids in its domain."""
    return {sid: o.volumes for sid, o in observed.items() if o.volumes}


@dataclass
class SiteVolumes:
    """Applies volume plans for one site and reports the volumes' state."""

    driver: VolumeDriver
    compute: ComputeDriver
    images: ImageSource = field(default_factory=NoImageCache)
    # The site's CURVE secret key (Z85), read when needed (it may be rotated); None: none.
    site_secret: Callable[[], str | None] = lambda: None
    counters: Counter[str] = field(default_factory=Counter)
    # volume (or snapshot) id -> (build hash, reason) of a permanent failure.
    failed: dict[str, tuple[str, str]] = field(default_factory=dict)
    # volume (or snapshot) id -> reason of the last temporary failure or wait.
    transient: dict[str, str] = field(default_factory=dict)

    def desired(self, document: Mapping[str, Any] | None) -> VolumesDesired:
        """The document's volumes, their keys opened with the site's CURVE secret key."""
        secret = self.site_secret() if (document or {}).get("volumes") else None
        if secret is None:
            return volumes_from_document(document)
        return volumes_from_document(document, lambda blob, vid: open_sealed(secret, blob, vid))

    def begin(self, desired: VolumesDesired) -> None:
        """Start a pass: a permanent failure holds only for the spec that failed."""
        hashes = {vid: v.build_hash() for vid, v in desired.volumes.items()}
        hashes |= {sid: f"snapshot-of-{vid}" for sid, vid in desired.snapshots.items()}
        self.failed = {k: v for k, v in self.failed.items() if hashes.get(k) == v[0]}
        self.transient = {}

    def _plan(
        self,
        desired: VolumesDesired,
        observed: Mapping[str, ObservedServer],
        desired_servers: Collection[str],
        going: Collection[str],
    ) -> list[VolumeAction]:
        try:
            volumes = self.driver.list_owned()
        except VolumeError as exc:
            self.counters["action_errors"] += 1
            log.warning("volumes not listed, none changed this pass: %s", exc)
            return []
        for vid, want in desired.volumes.items():
            if vid not in volumes and (why := waiting_reason(want, volumes)):
                self.transient[vid] = why
        return plan_volumes(
            desired,
            volumes,
            attachments(observed),
            servers=set(desired_servers) & set(observed),
            going=going,
            failed={k: v[0] for k, v in self.failed.items()},
        )

    def prepare(
        self,
        desired: VolumesDesired,
        observed: Mapping[str, ObservedServer],
        desired_servers: Collection[str],
        going: Collection[str],
    ) -> list[VolumeAction]:
        """Detach, delete, create, extend and snapshot (before servers are created)."""
        actions = [
            a for a in self._plan(desired, observed, desired_servers, going) if a.kind in PREPARE
        ]
        for action in actions:
            self._apply(action, desired)
        return actions

    def attach(
        self,
        desired: VolumesDesired,
        observed: Mapping[str, ObservedServer],
        desired_servers: Collection[str],
    ) -> list[VolumeAction]:
        """Attach volumes to their servers (after servers are created)."""
        actions = [
            a for a in self._plan(desired, observed, desired_servers, ()) if a.kind == "attach"
        ]
        for action in actions:
            self._apply(action, desired)
        return actions

    def root_disk(self, server_id: str, volume_id: str) -> Disk:
        """The boot volume as a server's root disk; a temporary ComputeError until it exists."""
        try:
            path, secret = self.driver.attachment(volume_id)
        except VolumeError as exc:
            why = self.transient.get(volume_id) or exc.reason
            raise ComputeError(server_id, f"waiting for boot volume {volume_id}: {why}") from exc
        return Disk(volume_id, path, secret)

    # -- actions ------------------------------------------------------------------------

    def _apply(self, action: VolumeAction, desired: VolumesDesired) -> None:
        subject = action.snapshot_id or action.volume_id
        try:
            self._do(action, desired)
            self.counters[f"action_volume_{action.kind}"] += 1
        except (VolumeError, ComputeError) as exc:
            self.counters["action_errors"] += 1
            log.warning("volume %s of %s failed: %s", action.kind, subject, exc.reason)
            want = desired.volumes.get(action.volume_id)
            if exc.permanent and action.kind == "snapshot":
                self.failed[subject] = (f"snapshot-of-{action.volume_id}", exc.reason)
            elif exc.permanent and action.kind in ("create", "extend") and want is not None:
                self.failed[subject] = (want.build_hash(), exc.reason)
            else:
                self.transient[subject] = exc.reason

    def _do(self, action: VolumeAction, desired: VolumesDesired) -> None:
        vid = action.volume_id
        if action.kind == "detach":
            self.compute.detach_disk(action.server_id, vid)
        elif action.kind == "delete":
            self.driver.delete(vid)
        elif action.kind == "create":
            self._create(desired.volumes[vid])
        elif action.kind == "extend":
            self.driver.extend(vid, desired.volumes[vid].size_gb)
        elif action.kind == "snapshot":
            self.driver.snapshot(vid, action.snapshot_id)
        elif action.kind == "attach":
            path, secret = self.driver.attachment(vid)
            self.compute.attach_disk(action.server_id, Disk(vid, path, secret))

    def _create(self, want: VolumeDesired) -> None:
        if want.source_snapshot is not None:
            # A full copy of the snapshot, with its key (the same central sent);
            # grown to the volume's size by the next plan's extend.
            self.driver.snapshot(want.source_snapshot, want.id)
            return
        source = None
        if want.source_image is not None:
            source = self.images.cached_path(want.source_image)
            if source is None:
                self.transient[want.id] = f"image {want.source_image} not in the site cache yet"
                return
        spec = VolumeSpec(want.id, want.size_gb, encrypted=want.encrypted, source=source)
        self.driver.create(spec, want.key)

    # -- report -------------------------------------------------------------------------

    def report(
        self, desired: VolumesDesired, observed: Mapping[str, ObservedServer]
    ) -> dict[str, Any]:
        """``volumes`` and ``snapshots`` sections of the site's status report."""
        volumes = self.driver.list_owned()
        where: dict[str, list[str]] = {}
        for server_id, vols in sorted(attachments(observed).items()):
            for vid in vols:
                where.setdefault(vid, []).append(server_id)
        section: dict[str, Any] = {}
        for vid, want in desired.volumes.items():
            section[vid] = self._state(vid, want, volumes.get(vid), where.get(vid, []))
        for vid, reason in desired.unreadable.items():
            section[vid] = {"state": "error", "reason": reason}
        snapshots: dict[str, Any] = {}
        for snap_id in desired.snapshots:
            if snap_id in self.failed:
                snapshots[snap_id] = {"state": "error", "reason": self.failed[snap_id][1]}
            elif snap_id in volumes:
                snapshots[snap_id] = {"state": "available", "reason": ""}
            elif snap_id in self.transient:
                snapshots[snap_id] = {"state": "pending", "reason": self.transient[snap_id]}
        for vid in set(volumes) - desired.keep():
            section[vid] = {"state": "deleting", "reason": ""}
        return {"volumes": section, "snapshots": snapshots}

    def _state(
        self, vid: str, want: VolumeDesired, have: ObservedVolume | None, servers: list[str]
    ) -> dict[str, Any]:
        if vid in self.failed:
            return {"state": "error", "reason": self.failed[vid][1]}
        if have is None:
            return {"state": "pending", "reason": self.transient.get(vid, "")}
        reason = self.transient.get(vid, "")
        if have.size_gb > want.size_gb and not reason:
            reason = f"is {have.size_gb} GB, more than the {want.size_gb} GB asked"
        elif have.size_gb < want.size_gb and servers and not reason:
            reason = f"grows to {want.size_gb} GB once detached"
        attached_to = want.attached_to if want.attached_to in servers else None
        if attached_to is None and servers:
            attached_to = servers[0]
        return {
            "state": "in-use" if attached_to else "available",
            "reason": reason,
            "attached_to": attached_to,
            "size_gb": have.size_gb,
        }
