"""Pure reconcile logic: ``plan(desired, observed) -> actions``. No side effects here.

The plan is computed against what the hypervisor reports *now*, never against
the last document handled, so running it again after a crash at any point
converges to the same end: exactly the desired servers, in the desired power
state, and nothing else this site owns.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from edged.drivers.compute import ObservedServer, PowerState, ServerSpec

ActionKind = Literal["delete", "create", "start", "stop"]
# Deletions first (they free capacity), then creations, then power changes.
ORDER: dict[str, int] = {"delete": 0, "create": 1, "start": 2, "stop": 2}


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    server_id: str
    spec: ServerSpec | None = None


def specs_from_document(document: Mapping[str, Any] | None) -> list[ServerSpec]:
    """The servers a desired-state document asks for."""
    if not document:
        return []
    images = document.get("images")
    sha_of = {
        i.get("id"): i.get("sha256")
        for i in (images if isinstance(images, list) else [])
        if isinstance(i, dict) and isinstance(i.get("sha256"), str)
    }
    return [
        ServerSpec(
            id=s["id"],
            name=s["name"],
            vcpus=int(s["vcpus"]),
            ram_mb=int(s["ram_mb"]),
            disk_gb=int(s["disk_gb"]),
            image=s["image"],
            power=s.get("power", "running"),
            cpu_policy=s.get("cpu_policy", "shared"),
            mem_page_size=s.get("mem_page_size", "small"),
            numa_nodes=int(s.get("numa_nodes", 1)),
            numa_placement=tuple(int(n) for n in s.get("numa_placement") or ()),
            ports=tuple(s.get("ports") or ()),
            metadata=tuple(sorted((str(k), str(v)) for k, v in (s.get("metadata") or {}).items())),
            image_sha256=sha_of.get(s["image"], ""),
            boot_volume=str(s.get("boot_volume") or ""),
        )
        for s in document.get("servers", [])
    ]


@dataclass(frozen=True)
class PowerOverride:
    """A site operator's power choice for one server, made while central may be away.

    ``against`` is the document's power for the server at ``generation`` when
    the override was made; the override holds until central's document asks
    for another power (or drops the server).
    """

    server_id: str
    power: PowerState
    generation: int
    against: PowerState
    made_at: float = 0.0
    made_by: str = ""


def apply_overrides(
    specs: Iterable[ServerSpec], overrides: Iterable[PowerOverride], generation: int
) -> tuple[list[ServerSpec], list[str]]:
    """The effective desired specs, and the ids of overrides that no longer hold.

    An override is stale when its server left the document, or when a later
    generation asks for another power than the one it was made against: central
    has decided since, and central wins.
    """
    by_id = {o.server_id: o for o in overrides}
    effective: list[ServerSpec] = []
    stale: set[str] = set(by_id)
    for spec in specs:
        override = by_id.get(spec.id)
        if override is None:
            effective.append(spec)
            continue
        if generation > override.generation and spec.power != override.against:
            effective.append(spec)
            continue
        stale.discard(spec.id)
        effective.append(replace(spec, power=override.power))
    return effective, sorted(stale)


def plan(
    desired: Iterable[ServerSpec],
    observed: Mapping[str, ObservedServer],
    leftovers: Iterable[str] = (),
    failed_builds: Mapping[str, str] | None = None,
    unbootable: Collection[str] = (),
) -> list[Action]:
    """Actions that take ``observed`` to ``desired``.

    ``leftovers`` are server ids with files but no domain (a create that
    crashed half-way); ``failed_builds`` maps server id to the build hash whose
    creation failed permanently, which is not retried until the spec changes;
    ``unbootable`` are servers whose image is not in the cache and verified yet
    (or was refused): they are not created (an existing domain is kept).
    """
    failed_builds = failed_builds or {}
    wanted = {spec.id: spec for spec in desired}
    actions: list[Action] = []
    for server_id in sorted((set(observed) | set(leftovers)) - set(wanted)):
        actions.append(Action("delete", server_id))
    for server_id, spec in sorted(wanted.items()):
        have = observed.get(server_id)
        build = spec.build_hash()
        if have is not None and have.build_hash != build:
            actions.append(Action("delete", server_id))
            have = None
        if have is None:
            if failed_builds.get(server_id) != build and server_id not in unbootable:
                actions.append(Action("create", server_id, spec))
            continue
        if spec.power == "running" and have.state != "running":
            actions.append(Action("start", server_id, spec))
        elif spec.power == "stopped" and have.state in ("running", "paused"):
            actions.append(Action("stop", server_id, spec))
    actions.sort(key=lambda a: ORDER[a.kind])
    return actions


@dataclass(frozen=True)
class NicAction:
    kind: Literal["attach", "detach"]
    server_id: str
    port_id: str


def plan_nics(
    desired: Iterable[ServerSpec],
    observed: Mapping[str, ObservedServer],
    ready: Collection[str],
    rebuilding: Collection[str] = (),
) -> list[NicAction]:
    """Hot-plug actions that give existing servers exactly their desired NICs.

    ``ready`` are the port ids whose tap or VF is in place (only those can be
    attached); servers in ``rebuilding`` (deleted or created this pass) get
    their NICs with the new domain instead. Detaches come first.
    """
    detach: list[NicAction] = []
    attach: list[NicAction] = []
    for spec in sorted(desired, key=lambda s: s.id):
        have = observed.get(spec.id)
        if have is None or spec.id in rebuilding:
            continue
        wanted = set(spec.ports)
        complete = have.ports - have.half_plugged
        detach += [NicAction("detach", spec.id, p) for p in sorted(have.ports - wanted)]
        attach += [
            NicAction("attach", spec.id, p) for p in spec.ports if p not in complete and p in ready
        ]
    return detach + attach
