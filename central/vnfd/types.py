"""The SOL001 (v2.6.1 / v2.7.1) type names Skerry knows without reading the standard
type files, and the resolution of a package's own ``node_types`` / ``policy_types`` /
``group_types`` to them through ``derived_from``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from central.vnfd.errors import At, Problems
from central.vnfd.source_view import line_in
from central.vnfd.yamlmarks import Map

VNF = "tosca.nodes.nfv.VNF"
VDU = "tosca.nodes.nfv.Vdu.Compute"
BLOCK_STORAGE = "tosca.nodes.nfv.Vdu.VirtualBlockStorage"
VDU_CP = "tosca.nodes.nfv.VduCp"
VL = "tosca.nodes.nfv.VnfVirtualLink"
SUPPORTED_NODES = frozenset({VNF, VDU, BLOCK_STORAGE, VDU_CP, VL})

# Standard node types outside the subset: named in the "unsupported" error.
UNSUPPORTED_NODES = {
    "tosca.nodes.nfv.VnfExtCp": "node type tosca.nodes.nfv.VnfExtCp (an external CP on an "
    "internal VL; expose a VduCp through substitution_mappings instead)",
    "tosca.nodes.nfv.Cp": "node type tosca.nodes.nfv.Cp",
    "tosca.nodes.nfv.VipCp": "node type tosca.nodes.nfv.VipCp (virtual IP)",
    "tosca.nodes.nfv.Vdu.VirtualObjectStorage": "node type "
    "tosca.nodes.nfv.Vdu.VirtualObjectStorage",
    "tosca.nodes.nfv.Vdu.VirtualFileStorage": "node type tosca.nodes.nfv.Vdu.VirtualFileStorage",
    "tosca.nodes.nfv.Vdu.OsContainer": "node type tosca.nodes.nfv.Vdu.OsContainer (containers)",
    "tosca.nodes.nfv.Vdu.OsContainerDeployableUnit": "node type "
    "tosca.nodes.nfv.Vdu.OsContainerDeployableUnit (containers)",
    "tosca.nodes.nfv.Mciop": "node type tosca.nodes.nfv.Mciop (containers)",
}

SCALING_ASPECTS = "tosca.policies.nfv.ScalingAspects"
VDU_INITIAL_DELTA = "tosca.policies.nfv.VduInitialDelta"
VDU_SCALING_DELTAS = "tosca.policies.nfv.VduScalingAspectDeltas"
INSTANTIATION_LEVELS = "tosca.policies.nfv.InstantiationLevels"
VDU_INSTANTIATION_LEVELS = "tosca.policies.nfv.VduInstantiationLevels"
ANTI_AFFINITY = "tosca.policies.nfv.AntiAffinityRule"
SUPPORTED_POLICIES = frozenset(
    {
        SCALING_ASPECTS,
        VDU_INITIAL_DELTA,
        VDU_SCALING_DELTAS,
        INSTANTIATION_LEVELS,
        VDU_INSTANTIATION_LEVELS,
        ANTI_AFFINITY,
    }
)
# Bitrate policies of virtual links: read as informational and ignored (a site network
# has no bitrate guarantees); see docs/vnfd.md.
INFORMATIONAL_POLICIES = frozenset(
    {
        "tosca.policies.nfv.VirtualLinkInstantiationLevels",
        "tosca.policies.nfv.VirtualLinkBitrateInitialDelta",
        "tosca.policies.nfv.VirtualLinkBitrateScalingAspectDeltas",
    }
)
PLACEMENT_GROUP = "tosca.groups.nfv.PlacementGroup"

STANDARD_ROOTS = frozenset(
    {
        "tosca.nodes.Root",
        "tosca.policies.Root",
        "tosca.policies.Placement",
        "tosca.groups.Root",
        "tosca.nodes.nfv.Cp",
    }
)
KNOWN = (
    SUPPORTED_NODES
    | frozenset(UNSUPPORTED_NODES)
    | SUPPORTED_POLICIES
    | INFORMATIONAL_POLICIES
    | {PLACEMENT_GROUP}
)


@dataclass
class TypeTable:
    """A package's own types: name -> (derived_from, its definition, where)."""

    defs: dict[str, tuple[str, Map, At]] = field(default_factory=dict)

    def add_file(self, name: str, doc: Any, problems: Problems) -> None:
        if not isinstance(doc, dict):
            return
        for section in ("node_types", "policy_types", "group_types"):
            types = doc.get(section)
            if types is None:
                continue
            sat = At(name, section, line_in(doc, section))
            if not isinstance(types, dict):
                problems.error(sat, "expected a mapping of type names to definitions")
                continue
            for tname, tdef in types.items():
                at = sat.key(tname, line_in(types, tname))
                if not isinstance(tdef, Map):
                    problems.error(at, "expected a type definition (a mapping)")
                    continue
                parent = tdef.get("derived_from")
                if not isinstance(parent, str):
                    problems.error(
                        at.key("derived_from", line_in(tdef, "derived_from")),
                        "expected the name of the type this one derives from",
                    )
                    continue
                if tname in KNOWN:
                    continue  # a package's copy of a standard type: the built-in wins
                self.defs.setdefault(tname, (parent, tdef, at))

    def base(self, name: str) -> str | None:
        """The standard type ``name`` is or derives from (None: none we know)."""
        seen: set[str] = set()
        while name not in KNOWN and name not in STANDARD_ROOTS:
            if name in seen or name not in self.defs:
                return None
            seen.add(name)
            name = self.defs[name][0]
        return name if name in KNOWN else None

    def chain(self, name: str) -> list[Map]:
        """The package's own definitions from ``name`` up to the first standard type."""
        out: list[Map] = []
        seen: set[str] = set()
        while name in self.defs and name not in seen:
            seen.add(name)
            parent, tdef, _ = self.defs[name]
            out.append(tdef)
            name = parent
        return out

    def property_default(self, type_name: str, prop: str) -> Any:
        """``default`` of a property declared by a package type (nearest first)."""
        for tdef in self.chain(type_name):
            props = tdef.get("properties")
            entry = props.get(prop) if isinstance(props, dict) else None
            if isinstance(entry, dict) and "default" in entry:
                return entry["default"]
        return None
