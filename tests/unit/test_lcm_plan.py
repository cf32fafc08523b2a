"""The pure plan of an instantiation, for all four templates, and its refusals."""

from __future__ import annotations

import pytest

from central.lcm.plan import (
    PlanError,
    initial_scale_status,
    plan_instantiate,
    plan_scale_in,
    plan_scale_out,
    resource_name,
    scale_target,
)
from central.vnfd import load_vnfd
from tests.unit.lcm_support import TEMPLATES

VROUTER = load_vnfd(TEMPLATES / "vrouter")
VFIREWALL = load_vnfd(TEMPLATES / "vfirewall")
UPF = load_vnfd(TEMPLATES / "upf")
DNS = load_vnfd(TEMPLATES / "dns-cache")


def link(cpd: str, network: str = "net-ext") -> dict:
    return {"id": f"l-{cpd}", "resourceId": network, "extCps": [{"cpdId": cpd}]}


def test_vrouter_two_vdus_two_vls_one_external_link() -> None:
    plan = plan_instantiate(VROUTER, "default", None, "edge-a", [link("uplink")], "i-1", "r1")
    assert plan.site == "edge-a"
    assert [(n.vl, n.name, n.cidr) for n in plan.networks] == [
        ("transit_a", "r1-transit-a", "10.61.1.0/24"),
        ("transit_b", "r1-transit-b", "10.61.2.0/24"),
    ]
    by_vdu = {s.vdu: s for s in plan.servers}
    assert sorted(by_vdu) == ["core", "edge"] and len(plan.servers) == 2
    edge = by_vdu["edge"]
    assert edge.name == "r1-edge-0" and edge.image == "tiny-disk"
    assert edge.flavor == VROUTER.flavours["default"].vdus["edge"].flavor()
    assert edge.metadata == {"vnf_instance": "i-1", "vdu": "edge"}
    assert [(p.cp, p.vl, p.network_id, p.vnic_type) for p in edge.ports] == [
        ("edge_ext", None, "net-ext", "normal"),
        ("edge_a", "transit_a", None, "normal"),
        ("edge_b", "transit_b", None, "normal"),
    ]
    assert [(p.cp, p.vl) for p in by_vdu["core"].ports] == [
        ("core_a", "transit_a"),
        ("core_b", "transit_b"),
    ]
    assert plan.warnings == ()


def test_a_cpd_may_name_the_vdu_cp_itself() -> None:
    plan = plan_instantiate(VROUTER, "default", None, "s", [link("edge_ext", "n9")], "i", "r")
    edge = next(s for s in plan.servers if s.vdu == "edge")
    assert edge.ports[0].network_id == "n9"


def test_vfirewall_levels_and_anti_affinity_on_one_host() -> None:
    ext = [link("outside")]
    small = plan_instantiate(VFIREWALL, "default", None, "edge-a", ext, "i", "fw")
    assert sorted(s.name for s in small.servers) == ["fw-filter-0", "fw-manager-0"]
    assert small.warnings == ()  # one filter: nothing to spread
    large = plan_instantiate(VFIREWALL, "default", "large", "edge-a", ext, "i", "fw")
    filters = [s for s in large.servers if s.vdu == "filter"]
    assert [s.name for s in filters] == ["fw-filter-0", "fw-filter-1", "fw-filter-2"]
    assert len(large.warnings) == 1
    warning = large.warnings[0]
    assert "filters_apart" in warning and "3 instances of filter" in warning
    assert "not honoured" in warning and "one host" in warning


def test_upf_direct_ports_and_epa_flavor() -> None:
    plan = plan_instantiate(UPF, "default", None, "s", [link("n3", "a"), link("n6", "b")], "i", "u")
    (upf,) = plan.servers
    assert [(p.cp, p.vnic_type, p.network_id) for p in upf.ports] == [
        ("upf_n3", "direct", "a"),
        ("upf_n6", "direct", "b"),
        ("upf_mgmt", "normal", None),
    ]
    assert upf.flavor["cpu_policy"] == "dedicated" and upf.flavor["mem_page_size"] == "2MB"
    assert [n.cidr for n in plan.networks] == ["10.63.0.0/24"]


def test_dns_cache_volume() -> None:
    plan = plan_instantiate(DNS, "default", None, "s", [link("clients")], "i", "dns")
    (dns,) = plan.servers
    assert [(v.storage, v.name, v.size_gb, v.boot, v.image) for v in dns.volumes] == [
        ("cache_volume", "dns-dns-0-cache-volume", 1, False, None)
    ]
    assert plan.networks == ()


@pytest.mark.parametrize(
    ("args", "field", "words"),
    [
        (("nope", None, [link("uplink")]), "flavourId", "flavour 'nope' is not in the VNFD"),
        (("default", "huge", [link("uplink")]), "instantiationLevelId", "level 'huge'"),
        (("default", None, []), "extVirtualLinks", "'uplink' (edge_ext) is not mapped"),
        (("default", None, [link("core_a")]), "extVirtualLinks[0].extCps[0].cpdId",
         "not an external CP"),
        (("default", None, [link("uplink"), link("edge_ext")]),
         "extVirtualLinks[1].extCps[0].cpdId", "mapped twice"),
    ],
)  # fmt: skip
def test_requests_that_do_not_fit_name_the_field(args: tuple, field: str, words: str) -> None:
    flavour, level, links = args
    with pytest.raises(PlanError) as err:
        plan_instantiate(VROUTER, flavour, level, "s", links, "i", "r")
    assert err.value.field == field
    assert words in err.value.message


def test_resource_names_fit_server_names() -> None:
    assert resource_name("My VNF", "cache_volume", "0") == "My-VNF-cache-volume-0"
    assert len(resource_name("x" * 80, "vdu")) == 63
    assert resource_name("__") == "vnf"


def test_scale_levels_and_bounds() -> None:
    flavour = VFIREWALL.flavours["default"]
    assert initial_scale_status(flavour, None) == {"filter_instances": 0}
    assert initial_scale_status(flavour, "large") == {"filter_instances": 2}
    assert scale_target(flavour, "filter_instances", 0, "SCALE_OUT", 2) == 2
    assert scale_target(flavour, "filter_instances", 2, "SCALE_IN", 1) == 1
    with pytest.raises(PlanError) as err:
        scale_target(flavour, "filter_instances", 2, "SCALE_OUT", 1)
    assert err.value.field == "numberOfSteps" and "outside 0..2" in err.value.message
    with pytest.raises(PlanError) as err:
        scale_target(flavour, "filter_instances", 0, "SCALE_IN", 1)
    assert err.value.field == "numberOfSteps"
    with pytest.raises(PlanError) as err:
        scale_target(flavour, "cpu", 0, "SCALE_OUT", 1)
    assert err.value.field == "aspectId" and "filter_instances" in err.value.message


def test_scale_out_adds_after_the_newest_and_scale_in_takes_the_newest() -> None:
    ext = [link("outside")]
    existing = {"manager": [0], "filter": [0, 1]}
    plan = plan_scale_out(VFIREWALL, "default", "filter_instances", (1, 2), existing, "s", ext,
                          "i", "fw")  # fmt: skip
    assert [(s.vdu, s.name) for s in plan.servers] == [("filter", "fw-filter-2")]
    assert plan.networks == ()
    assert "3 instances of filter" in plan.warnings[0]
    gone = plan_scale_in(VFIREWALL.flavours["default"], "filter_instances", (2, 0),
                         {"manager": [0], "filter": [0, 1, 2]})  # fmt: skip
    assert gone == {"filter": [1, 2]}
