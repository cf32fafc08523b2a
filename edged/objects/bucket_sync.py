"""A site's buckets follow its desired document's ``buckets`` section.

Each entry ``{"name", "project_id", "replicate_to_central", "peers": [site, ...]}``
is made or updated. A bucket the document no longer lists is removed when it
is empty; one still holding objects is never dropped silently: it is kept
*orphaned* (readable, its objects deletable, no new writes) and removed by a
later sync once empty. A malformed entry is logged and skipped, and keeps any
bucket of that name as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edged.objects import names
from edged.objects.errors import ObjectError
from edged.objects.store import Bucket, ObjectStore

log = logging.getLogger(__name__)


@dataclass
class BucketPlan:
    ensure: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)
    orphan: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)


def _entry(raw: Any) -> tuple[str, str, dict[str, Any]]:
    """(name, project, policy) of one section entry; ValueError when malformed."""
    if not isinstance(raw, Mapping):
        raise ValueError("entry is not an object")
    name, project = raw.get("name"), raw.get("project_id")
    try:
        names.bucket_name(name)  # type: ignore[arg-type]
    except ObjectError as exc:
        raise ValueError(exc.message) from None
    if not isinstance(project, str) or not project:
        raise ValueError(f"bucket {name!r} has no project_id")
    peers = raw.get("peers", [])
    to_central = raw.get("replicate_to_central", True)
    if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
        raise ValueError(f"bucket {name!r}: peers must be a list of site names")
    if not isinstance(to_central, bool):
        raise ValueError(f"bucket {name!r}: replicate_to_central must be a boolean")
    return name, project, {"replicate_to_central": to_central, "peers": sorted(peers)}  # type: ignore[return-value]


def plan(section: Any, held: list[Bucket], objects: Mapping[str, int]) -> BucketPlan:
    """What to do so the held buckets match ``section`` (``objects``: live count per bucket)."""
    out = BucketPlan()
    wanted: set[str] = set()
    for raw in section if isinstance(section, list) else []:
        try:
            name, project, policy = _entry(raw)
        except ValueError as exc:
            out.invalid.append(str(exc))
            if isinstance(raw, Mapping) and isinstance(raw.get("name"), str):
                wanted.add(raw["name"])  # keep whatever is held under that name
            continue
        wanted.add(name)
        current = next((b for b in held if b.name == name), None)
        if current is None or (current.project_id, current.policy, current.orphaned) != (
            project,
            policy,
            False,
        ):
            out.ensure[name] = (project, policy)
    for bucket in held:
        if bucket.name in wanted:
            continue
        if objects.get(bucket.name, 0) == 0:
            out.remove.append(bucket.name)
        elif not bucket.orphaned:
            out.orphan.append(bucket.name)
    return out


def sync_buckets(store: ObjectStore, section: Any) -> BucketPlan:
    """Apply :func:`plan` to ``store``; each step's failure is logged, the rest go on."""
    held = store.buckets()
    counts = {b.name: store.bucket_usage(b.name)["objects"] for b in held}
    todo = plan(section, held, counts)
    for problem in todo.invalid:
        log.error("buckets section: entry skipped: %s", problem)
    for name, (project, policy) in todo.ensure.items():
        store.ensure_bucket(project, name, policy)
        log.info("bucket %s (project %s) held as the document says", name, project)
    for name in todo.orphan:
        store.orphan_bucket(name)
        log.warning("bucket %s left the document but holds objects: kept, orphaned", name)
    for name in todo.remove:
        try:
            store.delete_bucket(name)
            log.info("bucket %s left the document and was empty: removed", name)
        except ObjectError as exc:  # an object arrived meanwhile: next sync orphans it
            log.warning("bucket %s not removed: %s", name, exc.message)
    return todo
