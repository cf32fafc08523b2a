"""The broken-descriptor corpus: each case breaks the vfirewall template (or its package)
in one way and names the error it must give: file, path, message fragment. Every case
also checks that nothing raises and that every error names its file and path."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from central.vnfd import check_vnfd
from tests.unit.vnfd_support import ROOT, template_doc, write_package

FILE = "Definitions/vnf.yaml"
NT = "topology_template.node_templates"
POL = "topology_template.policies"
VC = "capabilities.virtual_compute.properties"
BROKEN = ROOT / "tests" / "vnfd_broken"

Doc = dict[str, Any]


def nodes(d: Doc) -> Doc:
    return d["topology_template"]["node_templates"]


def policy(d: Doc, name: str) -> Doc:
    for item in d["topology_template"]["policies"]:
        if name in item:
            return item[name]
    raise KeyError(name)


def vc(d: Doc, vdu: str = "filter") -> Doc:
    return nodes(d)[vdu]["capabilities"]["virtual_compute"]["properties"]


def l3(d: Doc) -> Doc:
    return nodes(d)["inside"]["properties"]["vl_profile"]["virtual_link_protocol_data"][0][
        "l3_protocol_data"
    ]


def setp(fn: Callable[[Doc], Any]) -> Callable[[Doc], None]:
    def edit(d: Doc) -> None:
        fn(d)

    return edit


# (id, edit of the parsed template, path, message fragment)
CASES: list[tuple[str, Callable[[Doc], Any], str, str]] = [
    ("no-vdu-profile", lambda d: nodes(d)["filter"]["properties"].pop("vdu_profile"),
     f"{NT}.filter.properties.vdu_profile", "missing: expected a mapping"),
    ("vcpus-text", lambda d: vc(d)["virtual_cpu"].update(num_virtual_cpu="two"),
     f"{NT}.filter.{VC}.virtual_cpu.num_virtual_cpu", "expected an integer, got a string ('two')"),
    ("vcpus-zero", lambda d: vc(d)["virtual_cpu"].update(num_virtual_cpu=0),
     f"{NT}.filter.{VC}.virtual_cpu.num_virtual_cpu", "expected an integer >= 1, got 0"),
    ("mem-unit", lambda d: vc(d)["virtual_memory"].update(virtual_mem_size="128 MiBs"),
     f"{NT}.filter.{VC}.virtual_memory.virtual_mem_size", "expected a size like '512 MiB'"),
    ("mem-too-small", lambda d: vc(d)["virtual_memory"].update(virtual_mem_size="1 MiB"),
     f"{NT}.filter.{VC}.virtual_memory.virtual_mem_size", "expected 64 MiB to 262144 MiB, got 1"),
    ("min-over-max", lambda d: nodes(d)["filter"]["properties"]["vdu_profile"].update(
        min_number_of_instances=4),
     f"{NT}.filter.properties.vdu_profile.max_number_of_instances",
     "expected max_number_of_instances >= min_number_of_instances (4), got 3"),
    ("unknown-node-type", lambda d: nodes(d)["filter"].update(type="acme.Thing"),
     f"{NT}.filter.type", "unsupported: node type acme.Thing (not a SOL001 type"),
    ("os-container", lambda d: nodes(d).update(
        c={"type": "tosca.nodes.nfv.Vdu.OsContainer", "properties": {"name": "c"}}),
     f"{NT}.c.type", "unsupported: node type tosca.nodes.nfv.Vdu.OsContainer (containers) at "
     f"{FILE}:{NT}.c.type"),
    ("binding-dangles", lambda d: nodes(d)["manager_in"]["requirements"][0].update(
        virtual_binding="nosuch"),
     f"{NT}.manager_in.requirements[0].virtual_binding",
     "expected a Vdu.Compute of this flavour, got 'nosuch'"),
    ("link-dangles", lambda d: nodes(d)["manager_in"]["requirements"][1].update(
        virtual_link="nosuch"),
     f"{NT}.manager_in.requirements[1].virtual_link",
     "expected a VnfVirtualLink of this flavour, got 'nosuch'"),
    ("no-binding", lambda d: nodes(d)["manager_in"]["requirements"].pop(0),
     f"{NT}.manager_in.requirements", "missing: expected a virtual_binding requirement"),
    ("cp-unlinked", lambda d: d["topology_template"]["substitution_mappings"].pop("requirements"),
     f"{NT}.filter_out.requirements", "expected a virtual_link requirement naming a VnfVirtual"),
    ("external-dangles", lambda d: d["topology_template"]["substitution_mappings"][
        "requirements"].update(outside=["ghost", "virtual_link"]),
     "topology_template.substitution_mappings.requirements.outside",
     "expected a VduCp of this flavour, got 'ghost'"),
    ("direct-physical", lambda d: nodes(d)["filter_in"]["properties"].update(
        vnic_type="direct-physical"),
     f"{NT}.filter_in.properties.vnic_type", "unsupported: vnic_type direct-physical"),
    ("vnic-bogus", lambda d: nodes(d)["filter_in"]["properties"].update(vnic_type="fast"),
     f"{NT}.filter_in.properties.vnic_type", "expected a vnic_type (normal, direct"),
    ("cidr-host-bits", lambda d: l3(d).update(cidr="10.62.0.1/24"),
     f"{NT}.inside.properties.vl_profile.virtual_link_protocol_data[0].l3_protocol_data.cidr",
     "expected a network like 10.0.0.0/24 (no host bits)"),
    ("gateway-outside", lambda d: l3(d).update(gateway_ip="10.9.9.1"),
     f"{NT}.inside.properties.vl_profile.virtual_link_protocol_data[0].l3_protocol_data"
     ".gateway_ip", "expected an address inside 10.62.0.0/24, got 10.9.9.1"),
    ("network-gre", lambda d: nodes(d)["inside"]["properties"]["vl_profile"][
        "virtual_link_protocol_data"][0]["l2_protocol_data"].update(network_type="gre"),
     f"{NT}.inside.properties.vl_profile.virtual_link_protocol_data[0].l2_protocol_data"
     ".network_type", "unsupported: network_type gre"),
    ("target-dangles", lambda d: policy(d, "filter_initial_delta").update(targets=["nope"]),
     f"{POL}[1].filter_initial_delta.targets[0]", "expected a Vdu.Compute of this flavour"),
    ("aspect-dangles", lambda d: policy(d, "filter_scaling_deltas")["properties"].update(
        aspect="nope"),
     f"{POL}[3].filter_scaling_deltas.properties.aspect",
     "expected a scaling aspect of this flavour, got 'nope'"),
    ("delta-over-max", lambda d: policy(d, "filter_scaling_deltas")["properties"]["deltas"][
        "delta_1"].update(number_of_instances=2),
     f"{POL}[3].filter_scaling_deltas", "scaling aspect filter_instances to max_scale_level 2 "
     "gives filter 5 instances, above its max_number_of_instances 3"),
    ("delta-unknown", lambda d: policy(d, "filter_scaling_deltas")["properties"].update(
        deltas={"delta_9": {"number_of_instances": 1}}),
     f"{POL}[3].filter_scaling_deltas.properties.deltas.delta_9",
     "expected a step delta of aspect filter_instances (delta_1), got 'delta_9'"),
    ("scale-level-over", lambda d: policy(d, "instantiation_levels")["properties"]["levels"][
        "large"]["scale_info"]["filter_instances"].update(scale_level=3),
     f"{POL}[4].instantiation_levels.properties.levels.large.scale_info.filter_instances"
     ".scale_level", "expected an integer <= 2, got 3"),
    ("level-aspect-dangles", lambda d: policy(d, "instantiation_levels")["properties"]["levels"][
        "large"].update(scale_info={"nope": {"scale_level": 1}}),
     f"{POL}[4].instantiation_levels.properties.levels.large.scale_info.nope",
     "expected a scaling aspect of this flavour, got 'nope'"),
    ("vdu-level-dangles", lambda d: policy(d, "filter_levels")["properties"]["levels"].update(
        huge={"number_of_instances": 3}),
     f"{POL}[5].filter_levels.properties.levels.huge",
     "expected a level of the flavour's InstantiationLevels, got 'huge'"),
    ("default-level-dangles", lambda d: policy(d, "instantiation_levels")["properties"].update(
        default_level="medium"),
     f"{POL}[4].instantiation_levels.properties.default_level",
     "expected one of the levels (small, large), got 'medium'"),
    ("scope-bogus", lambda d: policy(d, "filters_apart")["properties"].update(scope="rack"),
     f"{POL}[7].filters_apart.properties.scope",
     "expected one of nfvi_node, zone, zone_group, nfvi_pop, got 'rack'"),
    ("policy-monitoring", lambda d: d["topology_template"]["policies"].append(
        {"watch": {"type": "tosca.policies.Monitoring", "targets": ["filter"]}}),
     f"{POL}[8].watch.type", "unsupported: policy type tosca.policies.Monitoring"),
    ("affinity", lambda d: d["topology_template"]["policies"].append(
        {"near": {"type": "tosca.policies.nfv.AffinityRule", "targets": ["filter"],
                  "properties": {"scope": "zone"}}}),
     f"{POL}[8].near.type", "unsupported: policy type tosca.policies.nfv.AffinityRule"),
    ("lcm-script", lambda d: nodes(d)["VNF"].update(
        interfaces={"Vnflcm": {"instantiate_end": {"implementation": "drv"}}}),
     f"{NT}.VNF.interfaces.Vnflcm.instantiate_end",
     "unsupported: LCM operation script (interfaces.Vnflcm.instantiate_end)"),
    ("vdu-artifact-script", lambda d: nodes(d)["filter"].update(
        artifacts={"s": {"type": "tosca.artifacts.Implementation.Python", "file": "x.py"}}),
     f"{NT}.filter.artifacts.s",
     "unsupported: artifact type tosca.artifacts.Implementation.Python"),
    ("artifact-escapes", lambda d: nodes(d)["filter"].update(
        artifacts={"sw_image": {"type": "tosca.artifacts.nfv.SwImage", "file": "../../x.img"}}),
     f"{NT}.filter.artifacts.sw_image.file", "'../../x.img' points outside the package root"),
    ("disk-format-vmdk", lambda d: nodes(d)["filter"]["properties"]["sw_image_data"].update(
        disk_format="vmdk"),
     f"{NT}.filter.properties.sw_image_data.disk_format", "unsupported: disk_format vmdk"),
    ("no-image", lambda d: nodes(d)["manager"]["properties"].pop("sw_image_data"),
     f"{NT}.manager.properties", "expected sw_image_data (the image the VDU boots)"),
    ("min-disk-over-root", lambda d: nodes(d)["filter"]["properties"]["sw_image_data"].update(
        min_disk="2 GiB"),
     f"{NT}.filter.{VC}.virtual_local_storage",
     "expected a root disk of at least the image's min_disk (2 GiB), got 1 GiB"),
    ("get-input", lambda d: nodes(d)["filter"]["properties"]["vdu_profile"].update(
        max_number_of_instances={"get_input": "n"}),
     f"{NT}.filter.properties.vdu_profile.max_number_of_instances",
     "unsupported: TOSCA function get_input"),
    ("tosca-version", lambda d: d.update(tosca_definitions_version="tosca_2_0"),
     "tosca_definitions_version", "expected one of tosca_simple_yaml_1_0"),
    ("no-descriptor-id", lambda d: nodes(d)["VNF"]["properties"].pop("descriptor_id"),
     f"{NT}.VNF.properties.descriptor_id", "expected the VNF's descriptor_id"),
    ("steps-length", lambda d: policy(d, "scaling_aspects")["properties"]["aspects"][
        "filter_instances"].update(max_scale_level=3, step_deltas=["a", "b"]),
     f"{POL}[0].scaling_aspects.properties.aspects.filter_instances.step_deltas",
     "expected 1 step delta (uniform) or max_scale_level (3), got 2"),
    ("storage-unused", lambda d: nodes(d).update(spare={
        "type": "tosca.nodes.nfv.Vdu.VirtualBlockStorage",
        "properties": {"virtual_block_storage_data": {"size_of_storage": "1 GiB"}}}),
     f"{NT}.spare", "a VirtualBlockStorage no VDU names in its virtual_storage requirement"),
    ("storage-dangles", lambda d: nodes(d)["filter"].update(
        requirements=[{"virtual_storage": "nope"}]),
     f"{NT}.filter.requirements[0].virtual_storage",
     "expected a Vdu.VirtualBlockStorage of this flavour, got 'nope'"),
    ("two-local-disks", lambda d: vc(d).update(virtual_local_storage=[
        {"size_of_storage": "1 GiB"}, {"size_of_storage": "1 GiB"}]),
     f"{NT}.filter.{VC}.virtual_local_storage[1]",
     "unsupported: more than one virtual_local_storage"),
    ("static-pinning", lambda d: vc(d)["virtual_cpu"].update(
        virtual_cpu_pinning={"virtual_cpu_pinning_policy": "static"}),
     f"{NT}.filter.{VC}.virtual_cpu.virtual_cpu_pinning.virtual_cpu_pinning_policy",
     "unsupported: virtual_cpu_pinning_policy static"),
    ("page-size-bogus", lambda d: vc(d)["virtual_memory"].update(
        vdu_mem_requirements={"mem_page_size": "3MB"}),
     f"{NT}.filter.{VC}.virtual_memory.vdu_mem_requirements.mem_page_size",
     "expected small, 2MB or 1GB, got a string ('3MB')"),
    ("numa-over-vcpus", lambda d: vc(d).update(logical_node={"a": {}, "b": {}}),
     f"{NT}.filter.{VC}.logical_node", "expected 1 to 1 NUMA nodes (at most one per vCPU), got 2"),
    ("boot-data", lambda d: nodes(d)["filter"]["properties"].update(boot_data="#cloud-config"),
     f"{NT}.filter.properties.boot_data", "unsupported: Vdu.Compute property 'boot_data'"),
    ("initial-delta-range", lambda d: policy(d, "filter_initial_delta")["properties"][
        "initial_delta"].update(number_of_instances=5),
     f"{POL}[1].filter_initial_delta.properties.initial_delta.number_of_instances",
     "expected 1 to 3 instances (the vdu_profile of filter), got 5"),
    ("import-escape", lambda d: d["imports"].append("../../outside.yaml"),
     "imports[2]", "'../../outside.yaml' points outside the package root (refused)"),
    ("import-absolute", lambda d: d["imports"].append("/etc/types.yaml"),
     "imports[2]", "'/etc/types.yaml': an absolute path"),
    ("import-url", lambda d: d["imports"].append("https://example.com/types.yaml"),
     "imports[2]", "only files inside the package can be imported, not URLs"),
    ("import-missing", lambda d: d["imports"].append("types.yaml"),
     "imports[2]", "imports 'Definitions/types.yaml', which is not in the package"),
    ("subst-not-vnf", lambda d: d["topology_template"]["substitution_mappings"].update(
        node_type="tosca.nodes.nfv.VduCp"),
     "topology_template.substitution_mappings.node_type",
     "expected a node type derived from tosca.nodes.nfv.VNF"),
    ("no-flavour-id", lambda d: d["topology_template"]["substitution_mappings"][
        "properties"].pop("flavour_id"),
     "topology_template.substitution_mappings.properties.flavour_id", "missing: expected a string"),
    ("autoscale", lambda d: nodes(d)["VNF"]["properties"].update(
        configurable_properties={"is_autoscale_enabled": True}),
     f"{NT}.VNF.properties.configurable_properties.is_autoscale_enabled",
     "unsupported: is_autoscale_enabled: true"),
    ("workflows", lambda d: d["topology_template"].update(workflows={"w": {}}),
     "topology_template.workflows", "unsupported: topology_template key 'workflows'"),
]  # fmt: skip


def assert_well_formed(errors: list[Any]) -> None:
    for e in errors:
        assert e.file and e.message, e
        assert e.path or e.file.endswith((".meta", ".zip")) or "YAML" in e.message, e


@pytest.mark.parametrize(("edit", "path", "fragment"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_broken(tmp_path: Path, edit: Callable[[Doc], Any], path: str, fragment: str) -> None:
    doc = template_doc("vfirewall")
    edit(doc)
    vnfd, errors = check_vnfd(write_package(tmp_path, doc))
    assert vnfd is None
    assert_well_formed(errors)
    hits = [e for e in errors if e.file == FILE and e.path == path and fragment in e.message]
    assert hits, "\n".join(map(str, errors))


def test_corpus_is_big_enough() -> None:
    assert len(CASES) + 5 >= 30 and len({c[0] for c in CASES}) == len(CASES)


def test_all_errors_reported_at_once(tmp_path: Path) -> None:
    doc = template_doc("vfirewall")
    chosen = ("vcpus-text", "mem-unit", "binding-dangles", "cidr-host-bits",
              "default-level-dangles", "tosca-version")  # fmt: skip
    wanted = [c for c in CASES if c[0] in chosen]
    for _, edit, _, _ in wanted:
        edit(doc)
    _, errors = check_vnfd(write_package(tmp_path, doc))
    for _, _, path, fragment in wanted:
        assert any(e.path == path and fragment in e.message for e in errors), path


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    text = (BROKEN / "tab_indent.yaml").read_text()
    _, errors = check_vnfd(write_package(tmp_path, None, text=text))
    assert [(e.file, e.line) for e in errors] == [(FILE, 3)]
    assert errors[0].message.startswith("not valid YAML")


def test_container_vdu_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    shutil.copy(BROKEN / "container_vdu.yaml", path)
    _, errors = check_vnfd(path)
    assert [(e.file, e.path) for e in errors] == [
        ("c.yaml", "topology_template.node_templates.app.type")
    ]
    assert errors[0].message == (
        "unsupported: node type tosca.nodes.nfv.Vdu.OsContainer (containers) at "
        "c.yaml:topology_template.node_templates.app.type"
    )
    assert errors[0].line == 20


def test_monitoring_file() -> None:
    _, errors = check_vnfd(BROKEN / "monitoring.yaml")
    assert [(e.path, e.message.split(" at ")[0]) for e in errors] == [
        ("topology_template.node_templates.VNF.properties.monitoring_parameters",
         "unsupported: VNF property 'monitoring_parameters'"),
        ("topology_template.policies[0].alarm.type",
         "unsupported: policy type tosca.policies.nfv.VnfIndicator"),
    ]  # fmt: skip


def test_meta_without_entry(tmp_path: Path) -> None:
    write_package(tmp_path, template_doc("vfirewall"))
    (tmp_path / "TOSCA-Metadata" / "TOSCA.meta").write_text("TOSCA-Meta-File-Version: 1.0\n")
    _, errors = check_vnfd(tmp_path)
    assert [(e.file, e.message) for e in errors] == [
        ("TOSCA-Metadata/TOSCA.meta",
         "expected an 'Entry-Definitions: <path of the top descriptor>' line")
    ]  # fmt: skip


def test_meta_entry_escapes(tmp_path: Path) -> None:
    write_package(tmp_path, template_doc("vfirewall"))
    (tmp_path / "TOSCA-Metadata" / "TOSCA.meta").write_text("Entry-Definitions: ../x.yaml\n")
    _, errors = check_vnfd(tmp_path)
    assert [(e.path, e.line) for e in errors] == [("Entry-Definitions", 1)]
    assert "points outside the package root" in errors[0].message


def test_two_flavours_same_id(tmp_path: Path) -> None:
    import yaml

    doc = template_doc("vfirewall")
    doc["imports"].append("second.yaml")
    write_package(tmp_path, doc)
    other = template_doc("vfirewall")
    other.pop("node_types")
    other["imports"] = ["vnf.yaml"]  # a cycle, harmless
    (tmp_path / "Definitions" / "second.yaml").write_text(yaml.safe_dump(other))
    _, errors = check_vnfd(tmp_path)
    assert any(e.file == "Definitions/second.yaml" and
               "flavour 'default' is also defined in Definitions/vnf.yaml" in e.message
               for e in errors), errors  # fmt: skip
