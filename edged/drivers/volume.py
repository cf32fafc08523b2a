"""The block-volume driver contract: what edged needs from a site's volume store.

One interface, implemented by :mod:`edged.drivers.volume_qemuimg`. Every method
is idempotent: the reconciler may call it again after a crash at any point, so
"already done" is success, never an error. Also the pure pieces every
implementation shares: id checks and the libvirt ``<disk>``/``<secret>`` XML.
"""

from __future__ import annotations

import abc
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

# Volume ids become file names and libvirt aliases: keep them to safe characters.
VOLUME_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Attachable virtio targets: vdb .. vdzz (vda is the server's root disk).
TARGET_DEV = re.compile(r"^vd[a-z]{1,2}$")
# libvirt keeps only aliases starting with "ua-" in the persistent definition.
ALIAS_PREFIX = "ua-vol-"
GIB = 1024**3


class VolumeError(Exception):
    """A volume operation failed; the message names the volume and the cause.

    ``permanent`` errors (a bad id, shrinking, an unreadable source image) are
    reported to central as the volume's reason and not retried until the
    desired state changes; temporary ones are retried on the next reconcile.
    A message never holds key material.
    """

    def __init__(self, volume_id: str, message: str, *, permanent: bool = False) -> None:
        super().__init__(f"volume {volume_id}: {message}")
        self.volume_id = volume_id
        self.reason = message
        self.permanent = permanent


@dataclass(frozen=True)
class VolumeSpec:
    """One volume as the desired-state document describes it.

    ``source`` is the path of an image or volume file (qcow2 or raw) whose
    contents the new volume starts with; ``None`` for an empty volume.
    """

    id: str
    size_gb: int
    encrypted: bool = False
    source: Path | None = None


@dataclass(frozen=True)
class ObservedVolume:
    """A volume this site owns, as the store reports it."""

    id: str
    size_gb: int
    encrypted: bool
    path: Path


def check_volume_id(volume_id: str) -> None:
    """Raise a permanent :class:`VolumeError` unless ``volume_id`` is a safe id."""
    if not isinstance(volume_id, str) or not VOLUME_ID.fullmatch(volume_id):
        raise VolumeError(str(volume_id)[:80], "invalid volume id", permanent=True)


def check_spec(spec: VolumeSpec, key: bytes | None) -> None:
    """Raise a permanent :class:`VolumeError` when ``spec`` and ``key`` cannot be built."""
    check_volume_id(spec.id)
    if not isinstance(spec.size_gb, int) or not 1 <= spec.size_gb <= 65536:
        raise VolumeError(
            spec.id, f"size_gb must be 1..65536, not {spec.size_gb!r}", permanent=True
        )
    if spec.encrypted and not key:
        raise VolumeError(spec.id, "an encrypted volume needs a key", permanent=True)
    if not spec.encrypted and key is not None:
        raise VolumeError(spec.id, "a key was given for an unencrypted volume", permanent=True)


def volume_alias(volume_id: str) -> str:
    """The libvirt user alias of a volume's disk: ``ua-vol-<volume_id>``."""
    check_volume_id(volume_id)
    return ALIAS_PREFIX + volume_id


def disk_xml(volume_id: str, path: Path, target_dev: str, secret_uuid: str | None = None) -> str:
    """The ``<disk>`` that attaches the qcow2 at ``path`` as virtio ``target_dev``.

    With ``secret_uuid`` the disk is LUKS-encrypted and QEMU gets its key from
    that libvirt passphrase secret.
    """
    if not TARGET_DEV.fullmatch(target_dev) or target_dev == "vda":
        raise VolumeError(volume_id, f"bad target device {target_dev!r}", permanent=True)
    disk = ET.Element("disk", {"type": "file", "device": "disk"})
    ET.SubElement(disk, "driver", {"name": "qemu", "type": "qcow2", "cache": "none"})
    source = ET.SubElement(disk, "source", {"file": str(path)})
    if secret_uuid is not None:
        enc = ET.SubElement(source, "encryption", {"format": "luks"})
        ET.SubElement(enc, "secret", {"type": "passphrase", "uuid": secret_uuid})
    ET.SubElement(disk, "target", {"dev": target_dev, "bus": "virtio"})
    # virtio-blk serials hold 20 characters; the alias keeps the whole id.
    ET.SubElement(disk, "serial").text = volume_id[:20]
    ET.SubElement(disk, "alias", {"name": volume_alias(volume_id)})
    return ET.tostring(disk, encoding="unicode")


def secret_xml(secret_uuid: str, path: Path, description: str) -> str:
    """A persistent, private libvirt passphrase secret used by the volume at ``path``."""
    secret = ET.Element("secret", {"ephemeral": "no", "private": "yes"})
    ET.SubElement(secret, "uuid").text = secret_uuid
    ET.SubElement(secret, "description").text = description
    usage = ET.SubElement(secret, "usage", {"type": "volume"})
    ET.SubElement(usage, "volume").text = str(path)
    return ET.tostring(secret, encoding="unicode")


class VolumeDriver(abc.ABC):
    """Creates, grows, copies and removes this site's block volumes.

    Contract shared by every implementation:

    * A driver only ever sees and touches volumes it made for this site;
      anything else in its store is invisible to every method here.
    * ``create`` makes the volume, copying ``spec.source`` into it when given.
      It succeeds when the volume exists already with the same size,
      encryption and key, is a permanent error when it exists differently, and
      leaves nothing behind when it fails.
    * An encrypted volume's file never holds plaintext; its ``key`` (bytes from
      central) is kept only where the site needs it to open the volume and is
      never logged nor put in an error.
    * ``delete`` removes the volume, its key and any hypervisor secret, and
      succeeds when any or all of them are already gone (it also clears
      leftovers of a create that crashed half-way).
    * ``extend`` only grows: the same size succeeds, a smaller one is a
      permanent error.
    * ``snapshot`` makes a full, independent copy volume ``snap_id`` (with the
      source's encryption and key); it succeeds when that copy exists.
    * ``list_owned`` and ``attachment`` work while a guest has the volume open.
    * ``disk_xml`` gives the libvirt ``<disk>`` that attaches the volume as
      ``target_dev`` and makes sure the hypervisor can open it (its secret).
    * Errors are :class:`VolumeError`; tool and hypervisor errors never escape.
    """

    @abc.abstractmethod
    def list_owned(self) -> dict[str, ObservedVolume]:
        """Volumes this site owns, by volume id."""

    @abc.abstractmethod
    def create(self, spec: VolumeSpec, key: bytes | None = None) -> ObservedVolume:
        """Make the volume (``key`` is required exactly when ``spec.encrypted``)."""

    @abc.abstractmethod
    def delete(self, volume_id: str) -> None:
        """Remove the volume and everything that belongs to it."""

    @abc.abstractmethod
    def extend(self, volume_id: str, size_gb: int) -> ObservedVolume:
        """Grow the volume to ``size_gb``."""

    @abc.abstractmethod
    def snapshot(self, volume_id: str, snap_id: str) -> ObservedVolume:
        """Copy the volume, as it is now, into a new volume ``snap_id``."""

    @abc.abstractmethod
    def disk_xml(self, volume_id: str, target_dev: str) -> str:
        """The ``<disk>`` element attaching the volume as ``target_dev``."""

    @abc.abstractmethod
    def attachment(self, volume_id: str) -> tuple[Path, str | None]:
        """The volume's file and, when encrypted, the UUID of the hypervisor secret
        that opens it (made or refreshed now)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
