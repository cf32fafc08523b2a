"""A package's files to a ``Vnfd``: the VNF's identity, one ``Flavour`` per topology
with ``substitution_mappings.flavour_id`` (or the top file's own topology when it has no
flavour files), cross-references checked. Every problem is collected."""

from __future__ import annotations

from typing import Any

from central.vnfd import types as t
from central.vnfd.errors import At, Problems
from central.vnfd.model import Flavour, Vdu, VduCp, Vnfd
from central.vnfd.nodes import NodeReader, Topology, VnfNode
from central.vnfd.package import SourceFile
from central.vnfd.policies import PolicyReader
from central.vnfd.reader import function_name
from central.vnfd.source_view import kind, line_in
from central.vnfd.yamlmarks import Map

VERSIONS = (
    "tosca_simple_yaml_1_0",
    "tosca_simple_yaml_1_1",
    "tosca_simple_yaml_1_2",
    "tosca_simple_yaml_1_3",
)
FILE_KEYS = (
    "tosca_definitions_version",
    "imports",
    "topology_template",
    "node_types",
    "policy_types",
    "group_types",
)
FILE_INFO = (
    "description",
    "metadata",
    "dsl_definitions",
    "data_types",
    "capability_types",
    "relationship_types",
    "interface_types",
    "artifact_types",
)
TOPOLOGY_KEYS = ("substitution_mappings", "node_templates", "groups", "policies")
TOPOLOGY_INFO = ("description", "inputs", "outputs")
IDENTITY = ("descriptor_id", "provider", "product_name", "software_version", "descriptor_version")


def build(files: list[SourceFile], entry: str, problems: Problems) -> Vnfd | None:
    r = NodeReader(problems, t.TypeTable())
    for f in files:
        r.types.add_file(f.name, f.doc, problems)
    flavours: list[tuple[Flavour, Topology, Map]] = []
    entry_topo: Topology | None = None
    vnf_nodes: list[VnfNode] = []
    for f in files:
        at = At(f.name)
        doc = r.mapping(f.doc, at, "a TOSCA service template (a mapping)")
        if doc is None:
            continue
        r.only_keys(doc, at, FILE_KEYS, FILE_INFO, "top-level key")
        version = r.string(doc, "tosca_definitions_version", at, required=True)
        if version is not None and version not in VERSIONS:
            r.error(
                at.key("tosca_definitions_version", line_in(doc, "tosca_definitions_version")),
                f"expected one of {', '.join(VERSIONS)}, got {version!r}",
            )
        tt, tat = r.get_map(doc, "topology_template", at)
        if tt is None:
            continue
        r.only_keys(tt, tat, TOPOLOGY_KEYS, TOPOLOGY_INFO, "topology_template key")
        templates, nat = r.get_map(tt, "node_templates", tat)
        topo = r.topology(templates, nat) if templates is not None else Topology()
        if topo.vnf is not None:
            vnf_nodes.append(topo.vnf)
        subst, sat = r.get_map(tt, "substitution_mappings", tat)
        if subst is not None:
            flavour = flavour_of(r, subst, sat, f.name, tt.get("description"))
            if flavour is not None:
                flavours.append((flavour, topo, tt))
        elif f.name == entry:
            entry_topo = topo
            for key in ("groups", "policies"):
                if tt.get(key) not in (None, [], {}):
                    r.unsupported(
                        tat.key(key, line_in(tt, key)),
                        f"{key} outside a deployment flavour (no substitution_mappings)",
                    )
            if topo.vdus or topo.cps or topo.vls or topo.storages:
                fid = topo.vnf.props.get("flavour_id") if topo.vnf else None
                if not isinstance(fid, str):
                    r.error(
                        tat,
                        "node templates without substitution_mappings: expected the "
                        "VNF node's flavour_id to name the flavour",
                    )
                else:
                    flavours.append((Flavour(fid, "", f.name), topo, tt))
        elif topo.kinds:
            r.error(
                tat,
                "a topology in an imported file: expected substitution_mappings with "
                "properties.flavour_id",
            )
    seen: dict[str, str] = {}
    for flavour, _, _ in flavours:
        if flavour.id in seen:
            r.error(
                At(flavour.file, "topology_template.substitution_mappings.properties.flavour_id"),
                f"flavour {flavour.id!r} is also defined in {seen[flavour.id]}",
            )
        seen.setdefault(flavour.id, flavour.file)
    if not flavours and not problems:
        r.error(
            At(entry, "topology_template"),
            "no deployment flavour: expected a topology_template with "
            "substitution_mappings.properties.flavour_id and node templates",
        )
    vnfd = identity(r, entry, entry_topo, vnf_nodes, flavours)
    for flavour, topo, tt in flavours:
        fill_flavour(r, flavour, topo, tt, At(flavour.file, "topology_template"))
    for flavour, topo, _ in flavours:
        if not topo.kinds.keys() - {n for n, k in topo.kinds.items() if k == t.VNF}:
            r.error(
                At(flavour.file, "topology_template.node_templates"),
                f"flavour {flavour.id!r} has no Vdu.Compute: expected at least one",
            )
    if problems or vnfd is None:
        return None
    vnfd.flavours = {f.id: f for f, _, _ in flavours}
    return vnfd


def flavour_of(r: NodeReader, subst: Map, at: At, file: str, description: Any) -> Flavour | None:
    r.only_keys(
        subst,
        at,
        ("node_type", "properties", "requirements"),
        ("attributes",),
        "substitution_mappings key",
    )
    node_type = r.string(subst, "node_type", at, required=True)
    if node_type is not None and r.types.base(node_type) != t.VNF:
        r.error(
            at.key("node_type", line_in(subst, "node_type")),
            f"expected a node type derived from tosca.nodes.nfv.VNF, got {node_type!r}",
        )
    props, pat = r.get_map(subst, "properties", at, required=True)
    if props is None:
        return None
    fid = r.string(props, "flavour_id", pat, required=True)
    if fid is None:
        return None
    text = props.get("flavour_description")
    desc = text if isinstance(text, str) else description if isinstance(description, str) else ""
    return Flavour(fid, desc, file)


def identity(
    r: NodeReader,
    entry: str,
    entry_topo: Topology | None,
    vnf_nodes: list[VnfNode],
    flavours: list[tuple[Flavour, Topology, Map]],
) -> Vnfd | None:
    """descriptor_id, provider, … from the top file's VNF node, else the VNF type's
    defaults, else a flavour file's VNF node."""
    ordered = ([entry_topo.vnf] if entry_topo and entry_topo.vnf else []) + vnf_nodes
    type_name = ordered[0].type if ordered else None
    values: dict[str, Any] = {}
    for key in (*IDENTITY, "vnfm_info"):
        for node in ordered:
            if key in node.props:
                values[key] = node.props[key]
                break
        else:
            if type_name is not None:
                default = r.types.property_default(type_name, key)
                if default is not None:
                    values[key] = default
    where = (
        ordered[0].at.key("properties")
        if ordered
        else At(entry, "topology_template.node_templates.VNF.properties")
    )
    out: dict[str, str] = {}
    for key in IDENTITY:
        value = values.get(key)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            out[key] = str(value)
        elif function_name(value) is not None:
            r.unsupported(where.key(key), f"TOSCA function {function_name(value)}")
        else:
            got = "missing" if value is None else f"got {kind(value)}"
            r.error(
                where.key(key),
                f"expected the VNF's {key} (a string in the VNF node's "
                f"properties or a default of its type), {got}",
            )
    vnfm = values.get("vnfm_info", [])
    vnfm_info = [str(v) for v in vnfm] if isinstance(vnfm, list) else [str(vnfm)]
    for fl, _, _ in flavours:
        for node in vnf_nodes:
            if node.at.file == fl.file and isinstance(node.props.get("flavour_description"), str):
                fl.description = node.props["flavour_description"]
    if len(out) != len(IDENTITY):
        return None
    return Vnfd(
        out["descriptor_id"],
        out["provider"],
        out["product_name"],
        out["software_version"],
        out["descriptor_version"],
        vnfm_info,
        entry,
    )


def fill_flavour(r: NodeReader, f: Flavour, topo: Topology, tt: Map, at: At) -> None:
    """Resolves a topology's references into ``f`` (errors for the ones that dangle)."""
    f.storages = {name: s for name, (s, _) in topo.storages.items()}
    users: dict[str, list[str]] = {}
    for name, draft in topo.vdus.items():
        names: list[str] = []
        for target, qat in draft.storages:
            if target not in topo.storages:
                if topo.kinds.get(target) == t.BLOCK_STORAGE:
                    continue  # defined, but broken: reported where it is defined
                r.error(qat, f"expected a Vdu.VirtualBlockStorage of this flavour, got {target!r}")
                continue
            names.append(target)
            users.setdefault(target, []).append(name)
        boot = None
        if draft.image is None:
            boot = next((s for s in names if f.storages[s].image is not None), None)
            if boot is None:
                r.error(
                    draft.at.key("properties"),
                    "expected sw_image_data (the image the VDU "
                    "boots), or a virtual_storage with sw_image_data to boot from",
                )
                continue
        f.vdus[name] = Vdu(
            name,
            draft.display_name,
            draft.description,
            draft.min_instances,
            draft.max_instances,
            draft.vcpus,
            draft.ram_mb,
            draft.disk_gb,
            draft.cpu_policy,
            draft.mem_page_size,
            draft.numa_nodes,
            draft.image,
            tuple(names),
            boot,
        )
    for sname, (_, sat) in topo.storages.items():
        used = users.get(sname, [])
        if not used:
            r.error(sat, "a VirtualBlockStorage no VDU names in its virtual_storage requirement")
        elif len(used) > 1:
            r.unsupported(sat, f"a VirtualBlockStorage shared by several VDUs ({', '.join(used)})")
    f.vls = dict(topo.vls)
    external = external_cps(r, tt, at, topo)
    for name, cp in topo.cps.items():
        assert cp.vdu is not None
        vdu, vat = cp.vdu
        if vdu not in topo.vdus:
            if topo.kinds.get(vdu) == t.VDU:
                continue  # defined, but broken: reported where it is defined
            r.error(vat, f"expected a Vdu.Compute of this flavour, got {vdu!r}")
            continue
        vl = None
        if cp.vl is not None:
            vl, lat = cp.vl
            if vl not in topo.vls:
                if topo.kinds.get(vl) == t.VL:
                    continue
                r.error(lat, f"expected a VnfVirtualLink of this flavour, got {vl!r}")
                continue
            if name in external:
                r.error(
                    lat,
                    f"the CP has an internal virtual_link and is also mapped to the "
                    f"external link {external[name]!r} in substitution_mappings",
                )
                continue
        elif name not in external:
            r.error(
                cp.at.key("requirements"),
                "expected a virtual_link requirement naming a "
                "VnfVirtualLink, or substitution_mappings.requirements mapping this CP to "
                "an external link",
            )
            continue
        if vdu in f.vdus:
            f.cps[name] = VduCp(
                name, vdu, vl, external.get(name), cp.vnic_type, cp.sol_vnic_type, cp.order
            )
    groups, gat = r.get_map(tt, "groups", at)
    broken = {n for n, k in topo.kinds.items() if k == t.VDU and n not in f.vdus}
    pr = PolicyReader(r.problems, r.types, f, broken)
    if groups is not None:
        pr.read_groups(groups, gat)
    policies, pat = r.child(tt, "policies", at)
    if policies is not None:
        pr.read_policies(policies, pat)


def external_cps(r: NodeReader, tt: Map, at: At, topo: Topology) -> dict[str, str]:
    """CP name -> the substitution_mappings requirement it is exposed as."""
    subst = tt.get("substitution_mappings")
    if not isinstance(subst, Map):
        return {}
    sat = at.key("substitution_mappings", line_in(tt, "substitution_mappings"))
    reqs, rat = r.get_map(subst, "requirements", sat)
    out: dict[str, str] = {}
    for req, value in (reqs or {}).items():
        qat = rat.key(req, line_in(reqs, req))
        if value in (None, []):
            continue  # declared, mapped to nothing (e.g. `virtual_link_external: []`)
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(v, str) for v in value)
        ):
            r.error(qat, f"expected [CP node name, requirement name], got {kind(value)}")
            continue
        node, name = value
        if topo.kinds.get(node) in t.UNSUPPORTED_NODES or (
            topo.kinds.get(node) == t.VDU_CP and node not in topo.cps
        ):
            continue  # already answered where the node is defined
        if node not in topo.cps:
            r.error(qat, f"expected a VduCp of this flavour, got {node!r}")
            continue
        if name not in ("virtual_link", "external_virtual_link"):
            r.error(qat, f"expected the CP's requirement virtual_link, got {name!r}")
            continue
        if node in out:
            r.error(qat, f"{node} is already mapped to {out[node]!r}")
            continue
        out[node] = req
    return out
