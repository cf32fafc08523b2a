"""Pure volume planning: ``plan_volumes(desired, observed) -> actions``. No side effects here.

The plan is computed against what the volume store and the hypervisor report
now, so running it again after a crash at any point converges: exactly the
desired volumes and snapshots, grown to their size, attached where the
document says, and nothing else this site owns.

Ordering rules, each action in the list before those that depend on it:

* ``detach`` before ``delete``: a volume still in some domain (live or
  persistent) is not deleted this pass; it is detached and deleted once gone.
* A volume attached to a server that is going (not desired, or rebuilt) is not
  detached here: the server's removal detaches it.
* ``create`` before ``extend``/``snapshot``/``attach``: those need the volume
  observed, so they come in a later plan (the executor plans again after its
  creates). A volume copied from a snapshot waits until that snapshot exists.
* A volume's root-disk use (``boot``) is never hot-plugged: the server is
  created with it, and it goes with the server.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from edged.drivers.volume import ObservedVolume
from edged.sealed import SealError

# (sealed key, volume id) -> the key; SealError when it does not open.
KeyOpener = Callable[[str, str], bytes]

VolumeActionKind = Literal["detach", "delete", "create", "extend", "snapshot", "attach"]
ORDER: dict[str, int] = {
    "detach": 0,
    "delete": 1,
    "create": 2,
    "extend": 3,
    "snapshot": 4,
    "attach": 5,
}


@dataclass(frozen=True)
class VolumeDesired:
    """One volume as the document describes it (``key`` opened; never logged)."""

    id: str
    size_gb: int
    encrypted: bool = False
    key: bytes | None = None
    attached_to: str | None = None
    boot: bool = False
    source_snapshot: str | None = None
    source_image: str | None = None
    snapshots: tuple[str, ...] = ()

    def build_hash(self) -> str:
        """What a permanent create failure is remembered against (not the key)."""
        blob = json.dumps(
            [self.size_gb, self.encrypted, self.source_snapshot, self.source_image],
        ).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class VolumeAction:
    kind: VolumeActionKind
    volume_id: str
    server_id: str = ""  # detach, attach
    snapshot_id: str = ""  # snapshot: the copy made


@dataclass(frozen=True)
class VolumesDesired:
    """The document's volumes section, and what of it could not be read."""

    volumes: dict[str, VolumeDesired]
    # Entries that could not be read: id -> reason (kept, never deleted for it).
    unreadable: dict[str, str]

    @property
    def snapshots(self) -> dict[str, str]:
        """Desired snapshot id -> its volume id."""
        return {s: v.id for v in self.volumes.values() for s in v.snapshots}

    def keep(self) -> set[str]:
        """Every id the volume store must keep."""
        return set(self.volumes) | set(self.snapshots) | set(self.unreadable)


def _entry(raw: Any, open_key: KeyOpener | None) -> VolumeDesired:
    if not isinstance(raw, Mapping):
        raise ValueError("not an object")
    size = raw.get("size_gb")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"bad size_gb {size!r}")
    encrypted = raw.get("encrypted", False) is True
    key = None
    if encrypted:
        sealed = raw.get("key_sealed")
        if not isinstance(sealed, str) or not sealed:
            raise ValueError("an encrypted volume without a key sealed to this site")
        if open_key is None:
            raise ValueError("this site has no key to open volume keys with")
        try:
            key = open_key(sealed, str(raw["id"]))
        except SealError as exc:
            raise ValueError(str(exc)) from None
    source = raw.get("source") or {}
    if not isinstance(source, Mapping):
        raise ValueError("bad source")
    snaps = raw.get("snapshots") or []
    if not isinstance(snaps, list) or not all(isinstance(s, str) for s in snaps):
        raise ValueError("bad snapshots")
    attached = raw.get("attached_to")
    return VolumeDesired(
        id=str(raw["id"]),
        size_gb=size,
        encrypted=encrypted,
        key=key,
        attached_to=attached if isinstance(attached, str) and attached else None,
        boot=raw.get("boot_index") == 0 and isinstance(attached, str),
        source_snapshot=str(source["snapshot_id"]) if source.get("snapshot_id") else None,
        source_image=str(source["image_id"]) if source.get("image_id") else None,
        snapshots=tuple(snaps),
    )


def volumes_from_document(
    document: Mapping[str, Any] | None, open_key: KeyOpener | None = None
) -> VolumesDesired:
    """The volumes a document asks for, their keys opened with ``open_key``; an
    unreadable entry (or a key that does not open) is set aside, not dropped."""
    volumes: dict[str, VolumeDesired] = {}
    unreadable: dict[str, str] = {}
    for raw in (document or {}).get("volumes") or []:
        volume_id = str(raw.get("id", "")) if isinstance(raw, Mapping) else ""
        try:
            entry = _entry(raw, open_key)
        except (KeyError, ValueError, TypeError) as exc:
            if volume_id:
                unreadable[volume_id] = f"unreadable volume entry: {exc}"
            continue
        volumes[entry.id] = entry
    return VolumesDesired(volumes, unreadable)


def plan_volumes(
    desired: VolumesDesired,
    observed: Mapping[str, ObservedVolume],
    attached: Mapping[str, Collection[str]],
    servers: Collection[str],
    going: Collection[str] = (),
    failed: Mapping[str, str] | None = None,
) -> list[VolumeAction]:
    """Actions that take the site's volumes to ``desired``.

    ``attached``: observed server id -> volume ids in its domain (either
    definition); ``servers``: desired server ids whose domain exists and stays;
    ``going``: servers being deleted or rebuilt this pass; ``failed``: volume
    id -> build hash whose create failed permanently (not retried).
    """
    failed = failed or {}
    # Servers whose domain goes this pass (deleted, rebuilt, or not desired).
    going = set(going) | (set(attached) - set(servers))
    actions: list[VolumeAction] = []
    where: dict[str, set[str]] = {}
    for server_id, vols in attached.items():
        for vid in vols:
            where.setdefault(vid, set()).add(server_id)
    keep = desired.keep()
    wanted = desired.volumes
    for vid, servers_of in sorted(where.items()):
        want = wanted.get(vid)
        for server_id in sorted(servers_of):
            if server_id in going:
                continue  # the server's removal detaches it
            if want is not None and want.attached_to == server_id:
                continue
            actions.append(VolumeAction("detach", vid, server_id=server_id))
    for vid in sorted(set(observed) - keep):
        if not (where.get(vid, set()) - going):
            actions.append(VolumeAction("delete", vid))
    snapshots = desired.snapshots
    for vid, want in sorted(wanted.items()):
        have = observed.get(vid)
        if have is None:
            if failed.get(vid) == want.build_hash():
                continue
            if want.source_snapshot is None or want.source_snapshot in observed:
                actions.append(VolumeAction("create", vid))
            continue
        in_use = bool(where.get(vid, set()) - going)
        if have.size_gb < want.size_gb and not in_use:
            actions.append(VolumeAction("extend", vid))
        for snap_id in want.snapshots:
            if snap_id not in observed and not in_use and snapshots.get(snap_id) == vid:
                actions.append(VolumeAction("snapshot", vid, snapshot_id=snap_id))
        server_id = want.attached_to
        if (
            server_id is not None
            and not want.boot
            and server_id in servers
            and server_id not in going
            and server_id not in where.get(vid, set())
            and not (where.get(vid, set()) - going)
        ):
            actions.append(VolumeAction("attach", vid, server_id=server_id))
    actions.sort(key=lambda a: ORDER[a.kind])
    return actions


def waiting_reason(want: VolumeDesired, observed: Mapping[str, ObservedVolume]) -> str:
    """Why a desired volume that does not exist yet is not being created ('' if it is)."""
    if want.source_snapshot is not None and want.source_snapshot not in observed:
        return f"snapshot {want.source_snapshot} is not at this site yet"
    return ""
