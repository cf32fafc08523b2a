"""The validated descriptor: what the lifecycle turns into servers, ports, networks and
volumes. Built only from a descriptor that checked clean, so every cross-reference in it
resolves (a CP's ``vdu`` is a key of ``Flavour.vdus``, an aspect's deltas name VDUs of
the flavour, …). Names are the node template names of the descriptor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

VnicType = Literal["normal", "direct"]
CpuPolicy = Literal["shared", "dedicated"]
MemPageSize = Literal["small", "2MB", "1GB"]
AffinityScope = Literal["nfvi_node", "zone", "zone_group", "nfvi_pop"]


@dataclass(frozen=True)
class SwImage:
    """``sw_image_data`` (+ the ``sw_image`` artifact's file, if the node has one)."""

    name: str  # the image the server boots: a central image of that name
    version: str | None
    disk_format: str  # qcow2 | raw | …, as declared
    container_format: str | None
    checksum_algorithm: str | None
    checksum: str | None
    min_disk_gb: int  # rounded up
    min_ram_mb: int  # rounded up; 0 when not given
    size_bytes: int | None
    file: str | None  # the artifact's path inside the package (it need not be shipped)


@dataclass(frozen=True)
class BlockStorage:
    """``tosca.nodes.nfv.Vdu.VirtualBlockStorage``: one volume per VDU instance."""

    name: str
    size_gb: int  # rounded up
    image: SwImage | None  # the volume is made from this image


@dataclass(frozen=True)
class Vdu:
    """``tosca.nodes.nfv.Vdu.Compute``: one server per instance, all with this flavor."""

    name: str  # node template name (the key everything refers to)
    display_name: str  # properties.name
    description: str
    min_instances: int
    max_instances: int
    vcpus: int
    ram_mb: int  # rounded up
    disk_gb: int  # root disk, rounded up (virtual_local_storage[0], else min_disk, else 1)
    cpu_policy: CpuPolicy
    mem_page_size: MemPageSize
    numa_nodes: int
    image: SwImage | None  # None: boots from ``boot_storage``
    storages: tuple[str, ...]  # BlockStorage names, in requirement order
    boot_storage: str | None  # the storage with an image it boots from, when image is None

    def flavor(self) -> dict[str, int | str]:
        """The ``flavor`` body of ``POST /v1/servers``."""
        return {
            "vcpus": self.vcpus,
            "ram_mb": self.ram_mb,
            "disk_gb": self.disk_gb,
            "cpu_policy": self.cpu_policy,
            "mem_page_size": self.mem_page_size,
            "numa_nodes": self.numa_nodes,
        }


@dataclass(frozen=True)
class VduCp:
    """``tosca.nodes.nfv.VduCp``: one port per VDU instance. Exactly one of
    ``virtual_link`` (an internal VL of the flavour) and ``external`` (the
    substitution_mappings requirement it is exposed as, mapped to a site network at
    instantiate) is set."""

    name: str
    vdu: str
    virtual_link: str | None
    external: str | None
    vnic_type: VnicType  # the port's vnic_type (central's)
    sol_vnic_type: str  # as written in the descriptor
    order: int | None  # NIC order on the VDU; see Flavour.cps_of


@dataclass(frozen=True)
class VirtualLink:
    """``tosca.nodes.nfv.VnfVirtualLink``: a tenant network (+ one subnet) per instance."""

    name: str
    description: str
    ip_version: int  # 4 or 6
    cidr: str | None  # None: the lifecycle picks one
    gateway_ip: str | None
    allocation_pools: tuple[tuple[str, str], ...]
    network_type: Literal["vxlan", "vlan"] | None
    mtu: int | None


@dataclass(frozen=True)
class ScalingAspect:
    """An aspect of ``ScalingAspects`` with its ``VduScalingAspectDeltas`` resolved:
    ``step_deltas[i]`` is the delta id of step i+1 (one entry: uniform steps),
    ``deltas[delta_id][vdu]`` the instances that step adds to the VDU."""

    id: str
    name: str
    description: str
    max_scale_level: int
    step_deltas: tuple[str, ...]
    deltas: dict[str, dict[str, int]]

    def delta_of_step(self, step: int) -> str:
        """The delta id used when going from level ``step-1`` to ``step`` (1-based)."""
        return self.step_deltas[0] if len(self.step_deltas) == 1 else self.step_deltas[step - 1]

    def instances_added(self, vdu: str, from_level: int, to_level: int) -> int:
        """Instances of ``vdu`` added going up from one level to a higher one."""
        if len(self.step_deltas) == 1:  # uniform steps
            per_step = self.deltas.get(self.step_deltas[0], {}).get(vdu, 0)
            return per_step * max(0, to_level - from_level)
        return sum(
            self.deltas.get(self.delta_of_step(s), {}).get(vdu, 0)
            for s in range(from_level + 1, to_level + 1)
        )


@dataclass(frozen=True)
class InstantiationLevel:
    """A level of ``InstantiationLevels`` with the ``VduInstantiationLevels`` of it."""

    id: str
    description: str
    scale_levels: dict[str, int]  # aspect id -> scale level
    vdu_instances: dict[str, int]  # vdu -> number_of_instances (only VDUs that name it)


@dataclass(frozen=True)
class AntiAffinityRule:
    """``AntiAffinityRule``: instances of ``vdus`` never share a ``scope``."""

    name: str
    vdus: tuple[str, ...]  # targets, with PlacementGroups expanded to their members
    scope: AffinityScope


@dataclass
class Flavour:
    """One deployment flavour (a topology with ``substitution_mappings.flavour_id``)."""

    id: str
    description: str
    file: str  # the package file it is defined in
    vdus: dict[str, Vdu] = field(default_factory=dict)
    cps: dict[str, VduCp] = field(default_factory=dict)
    vls: dict[str, VirtualLink] = field(default_factory=dict)
    storages: dict[str, BlockStorage] = field(default_factory=dict)
    aspects: dict[str, ScalingAspect] = field(default_factory=dict)
    levels: dict[str, InstantiationLevel] = field(default_factory=dict)
    default_level: str | None = None  # the declared one, else the first level, else None
    initial_deltas: dict[str, int] = field(default_factory=dict)  # vdu -> VduInitialDelta
    anti_affinity: list[AntiAffinityRule] = field(default_factory=list)

    @property
    def external_links(self) -> dict[str, list[str]]:
        """Requirement name -> the CPs exposed on it (to map to site networks)."""
        out: dict[str, list[str]] = {}
        for cp in self.cps.values():
            if cp.external is not None:
                out.setdefault(cp.external, []).append(cp.name)
        return out

    def cps_of(self, vdu: str) -> list[VduCp]:
        """A VDU's CPs in NIC order: by ``order`` (unset last), then by name."""
        cps = [cp for cp in self.cps.values() if cp.vdu == vdu]
        return sorted(cps, key=lambda c: (c.order is None, c.order or 0, c.name))

    def instances(self, vdu: str, level: str | None = None) -> int:
        """Instances of ``vdu`` at an instantiation level (default: the default level):
        its VduInstantiationLevels entry, else its initial delta plus the deltas of the
        level's scale levels, else its initial delta, else min_instances."""
        level_id = level if level is not None else self.default_level
        lvl = self.levels.get(level_id) if level_id is not None else None
        if lvl is not None and vdu in lvl.vdu_instances:
            return lvl.vdu_instances[vdu]
        base = self.initial_deltas.get(vdu, self.vdus[vdu].min_instances)
        if lvl is None:
            return base
        return base + sum(
            self.aspects[a].instances_added(vdu, 0, n)
            for a, n in lvl.scale_levels.items()
            if a in self.aspects
        )


@dataclass
class Vnfd:
    """A whole VNF descriptor: the VNF's identity and its deployment flavours."""

    id: str  # descriptor_id
    provider: str
    product_name: str
    software_version: str
    descriptor_version: str
    vnfm_info: list[str]
    entry: str  # the top-level file inside the package
    flavours: dict[str, Flavour] = field(default_factory=dict)
