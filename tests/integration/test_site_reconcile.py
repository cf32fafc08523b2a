"""One site's whole reconcile pass: servers, networks, taps, VFs and NUMA placement together.

The real executor with the real drivers: libvirt's test driver for the domains
(a VF's PCI address cannot reach a real QEMU here), LinuxNetwork in a throwaway
namespace, and the simulated SR-IOV + NUMA bed (:mod:`edged.drivers.sriov_simbed`).
Needs root and ``ip netns``; skips with the reason otherwise.
"""

from __future__ import annotations

import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edged.drivers.compute_libvirt import LibvirtCompute
from edged.drivers.domain_xml import domain_name
from edged.drivers.libvirt_testnode import write_test_node
from edged.drivers.network_linux import LinuxNetwork
from edged.drivers.numa import read_topology
from edged.drivers.sriov import SriovInventory, parse_physnets
from edged.drivers.sriov_simbed import SimBed, SimPf, build_bed
from edged.drivers.sriov_vf import SimulatedVfConfig
from edged.executor import Executor
from edged.site_network import SiteNetwork
from edged.state import LocalState
from tests.host import require_netns

SITE = "site-r"
NET_T = "11111111-aaaa"
NET_P = "22222222-bbbb"


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[SimBed]:
    require_netns()
    ns = f"sk-rec-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    made = None
    try:
        made = build_bed(
            tmp_path / "sys",
            ns,
            [SimPf("pf0", 0, 2, "fast"), SimPf("pf1", 1, 2, "fast")],
            {0: (0, 1), 1: (2, 3)},
        )
        yield made
    finally:
        if made is not None:
            made.teardown()
        subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.fixture
def executor(tmp_path: Path, bed: SimBed) -> Iterator[Executor]:
    state = LocalState(tmp_path / "state")
    image_dir = tmp_path / "images"
    (image_dir / "tiny").mkdir(parents=True)
    for name in ("vmlinuz", "initrd.gz"):
        (image_dir / "tiny" / name).write_bytes(b"x")
    compute = LibvirtCompute(
        SITE, write_test_node(tmp_path, cpus=4), tmp_path / "state", image_dir, "test"
    )
    network = SiteNetwork(
        state,
        lambda: LinuxNetwork(
            SITE,
            namespace=bed.namespace,
            tunnel_local_ip="127.0.0.1",
            physnet_uplinks={"fast": "pf0"},
        ),
        SriovInventory(bed.sysfs_root, parse_physnets(bed.sriov_physnets)),
        SimulatedVfConfig(bed.sysfs_root, bed.namespace),
        eager=True,
    )
    yield Executor(
        compute, network=network, topology=lambda: read_topology(bed.sysfs_root), state=state
    )
    network.close()
    compute.close()
    state.close()


def document(servers: list[dict[str, Any]], ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "servers": servers,
        "networks": [
            {
                "id": NET_T,
                "kind": "tenant",
                "segmentation": "vxlan",
                "segmentation_id": 71,
                "physnet": None,
                "mtu": 1450,
                "subnets": [{"id": "sub", "cidr": "10.9.0.0/24"}],
            },
            {
                "id": NET_P,
                "kind": "provider",
                "segmentation": "flat",
                "segmentation_id": None,
                "physnet": "fast",
                "mtu": 1500,
                "subnets": [],
            },
        ],
        "ports": ports,
    }


def server(sid: str, ports: list[str], **fields: Any) -> dict[str, Any]:
    return {
        "id": sid,
        "name": sid,
        "vcpus": 1,
        "ram_mb": 64,
        "disk_gb": 1,
        "image": "tiny",
        "ports": ports,
        **fields,
    }


def link_names(ns: str) -> set[str]:
    out = subprocess.run(
        ["ip", "-n", ns, "-o", "link", "show"], capture_output=True, text=True, check=True
    ).stdout
    return {line.split(":", 2)[1].strip().split("@")[0] for line in out.splitlines()}


def test_a_pass_wires_taps_vfs_and_pinning_into_the_domain_and_undoes_it(
    executor: Executor, bed: SimBed
) -> None:
    before = link_names(bed.namespace)
    tap_port = {
        "id": "p-tap",
        "network_id": NET_T,
        "mac": "fa:16:3e:00:00:0a",
        "vnic_type": "normal",
        "server_id": "s1",
        "fixed_ips": [{"subnet_id": "sub", "ip_address": "10.9.0.5"}],
    }
    vf_port = {
        "id": "p-vf",
        "network_id": NET_P,
        "mac": "fa:16:3e:00:00:0b",
        "vnic_type": "direct",
        "server_id": "s1",
        "numa_node": 1,
        "fixed_ips": [],
    }
    doc = document(
        [server("s1", ["p-tap", "p-vf"], cpu_policy="dedicated", numa_placement=[1])],
        [tap_port, vf_port],
    )
    result = executor.run_pass(1, doc)
    assert result.errors == {}, result.errors
    assert result.report["servers"]["s1"]["state"] == "running"
    assert result.report["networks"][NET_T]["state"] == "active"
    vf_binding = result.report["ports"]["p-vf"]["binding"]
    assert (vf_binding["pf"], vf_binding["numa_node"]) == ("pf1", 1)
    assert result.report["ports"]["p-tap"]["state"] == "active"

    conn = executor.driver.connection()  # type: ignore[attr-defined]
    xml = ET.fromstring(conn.lookupByName(domain_name(SITE, "s1")).XMLDesc())
    ifaces = xml.findall("devices/interface")
    assert [i.get("type") for i in ifaces] == ["ethernet", "hostdev"]
    assert ifaces[0].find("target").get("dev") == result.report["ports"]["p-tap"]["binding"]["tap"]
    addr = ifaces[1].find("source/address")
    assert addr is not None and vf_binding["pci"] == (
        f"{int(addr.get('domain'), 16):04x}:{int(addr.get('bus'), 16):02x}:"
        f"{int(addr.get('slot'), 16):02x}.{int(addr.get('function'), 16)}"
    )
    # The vCPU is pinned to a CPU of node 1, where its VF is.
    assert [p.get("cpuset") for p in xml.findall("cputune/vcpupin")] == ["2"]
    assert "skerry.ip=fa:16:3e:00:00:0a,10.9.0.5/24" in xml.findtext("os/cmdline", "")
    assert executor.state.claims("cpu") == {"2": ("s1", "")}  # type: ignore[union-attr]

    # A second pinned server gets the other CPU of node 1; converged passes do nothing.
    doc["servers"].append(server("s2", [], cpu_policy="dedicated", numa_placement=[1]))
    assert executor.run_pass(2, doc).errors == {}
    assert executor.run_pass(2, doc).actions == []
    assert sorted(executor.state.claims("cpu")) == ["2", "3"]  # type: ignore[union-attr]

    # Everything goes: domains, taps, bridges, VXLAN link, VF claims, CPU claims.
    result = executor.run_pass(3, {"servers": [], "networks": [], "ports": []})
    assert result.errors == {}
    assert executor.driver.list_owned() == {}
    assert executor.state.claims("vf") == {} and executor.state.claims("cpu") == {}  # type: ignore[union-attr]
    assert link_names(bed.namespace) == before


def test_a_server_waits_for_a_port_that_cannot_be_bound(executor: Executor) -> None:
    vf_port = {
        "id": "p-vf",
        "network_id": NET_P,
        "mac": "fa:16:3e:00:00:0b",
        "vnic_type": "direct",
        "server_id": "s1",
        "numa_node": 7,
        "fixed_ips": [],
    }
    doc = document([server("s1", ["p-vf"])], [vf_port])
    result = executor.run_pass(1, doc)
    assert "s1" not in executor.driver.list_owned()
    entry = result.report["servers"]["s1"]
    assert entry["state"] == "building" and "p-vf" in entry["reason"]
    assert "NUMA node 7" in result.report["ports"]["p-vf"]["reason"]
