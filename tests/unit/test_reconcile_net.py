"""The pure network plan: order, idempotence, permanent failures, VF binding, NIC hot-plug."""

from __future__ import annotations

import random

from edged.drivers.compute import ObservedServer, ServerSpec
from edged.drivers.network import (
    NetworkSpec,
    Observed,
    ObservedNetwork,
    ObservedPort,
    PortSpec,
    bridge_name,
    tap_mac,
    tap_name,
)
from edged.reconcile import plan_nics, specs_from_document
from edged.reconcile_net import (
    NetDesired,
    VfClaim,
    desired_from_document,
    fingerprint,
    plan_network,
)

NET = NetworkSpec("n1", segmentation="vxlan", segmentation_id=7, mtu=1450)
TAP = PortSpec("p1", "n1", "fa:16:3e:00:00:01")
VF = PortSpec("p2", "n2", "fa:16:3e:00:00:02", vnic_type="direct", server_id="s1", numa_node=1)
PROVIDER = NetworkSpec("n2", kind="provider", segmentation="flat", physnet="fast", mtu=1500)


def kinds(actions: list) -> list[tuple[str, str]]:
    return [(a.kind, a.id) for a in actions]


def observed_net(spec: NetworkSpec) -> ObservedNetwork:
    segments = () if spec.segmentation == "flat" else (f"seg-{spec.id}",)
    return ObservedNetwork(spec.id, bridge_name(spec.id), spec.mtu, segments)


def observed_tap(spec: PortSpec) -> ObservedPort:
    return ObservedPort(spec.id, tap_name(spec.id), spec.network_id, tap_mac(spec.mac))


def test_empty_host_creates_networks_before_ports() -> None:
    desired = NetDesired({"n1": NET, "n2": PROVIDER}, {"p1": TAP, "p2": VF})
    actions = plan_network(desired, Observed({}, {}), {}, servers={"s1"})
    assert kinds(actions) == [
        ("ensure_network", "n1"),
        ("ensure_network", "n2"),
        ("ensure_port", "p1"),
        ("bind_vf", "p2"),
    ]


def test_converged_host_plans_nothing() -> None:
    desired = NetDesired({"n1": NET, "n2": PROVIDER}, {"p1": TAP, "p2": VF})
    observed = Observed(
        {"n1": observed_net(NET), "n2": observed_net(PROVIDER)}, {"p1": observed_tap(TAP)}
    )
    claims = {"p2": VfClaim("p2", "0000:01:00.1", configured=True)}
    assert plan_network(desired, observed, claims, servers={"s1"}) == []


def test_removals_come_first_ports_before_networks() -> None:
    observed = Observed({"old": observed_net(NET)}, {"gone": observed_tap(TAP)})
    claims = {"vfgone": VfClaim("vfgone", "0000:01:00.2", configured=True)}
    actions = plan_network(NetDesired({"n1": NET}, {}), observed, claims, servers=())
    assert kinds(actions) == [
        ("delete_port", "gone"),
        ("release_vf", "vfgone"),
        ("delete_network", "old"),
        ("ensure_network", "n1"),
    ]


def test_direct_port_gets_a_vf_only_while_bound_to_a_desired_server() -> None:
    desired = NetDesired({"n2": PROVIDER}, {"p2": VF})
    base = Observed({"n2": observed_net(PROVIDER)}, {})
    assert kinds(plan_network(desired, base, {}, servers=set())) == []
    claims = {"p2": VfClaim("p2", "0000:01:00.1", configured=True)}
    assert kinds(plan_network(desired, base, claims, servers=set())) == [("release_vf", "p2")]
    pending = {"p2": VfClaim("p2", "0000:01:00.1", configured=False)}
    assert kinds(plan_network(desired, base, pending, servers={"s1"})) == [("bind_vf", "p2")]


def test_changed_mtu_wrong_mac_or_missing_segment_are_ensured_again() -> None:
    desired = NetDesired({"n1": NET}, {"p1": TAP})
    wrong_mtu = ObservedNetwork("n1", "b", 1500, ("seg",))
    no_segment = ObservedNetwork("n1", "b", 1450, ())
    wrong_mac = ObservedPort("p1", "t", "n1", "fe:00:00:00:00:99")
    for net, port in ((wrong_mtu, observed_tap(TAP)), (no_segment, wrong_mac)):
        actions = plan_network(desired, Observed({"n1": net}, {"p1": port}), {}, servers=())
        assert ("ensure_network", "n1") in kinds(actions) or ("ensure_port", "p1") in kinds(actions)
    moved = ObservedPort("p1", "t", "other", tap_mac(TAP.mac))
    actions = plan_network(desired, Observed({"n1": observed_net(NET)}, {"p1": moved}), {}, ())
    assert kinds(actions) == [("delete_port", "p1"), ("ensure_port", "p1")]


def test_permanent_failure_is_not_retried_until_the_spec_changes() -> None:
    desired = NetDesired({"n1": NET}, {})
    failed = {"network:n1": fingerprint(NET)}
    assert plan_network(desired, Observed({}, {}), {}, (), failed) == []
    changed = NetDesired({"n1": NetworkSpec("n1", segmentation_id=8)}, {})
    assert kinds(plan_network(changed, Observed({}, {}), {}, (), failed)) == [
        ("ensure_network", "n1")
    ]


def test_document_parsing_gives_addresses_with_prefixes() -> None:
    doc = {
        "networks": [
            {
                "id": "n1",
                "kind": "tenant",
                "segmentation": "vxlan",
                "segmentation_id": 7,
                "physnet": None,
                "mtu": 1450,
                "subnets": [{"id": "s4", "cidr": "10.0.0.0/24"}, {"id": "s6", "cidr": "fd00::/64"}],
            }
        ],
        "ports": [
            {
                "id": "p1",
                "network_id": "n1",
                "mac": "fa:16:3e:00:00:01",
                "vnic_type": "normal",
                "server_id": None,
                "fixed_ips": [
                    {"subnet_id": "s4", "ip_address": "10.0.0.5"},
                    {"subnet_id": "s6", "ip_address": "fd00::5"},
                    {"subnet_id": "elsewhere", "ip_address": "192.0.2.1"},
                ],
            }
        ],
    }
    desired = desired_from_document(doc)
    assert desired.networks["n1"] == NET
    assert desired.ports["p1"].addresses == ("10.0.0.5/24", "fd00::5/64")
    assert desired_from_document(None).empty


def test_server_spec_reads_epa_fields_and_keeps_old_build_hashes() -> None:
    doc = {
        "servers": [
            {
                "id": "s1",
                "name": "a",
                "vcpus": 2,
                "ram_mb": 256,
                "disk_gb": 1,
                "image": "tiny",
                "cpu_policy": "dedicated",
                "mem_page_size": "2MB",
                "numa_nodes": 1,
                "numa_placement": [1],
                "ports": ["p1", "p2"],
            }
        ]
    }
    (spec,) = specs_from_document(doc)
    assert spec.numa_placement == (1,) and spec.ports == ("p1", "p2") and spec.page_size_kb == 2048
    plain = ServerSpec("s1", "a", 2, 256, 1, "tiny")
    # Ports are hot-plugged: they never change the build (and so never rebuild a server).
    assert (
        ServerSpec("s1", "a", 2, 256, 1, "tiny", ports=("p9",)).build_hash() == plain.build_hash()
    )
    assert spec.build_hash() != plain.build_hash()


def test_plan_nics_detaches_extra_and_attaches_ready_missing_ports() -> None:
    spec = ServerSpec("s1", "a", 1, 64, 1, "tiny", ports=("p1", "p2", "p3"))
    observed = {"s1": ObservedServer("s1", "running", spec.build_hash(), frozenset({"p1", "old"}))}
    actions = plan_nics([spec], observed, ready={"p1", "p2"})
    assert [(a.kind, a.port_id) for a in actions] == [("detach", "old"), ("attach", "p2")]
    assert plan_nics([spec], observed, ready={"p2"}, rebuilding={"s1"}) == []
    assert plan_nics([spec], {}, ready={"p1"}) == []


def test_random_histories_converge_after_a_crash_anywhere() -> None:
    """Apply a random prefix of each plan (a crash), replan: the end state is always desired."""
    rng = random.Random(4)
    for _ in range(200):
        nets = {
            f"n{i}": NetworkSpec(f"n{i}", segmentation_id=i + 1, mtu=rng.choice([1400, 1450]))
            for i in range(rng.randint(0, 4))
        }
        ports = {
            f"p{i}": PortSpec(f"p{i}", rng.choice(sorted(nets)), f"fa:16:3e:00:00:{i:02x}")
            for i in range(rng.randint(0, 5))
            if nets
        }
        desired = NetDesired(nets, ports)
        model_nets: dict[str, ObservedNetwork] = {
            f"n{i}": ObservedNetwork(f"n{i}", "b", 1500, ("s",)) for i in range(rng.randint(0, 5))
        }
        model_ports: dict[str, ObservedPort] = {
            f"p{i}": ObservedPort(f"p{i}", "t", f"n{rng.randint(0, 5)}", "fe:00:00:00:00:01")
            for i in range(rng.randint(0, 6))
        }
        for _round in range(6):
            actions = plan_network(desired, Observed(model_nets, model_ports), {}, ())
            if not actions:
                break
            cut = rng.randint(0, len(actions)) if _round < 3 else len(actions)
            for action in actions[:cut]:
                if action.kind == "delete_port":
                    model_ports.pop(action.id, None)
                elif action.kind == "delete_network":
                    model_nets.pop(action.id, None)
                    model_ports = {
                        k: v for k, v in model_ports.items() if v.network_id != action.id
                    }
                elif action.kind == "ensure_network":
                    assert action.network is not None
                    model_nets[action.id] = observed_net(action.network)
                elif action.kind == "ensure_port":
                    assert action.port is not None
                    assert action.port.network_id in model_nets  # networks come first
                    model_ports[action.id] = observed_tap(action.port)
        assert plan_network(desired, Observed(model_nets, model_ports), {}, ()) == []
        assert set(model_nets) == set(nets) and set(model_ports) == set(ports)


def test_plan_nics_retries_a_hot_plug_the_guest_has_not_completed() -> None:
    """A NIC in one definition only (live or persistent) is plugged or unplugged again."""
    observed = {
        "s1": ObservedServer(
            "s1", "running", "b", frozenset({"p1", "p2"}), half_plugged=frozenset({"p2"})
        )
    }
    keep_p2 = ServerSpec("s1", "a", 1, 64, 1, "tiny", ports=("p1", "p2"))
    assert [(a.kind, a.port_id) for a in plan_nics([keep_p2], observed, {"p1", "p2"})] == [
        ("attach", "p2")
    ]
    drop_p2 = ServerSpec("s1", "a", 1, 64, 1, "tiny", ports=("p1",))
    assert [(a.kind, a.port_id) for a in plan_nics([drop_p2], observed, {"p1"})] == [
        ("detach", "p2")
    ]


def test_an_unreadable_entry_removes_nothing_and_the_rest_is_made() -> None:
    doc = {
        "networks": [{"kind": "tenant"}, {"id": "n1", "segmentation_id": 7, "mtu": 1450}, 5],
        "ports": [
            {"id": "p1", "network_id": "n1", "mac": "fa:16:3e:00:00:01"},
            {"id": "p2"},
            {"id": "p3", "network_id": "n1", "mac": "x", "numa_node": "zero"},
        ],
    }
    desired = desired_from_document(doc)
    assert list(desired.networks) == ["n1"] and list(desired.ports) == ["p1"]
    assert len(desired.problems) == 4
    # The unreadable entries might be these: they stay until the document can be read.
    observed = Observed({"n9": observed_net(NET)}, {"p2": observed_tap(TAP)})
    claims = {"p3": VfClaim("p3", "0000:01:00.1", configured=True)}
    assert kinds(plan_network(desired, observed, claims, servers=())) == [
        ("ensure_network", "n1"),
        ("ensure_port", "p1"),
    ]
