"""The descriptor loader, model and CLI: units, package forms (folder, zip, file,
TOSCA.meta), the four templates, Tacker's samples, ``skerry vnfd validate``."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from central import cli
from central.vnfd import VnfdInvalid, check_vnfd, load_vnfd
from central.vnfd.units import GIB, MIB, BadSize, size_in
from central.vnfd.yamlmarks import Map, load
from tests.unit.vnfd_support import SAMPLES, TEMPLATE_NAMES, TEMPLATES, template_doc, write_package


@pytest.mark.parametrize(
    ("text", "unit", "expected"),
    [
        ("512 MB", MIB, 489),  # 512e6 B = 488.28 MiB, rounded up
        ("512 MiB", MIB, 512),
        ("1 GiB", MIB, 1024),
        ("2 GB", GIB, 2),  # 1.86 GiB -> 2
        ("1 GB", GIB, 1),
        ("160 GB", GIB, 150),  # 149.01 GiB -> 150
        ("1.75 GiB", MIB, 1792),
        ("8192.5 MiB", MIB, 8193),
        ("0 GB", GIB, 0),
        ("3gib", GIB, 3),  # units are case-insensitive, the space optional
    ],
)
def test_sizes_round_up(text: str, unit: int, expected: int) -> None:
    assert size_in(text, unit) == expected


@pytest.mark.parametrize("bad", ["512", "MB", "12 parsecs", "-1 GB", 512, None, "1,5 GB"])
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(BadSize, match="expected a size"):
        size_in(bad, MIB)


def test_yaml_keeps_lines_and_duplicates() -> None:
    doc = load("a: 1\nb:\n  c: [1, 2]\n  c: 3\n")
    assert isinstance(doc, Map) and doc.line_of("b") == 2
    assert doc["b"].line_of("c") == 4 and doc["b"].duplicates == [("c", 4)]


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_templates_validate(name: str) -> None:
    vnfd = load_vnfd(TEMPLATES / name)
    assert vnfd.provider == "Skerry" and vnfd.product_name == name
    flavour = vnfd.flavours["default"]
    for vdu in flavour.vdus.values():  # tiny: they boot under TCG on 2 cores
        assert vdu.vcpus == 1 and vdu.ram_mb == 128 and vdu.disk_gb == 1
        assert vdu.image is not None and vdu.image.name == "tiny-disk"
        assert vdu.image.disk_format == "qcow2" and vdu.image.file is None
    assert (TEMPLATES / name / "README.md").read_text().startswith(f"{name}: ")


def test_template_vrouter() -> None:
    f = load_vnfd(TEMPLATES / "vrouter").flavours["default"]
    assert set(f.vdus) == {"edge", "core"} and set(f.vls) == {"transit_a", "transit_b"}
    assert f.external_links == {"uplink": ["edge_ext"]}
    assert [cp.name for cp in f.cps_of("edge")] == ["edge_ext", "edge_a", "edge_b"]
    assert f.vls["transit_a"].cidr == "10.61.1.0/24" and f.vls["transit_a"].network_type == "vxlan"


def test_template_vfirewall_scaling() -> None:
    f = load_vnfd(TEMPLATES / "vfirewall").flavours["default"]
    aspect = f.aspects["filter_instances"]
    assert aspect.max_scale_level == 2 and aspect.deltas == {"delta_1": {"filter": 1}}
    assert aspect.instances_added("filter", 0, 2) == 2
    assert f.default_level == "small" and f.initial_deltas == {"filter": 1, "manager": 1}
    assert f.instances("filter") == 1 and f.instances("filter", "large") == 3
    assert [(r.vdus, r.scope) for r in f.anti_affinity] == [(("filter",), "nfvi_node")]


def test_template_upf_and_dns_cache() -> None:
    upf = load_vnfd(TEMPLATES / "upf").flavours["default"]
    assert upf.vdus["upf"].flavor() == {
        "vcpus": 1,
        "ram_mb": 128,
        "disk_gb": 1,
        "cpu_policy": "dedicated",
        "mem_page_size": "2MB",
        "numa_nodes": 1,
    }
    assert {c.name: c.vnic_type for c in upf.cps.values()} == {
        "upf_n3": "direct",
        "upf_n6": "direct",
        "upf_mgmt": "normal",
    }
    dns = load_vnfd(TEMPLATES / "dns-cache").flavours["default"]
    assert dns.vdus["dns"].storages == ("cache_volume",)
    assert dns.storages["cache_volume"].size_gb == 1 and dns.storages["cache_volume"].image is None


def test_csar_zip_and_file_forms(tmp_path: Path) -> None:
    src = TEMPLATES / "vfirewall"
    csar = tmp_path / "vfirewall.csar"
    with zipfile.ZipFile(csar, "w") as zf:
        for p in src.rglob("*"):
            if p.is_file():
                zf.write(p, p.relative_to(src).as_posix())
    assert load_vnfd(csar).id == load_vnfd(src).id
    # The Definitions file alone: its package is the folder above Definitions/.
    assert load_vnfd(src / "Definitions" / "vfirewall.yaml").flavours.keys() == {"default"}
    # A zip with a single YAML in its root and no TOSCA.meta.
    lone = tmp_path / "lone.zip"
    with zipfile.ZipFile(lone, "w") as zf:
        zf.write(src / "Definitions" / "vfirewall.yaml", "vnfd.yaml")
    assert load_vnfd(lone).entry == "vnfd.yaml"


def test_zip_slip_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.yaml", "a: 1")
        zf.writestr("vnfd.yaml", "a: 1")
    _, errors = check_vnfd(evil)
    assert [(e.file, e.message) for e in errors] == [
        ("../escape.yaml", "a zip member outside the package root (refused)")
    ]


def test_not_a_package(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hello")
    _, errors = check_vnfd(tmp_path / "x.txt")
    assert "expected a descriptor file" in errors[0].message
    _, errors = check_vnfd(tmp_path / "missing")
    assert errors[0].message == "no such file or directory"
    with pytest.raises(VnfdInvalid, match="no such file"):
        load_vnfd(tmp_path / "missing")


def test_imports_resolve_relative_and_standard_by_url(tmp_path: Path) -> None:
    doc = template_doc("vfirewall")
    types = {"tosca_definitions_version": "tosca_simple_yaml_1_2",
             "node_types": doc.pop("node_types")}  # fmt: skip
    doc["imports"] = [
        "https://forge.etsi.org/rep/nfv/SOL001/raw/v2.6.1/etsi_nfv_sol001_vnfd_types.yaml",
        {"types": {"file": "sub/types.yaml"}},
    ]
    write_package(tmp_path, doc)
    (tmp_path / "Definitions" / "sub").mkdir()
    import yaml

    (tmp_path / "Definitions" / "sub" / "types.yaml").write_text(yaml.safe_dump(types))
    assert load_vnfd(tmp_path).product_name == "vfirewall"


# -- Tacker's samples: the subset's part gives a model, the rest a clear error ---------


def test_sample_getting_started() -> None:
    vnfd = load_vnfd(SAMPLES / "getting-started")
    assert vnfd.id == "b1bb0ce7-ebca-4fa7-95ed-4840d70a1177" and vnfd.provider == "Company"
    f = vnfd.flavours["simple"]
    vdu = f.vdus["VDU1"]
    assert (vdu.vcpus, vdu.ram_mb, vdu.disk_gb) == (1, 489, 1)
    assert vdu.image is not None and vdu.image.file == "Files/images/cirros-0.5.2-x86_64-disk.img"
    assert f.cps["CP1"].virtual_link == "internalVL1" and f.vls["internalVL1"].cidr == "10.0.0.0/24"


def test_sample_helloworld3_functional() -> None:
    f = load_vnfd(SAMPLES / "helloworld3-functional").flavours["simple"]
    assert f.vdus["VDU1"].image is None and f.vdus["VDU1"].boot_storage == "VirtualStorage"
    assert f.storages["VirtualStorage"].image is not None
    assert f.external_links["virtual_link_external1_1"] == ["VDU1_CP1"]
    assert [f.instances("VDU1", lv) for lv in f.levels] == [1, 3]
    assert {r.scope for r in f.anti_affinity} == {"zone"}


def test_sample_direct_physical_unsupported() -> None:
    _, errors = check_vnfd(SAMPLES / "helloworld3-direct-physical")
    file = "Definitions/helloworld3_df_simple.yaml"
    path = "topology_template.node_templates.CP1.properties.vnic_type"
    assert errors[0].message == (
        "unsupported: vnic_type direct-physical (a whole physical NIC passed through; "
        "Skerry's direct ports are SR-IOV VFs (vnic_type direct)) at " + f"{file}:{path}"
    )
    assert (errors[0].file, errors[0].path, errors[0].line) == (file, path, 157)
    # The sample itself is inconsistent: its level asks for more than VDU1's maximum.
    assert "expected 1 to 1 instances (the vdu_profile of VDU1), got 3" in errors[1].message
    assert len(errors) == 2


def test_sample_two_flavours_vnf_ext_cp() -> None:
    _, errors = check_vnfd(SAMPLES / "practical-two-flavours")
    assert {e.file for e in errors} == {"Definitions/df_ha.yaml"}
    assert [e.path.split(".")[2] for e in errors] == [
        "VDU0_extCP0", "VDU1_extCP0", "RT_extCP", "VDU_extvCP"]  # fmt: skip
    assert all(e.message.startswith("unsupported: node type tosca.nodes.nfv.VnfExtCp")
               for e in errors)  # fmt: skip


def test_sample_free5gc_scripts() -> None:
    _, errors = check_vnfd(SAMPLES / "free5gc")
    text = "\n".join(map(str, errors))
    assert "unsupported: LCM operation script (interfaces.Vnflcm.instantiate_end)" in text
    assert "unsupported: VNF artifact 'mgmt-drivers-free5gc'" in text
    assert "expected a VduCp of this flavour, got 'free5gc_amf_CP'" in text
    assert all(e.file == "Definitions/sample_free5gc_df_simple.yaml" and e.path for e in errors)


def test_shared_samples_match_the_copies() -> None:
    shared = Path("/work/shared/vnfd-samples")
    if not shared.is_dir():
        pytest.skip("the shared samples folder is not on this machine")
    for copy in SAMPLES.iterdir():
        if copy.is_dir():
            assert check_vnfd(shared / copy.name)[1] == check_vnfd(copy)[1]


# -- skerry vnfd validate ----------------------------------------------------------------


def test_cli_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["vnfd", "validate", str(TEMPLATES / "vfirewall")]) == 0
    out = capsys.readouterr().out
    assert "flavours: default" in out
    assert "filter: 1c/128M/1G image=tiny-disk instances=1..3" in out
    assert "filter_out: vdu=filter external=outside vnic=normal" in out
    assert "inside: ipv4 10.62.0.0/24" in out
    assert "filter_instances: max_scale_level=2 delta_1: filter+1" in out
    assert "large: manager=1, filter=3" in out


def test_cli_validate_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["vnfd", "validate", str(SAMPLES / "practical-two-flavours")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(
        "Definitions/df_ha.yaml:176: topology_template.node_templates.VDU0_extCP0.type: "
        "unsupported: node type tosca.nodes.nfv.VnfExtCp"
    )
    assert err[-1].endswith(": 4 error(s)") and len(err) == 5


def test_cli_validate_json(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert cli.main(["--json", "vnfd", "validate", str(TEMPLATES / "upf")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["flavours"]["default"]["vdus"]["upf"]["cpu_policy"] == "dedicated"
    assert cli.main(["--json", "vnfd", "validate", str(SAMPLES / "free5gc")]) == 1
    errors = json.loads(capsys.readouterr().out)["errors"]
    assert errors and all({"file", "path", "line", "message"} <= e.keys() for e in errors)


def test_corrupt_zip_member(tmp_path: Path) -> None:
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("vnfd.yaml", "tosca_definitions_version: tosca_simple_yaml_1_2\n")
    data = bytearray(good.read_bytes())
    at = data.index(b"tosca_definitions")
    data[at] = ord("X")  # the member's bytes no longer match its CRC
    bad = tmp_path / "bad.zip"
    bad.write_bytes(bytes(data))
    _, errors = check_vnfd(bad)
    assert [(e.file, e.path) for e in errors] == [("vnfd.yaml", "")]
    assert errors[0].message.startswith("cannot read: unreadable zip member")


def test_instances_without_levels() -> None:
    f = load_vnfd(TEMPLATES / "vrouter").flavours["default"]
    assert f.levels == {} and f.default_level is None
    assert f.instances("edge") == 1  # no initial delta, no level: min_instances
