"""What an operation makes, decided without side effects: a descriptor's flavour at an
instantiation level, at one site, with its external links mapped, becomes resource
intents (networks with a subnet, and servers with their ports and volumes) the executor
(:mod:`central.lcm.resources`) records. Nothing here reads the store."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from central.vnfd import Flavour, Vnfd

MAX_NAME = 63


class PlanError(Exception):
    """The request does not fit the descriptor: ``field`` of the request, and why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class NetworkIntent:
    """An internal virtual link: a tenant network and one subnet."""

    vl: str
    name: str
    cidr: str
    gateway: str | None
    pools: tuple[tuple[str, str], ...]
    segmentation: str  # vxlan | vlan
    mtu: int | None


@dataclass(frozen=True)
class PortIntent:
    """A VDU instance's connection point: on an internal VL's network, or on the site
    network an external link is mapped to."""

    cp: str
    name: str
    vl: str | None
    network_id: str | None  # set for an external CP
    vnic_type: str


@dataclass(frozen=True)
class VolumeIntent:
    """A block storage of a VDU instance (its root disk when ``boot``)."""

    storage: str
    name: str
    size_gb: int
    image: str | None  # central image name
    boot: bool


@dataclass(frozen=True)
class ServerIntent:
    """One VDU instance."""

    vdu: str
    index: int
    name: str
    flavor: dict[str, Any]
    image: str  # central image name (of the VDU, else of its boot storage)
    ports: tuple[PortIntent, ...]
    volumes: tuple[VolumeIntent, ...]
    metadata: dict[str, str]


@dataclass(frozen=True)
class Plan:
    site: str
    networks: tuple[NetworkIntent, ...]
    servers: tuple[ServerIntent, ...]
    warnings: tuple[str, ...] = field(default=())


def resource_name(*parts: str) -> str:
    """A server/network/volume name (A-Z a-z 0-9 '-', at most 63) from descriptor names."""
    text = re.sub(r"[^A-Za-z0-9-]+", "-", "-".join(parts)).strip("-") or "vnf"
    return text[:MAX_NAME].rstrip("-")


def map_external(flavour: Flavour, ext_links: list[dict[str, Any]]) -> dict[str, str]:
    """External CP name -> site network id, from ``extVirtualLinks``
    (``[{id, resourceId, extCps: [{cpdId}]}]``; a cpdId is the flavour's external link
    (substitution requirement) or one of the VduCps exposed on it). Every external CP must
    be mapped, once."""
    exposed = flavour.external_links
    mapped: dict[str, str] = {}
    for i, link in enumerate(ext_links):
        where = f"extVirtualLinks[{i}]"
        for j, ext_cp in enumerate(link.get("extCps") or []):
            cpd = ext_cp.get("cpdId")
            cps = exposed.get(cpd) or ([cpd] if cpd in flavour.cps else None)
            if not cps or flavour.cps[cps[0]].external is None:
                known = ", ".join(sorted(exposed)) or "none"
                raise PlanError(
                    f"{where}.extCps[{j}].cpdId",
                    f"{cpd!r} is not an external CP of flavour {flavour.id!r} (it has: {known})",
                )
            for cp in cps:
                if cp in mapped:
                    raise PlanError(f"{where}.extCps[{j}].cpdId", f"CP {cp!r} is mapped twice")
                mapped[cp] = link["resourceId"]
    for requirement, cps in sorted(exposed.items()):
        missing = [cp for cp in cps if cp not in mapped]
        if missing:
            raise PlanError(
                "extVirtualLinks",
                f"external CP {requirement!r} ({', '.join(missing)}) is not mapped to a network",
            )
    return mapped


def _cidrs(flavour: Flavour) -> dict[str, str]:
    """Each VL's CIDR: its own, else a /24 (IPv4) or /64 (IPv6) none of the others uses."""
    taken = [ipaddress.ip_network(vl.cidr, strict=False) for vl in flavour.vls.values() if vl.cidr]
    out: dict[str, str] = {}
    for name in sorted(flavour.vls):
        vl = flavour.vls[name]
        if vl.cidr:
            out[name] = vl.cidr
            continue
        k = 0
        while True:
            net = ipaddress.ip_network(
                f"10.250.{k}.0/24" if vl.ip_version == 4 else f"fd00:5e:{k:x}::/64"
            )
            k += 1
            if not any(net.overlaps(t) for t in taken if t.version == net.version):
                break
        taken.append(net)
        out[name] = str(net)
    return out


def _anti_affinity(flavour: Flavour, counts: dict[str, int], site: str) -> list[str]:
    """What the flavour's anti-affinity rules ask that one site with one host cannot give."""
    warnings = []
    for rule in flavour.anti_affinity:
        n = sum(counts.get(v, 0) for v in rule.vdus)
        if n > 1:
            warnings.append(
                f"anti-affinity rule {rule.name!r} (scope {rule.scope}) not honoured: "
                f"{n} instances of {', '.join(rule.vdus)} share site {site!r}, which has one host"
            )
    return warnings


def plan_instantiate(
    vnfd: Vnfd,
    flavour_id: str,
    level_id: str | None,
    site: str,
    ext_links: list[dict[str, Any]],
    instance_id: str,
    instance_name: str,
) -> Plan:
    """The resources of an instantiation (PlanError naming the request field when the
    request does not fit the descriptor)."""
    flavour = vnfd.flavours.get(flavour_id)
    if flavour is None:
        known = ", ".join(sorted(vnfd.flavours))
        raise PlanError("flavourId", f"flavour {flavour_id!r} is not in the VNFD (it has: {known})")
    if level_id is not None and level_id not in flavour.levels:
        known = ", ".join(sorted(flavour.levels)) or "none"
        raise PlanError(
            "instantiationLevelId",
            f"level {level_id!r} is not in flavour {flavour_id!r} (it has: {known})",
        )
    external = map_external(flavour, ext_links)
    cidrs = _cidrs(flavour)
    prefix = resource_name(instance_name)
    networks = tuple(
        NetworkIntent(
            vl=name,
            name=resource_name(prefix, name),
            cidr=cidrs[name],
            gateway=vl.gateway_ip,
            pools=vl.allocation_pools,
            segmentation=vl.network_type or "vxlan",
            mtu=vl.mtu,
        )
        for name, vl in sorted(flavour.vls.items())
    )
    counts = {vdu: flavour.instances(vdu, level_id) for vdu in flavour.vdus}
    servers = []
    for vdu_name in flavour.vdus:
        for index in range(counts[vdu_name]):
            servers.append(_server(flavour, vdu_name, index, prefix, external, instance_id))
    warnings = _anti_affinity(flavour, counts, site)
    return Plan(site=site, networks=networks, servers=tuple(servers), warnings=tuple(warnings))


def initial_scale_status(flavour: Flavour, level_id: str | None) -> dict[str, int]:
    """Aspect id -> scale level right after instantiation at ``level_id``."""
    lvl = flavour.levels.get(level_id or flavour.default_level or "")
    given = lvl.scale_levels if lvl is not None else {}
    return {aspect: given.get(aspect, 0) for aspect in sorted(flavour.aspects)}


def scale_target(flavour: Flavour, aspect_id: str, current: int, kind: str, steps: int) -> int:
    """The aspect's scale level after ``steps`` of ``kind`` (SCALE_OUT / SCALE_IN) from
    ``current``; PlanError naming the field when it leaves 0..max_scale_level."""
    aspect = flavour.aspects.get(aspect_id)
    if aspect is None:
        known = ", ".join(sorted(flavour.aspects)) or "none"
        raise PlanError("aspectId", f"aspect {aspect_id!r} is not in flavour {flavour.id!r} "
                        f"(it has: {known})")  # fmt: skip
    target = current + steps if kind == "SCALE_OUT" else current - steps
    if not 0 <= target <= aspect.max_scale_level:
        raise PlanError(
            "numberOfSteps",
            f"aspect {aspect_id!r} is at level {current}; {kind} by {steps} would reach "
            f"{target}, outside 0..{aspect.max_scale_level}",
        )
    return target


def plan_scale_out(
    vnfd: Vnfd,
    flavour_id: str,
    aspect_id: str,
    levels: tuple[int, int],
    existing: dict[str, list[int]],
    site: str,
    ext_links: list[dict[str, Any]],
    instance_id: str,
    instance_name: str,
) -> Plan:
    """The servers a scale-out from ``levels[0]`` to ``levels[1]`` adds (on the instance's
    existing VL networks); ``existing``: VDU -> the indices of its servers now."""
    flavour = vnfd.flavours[flavour_id]
    aspect = flavour.aspects[aspect_id]
    external = map_external(flavour, ext_links)
    prefix = resource_name(instance_name)
    servers = []
    counts = {vdu: len(existing.get(vdu, [])) for vdu in flavour.vdus}
    for vdu_name in flavour.vdus:
        added = aspect.instances_added(vdu_name, *levels)
        first = max(existing.get(vdu_name, []), default=-1) + 1
        for index in range(first, first + added):
            servers.append(_server(flavour, vdu_name, index, prefix, external, instance_id))
        counts[vdu_name] += added
    warnings = _anti_affinity(flavour, counts, site)
    return Plan(site=site, networks=(), servers=tuple(servers), warnings=tuple(warnings))


def plan_scale_in(
    flavour: Flavour, aspect_id: str, levels: tuple[int, int], existing: dict[str, list[int]]
) -> dict[str, list[int]]:
    """VDU -> the indices of the servers a scale-in from ``levels[0]`` down to
    ``levels[1]`` removes: the newest (highest index) first."""
    aspect = flavour.aspects[aspect_id]
    out = {}
    for vdu_name in flavour.vdus:
        removed = aspect.instances_added(vdu_name, levels[1], levels[0])
        if removed:
            out[vdu_name] = sorted(existing.get(vdu_name, []))[-removed:]
    return out


def _server(
    flavour: Flavour,
    vdu_name: str,
    index: int,
    prefix: str,
    external: dict[str, str],
    instance_id: str,
) -> ServerIntent:
    vdu = flavour.vdus[vdu_name]
    name = resource_name(prefix, vdu_name, str(index))
    ports = tuple(
        PortIntent(
            cp=cp.name,
            name=resource_name(name, cp.name),
            vl=cp.virtual_link,
            network_id=external.get(cp.name) if cp.external is not None else None,
            vnic_type=cp.vnic_type,
        )
        for cp in flavour.cps_of(vdu_name)
    )
    volumes = []
    for storage_name in vdu.storages:
        storage = flavour.storages[storage_name]
        volumes.append(
            VolumeIntent(
                storage=storage_name,
                name=resource_name(name, storage_name),
                size_gb=storage.size_gb,
                image=storage.image.name if storage.image else None,
                boot=storage_name == vdu.boot_storage,
            )
        )
    image = vdu.image.name if vdu.image else next(v.image for v in volumes if v.boot)
    assert image is not None  # a checked VDU has an image or a boot storage with one
    return ServerIntent(
        vdu=vdu_name,
        index=index,
        name=name,
        flavor=vdu.flavor(),
        image=image,
        ports=ports,
        volumes=tuple(volumes),
        metadata={"vnf_instance": instance_id, "vdu": vdu_name},
    )
