"""The VNF lifecycle with real daemons, real libvirt and TCG guests: the vRouter template
instantiated at a site (both VDUs ACTIVE, their boot markers seen), then terminated with
nothing left at central or the site; an instantiate that cannot complete ends
FAILED_TEMP with its cause, and its rollback leaves nothing behind."""

from __future__ import annotations

import io
import random
import signal
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

import pytest

from central.localcluster import REPO, LocalCluster, wait_for
from central.vnfd import load_vnfd
from tests.e2e.net_support import links
from tests.e2e.support import add_site, destroy_domain, domains
from tests.host import skip

pytestmark = pytest.mark.e2e

TINY_DISK = REPO / "images" / "build" / "tiny-disk" / "tiny.qcow2"
LCM = "/vnflcm/v1"
PKGS = "/vnfpkgm/v1/vnf_packages"


@pytest.fixture
def cluster(cluster: LocalCluster) -> LocalCluster:
    """The cluster, its central giving VNIs from a range of its own: other tests on this
    host make VXLAN links too, and a VNI is one link per host."""
    base = random.randrange(100_000, 16_000_000)
    cluster.central_overrides.update(vxlan_vni_min=base, vxlan_vni_max=base + 9_999)
    cluster.kill_central(signal.SIGTERM)
    cluster.start_central()
    return cluster


@pytest.fixture
def tiny_disk() -> Path:
    if not TINY_DISK.is_file():
        skip(f"{TINY_DISK} missing (run: bash images/build-tiny-disk.sh)")
    return TINY_DISK


def onboard(cluster: LocalCluster, template: str) -> dict[str, Any]:
    """Create a VNF package and upload the template as a CSAR zip: the package."""
    root = REPO / "vnf-templates" / template
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            zf.writestr(path.relative_to(root).as_posix(), path.read_bytes())
    pkg = cluster.client.post(PKGS, {})
    url = f"{PKGS}/{pkg['id']}/package_content"
    cluster.client.send("PUT", url, data.getvalue(), "application/zip")
    return cluster.client.get(f"{PKGS}/{pkg['id']}")


def uplink(cluster: LocalCluster, site: str, name: str = "uplink") -> dict[str, Any]:
    net = cluster.client.post("/v1/networks", {"name": name, "site": site})
    cluster.client.post(f"/v1/networks/{net['id']}/subnets", {"cidr": "192.0.2.0/24"})
    return net


def instantiate(
    cluster: LocalCluster, instance_id: str, site: str, links_: dict[str, str]
) -> dict[str, Any]:
    body = {
        "flavourId": "default",
        "extVirtualLinks": [
            {"id": cpd, "resourceId": net, "extCps": [{"cpdId": cpd}]}
            for cpd, net in links_.items()
        ],
        "additionalParams": {"site": site},
    }
    cluster.client.post(f"{LCM}/vnf_instances/{instance_id}/instantiate", body)
    return latest_op(cluster, instance_id)


def latest_op(cluster: LocalCluster, instance_id: str) -> dict[str, Any]:
    ops = [o for o in cluster.client.get(f"{LCM}/vnf_lcm_op_occs")
           if o["vnfInstanceId"] == instance_id]  # fmt: skip
    return ops[-1]


def wait_op(cluster: LocalCluster, op_id: str, state: str, timeout: float) -> dict[str, Any]:
    finals = {"COMPLETED", "FAILED_TEMP", "FAILED", "ROLLED_BACK"} - {state}

    def check() -> dict[str, Any] | None:
        occ = cluster.client.get(f"{LCM}/vnf_lcm_op_occs/{op_id}")
        if occ["operationState"] in finals:
            raise AssertionError(f"op {op_id} ended {occ['operationState']}: {occ['error']}")
        return occ if occ["operationState"] == state else None

    return wait_for(check, timeout, f"op {op_id} {state}", interval=0.5)


def central_counts(cluster: LocalCluster) -> dict[str, int]:
    db = sqlite3.connect(cluster.workdir / "central" / "central.db")
    try:
        return {
            t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("servers", "ports", "networks", "subnets", "volumes", "vnf_resources")
        }
    finally:
        db.close()


def site_leftovers(
    cluster: LocalCluster, site: str, ids: list[str], every_link: bool = False
) -> list[str]:
    """What the site still holds: any domain, the links (all of the site's, or those of
    ``ids``) and the files of ``ids``."""
    left = [f"domain {d}" for d in domains(site)]
    left += [
        f"link {ln}"
        for ln in links()
        if f":{site}:" in ln and (every_link or any(ln.endswith(f":{rid}") for rid in ids))
    ]
    for rid in ids:
        left += [f"file {p}" for p in (cluster.workdir / site).rglob(f"*{rid}*")]
    return left


def test_vrouter_instantiate_and_terminate(
    cluster: LocalCluster, sites: list[str], tiny_disk: Path
) -> None:
    site = sites[0]
    add_site(cluster, site, tunnel_local_ip="127.0.0.1")  # the VLs are VXLAN networks
    cluster.upload_image("tiny-disk", tiny_disk, "qcow2")
    before = central_counts(cluster)
    net = uplink(cluster, site)
    pkg = onboard(cluster, "vrouter")
    assert pkg["onboardingState"] == "ONBOARDED" and pkg["usageState"] == "NOT_IN_USE"
    inst = cluster.client.post(
        f"{LCM}/vnf_instances", {"vnfdId": pkg["vnfdId"], "vnfInstanceName": "vr1"}
    )
    assert inst["instantiationState"] == "NOT_INSTANTIATED"
    occ = instantiate(cluster, inst["id"], site, {"uplink": net["id"]})
    assert occ["operation"] == "INSTANTIATE"
    occ = wait_op(cluster, occ["id"], "COMPLETED", timeout=400)
    shown = cluster.client.get(f"{LCM}/vnf_instances/{inst['id']}")
    assert shown["instantiationState"] == "INSTANTIATED"
    vnfcs = shown["instantiatedVnfInfo"]["vnfcResourceInfo"]
    assert sorted(v["vduId"] for v in vnfcs) == ["core", "edge"]
    servers = [cluster.server(v["computeResource"]["resourceId"]) for v in vnfcs]
    assert {s["status"] for s in servers} == {"ACTIVE"}
    assert sorted(s["name"] for s in servers) == ["vr1-core-0", "vr1-edge-0"]
    for server in servers:
        assert server["metadata"]["vnf_instance"] == inst["id"]
        cluster.wait_marker(server["id"], timeout=400)
    assert len(domains(site)) == 2
    assert cluster.client.get(f"{PKGS}/{pkg['id']}")["usageState"] == "IN_USE"
    made = [c["id"] for group in occ["resourceChanges"].values() for c in group]
    assert len(made) >= 2 + 2 + 5  # servers, VLs, ports

    cluster.client.post(
        f"{LCM}/vnf_instances/{inst['id']}/terminate",
        {"terminationType": "GRACEFUL", "gracefulTerminationTimeout": 30},
    )
    term = latest_op(cluster, inst["id"])
    assert term["operation"] == "TERMINATE"
    wait_op(cluster, term["id"], "COMPLETED", timeout=180)
    shown = cluster.client.get(f"{LCM}/vnf_instances/{inst['id']}")
    assert shown["instantiationState"] == "NOT_INSTANTIATED"
    assert cluster.client.get(f"{PKGS}/{pkg['id']}")["usageState"] == "NOT_IN_USE"
    assert central_counts(cluster) == {**before, "networks": 1, "subnets": 1}  # the uplink
    cluster.client.delete(f"/v1/networks/{net['id']}")
    assert central_counts(cluster) == before
    wait_for(
        lambda: not site_leftovers(cluster, site, made, every_link=True),
        60,
        "the site holds nothing",
    )
    cluster.client.delete(f"{LCM}/vnf_instances/{inst['id']}")


def test_instantiate_that_cannot_complete_is_rolled_back(
    cluster: LocalCluster, sites: list[str], tiny_disk: Path
) -> None:
    site = sites[0]
    add_site(cluster, site, tunnel_local_ip="127.0.0.1")
    net = uplink(cluster, site, "clients")
    before = central_counts(cluster)
    vnfd = load_vnfd(REPO / "vnf-templates" / "dns-cache")
    inst = cluster.client.post(f"{LCM}/vnf_instances", {"vnfdId": vnfd.id})

    # No image named tiny-disk: refused at central, nothing made.
    occ = instantiate(cluster, inst["id"], site, {"clients": net["id"]})
    occ = wait_op(cluster, occ["id"], "FAILED_TEMP", timeout=60)
    assert "needs image 'tiny-disk'" in occ["error"]["detail"], occ["error"]
    assert central_counts(cluster) == before
    cluster.client.post(f"{LCM}/vnf_lcm_op_occs/{occ['id']}/rollback")
    wait_op(cluster, occ["id"], "ROLLED_BACK", timeout=60)

    # An image whose bytes were changed after upload: the site refuses it, the server
    # goes to ERROR, the operation FAILED_TEMP with the site's reason.
    image = cluster.upload_image("tiny-disk", tiny_disk, "qcow2")
    path = cluster.workdir / "central" / "images" / image["id"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    occ = instantiate(cluster, inst["id"], site, {"clients": net["id"]})
    # central dies with the operation unfinished; restarted, it takes it further.
    cluster.kill_central(signal.SIGKILL)
    cluster.start_central()
    occ = wait_op(cluster, occ["id"], "FAILED_TEMP", timeout=180)
    assert "is in ERROR" in occ["error"]["detail"], occ["error"]
    assert "sha256 mismatch" in occ["error"]["detail"], occ["error"]
    made = [c["id"] for group in occ["resourceChanges"].values() for c in group]
    assert len(made) == 3  # the server, its volume, its port
    cluster.client.post(f"{LCM}/vnf_lcm_op_occs/{occ['id']}/rollback")
    wait_op(cluster, occ["id"], "ROLLED_BACK", timeout=120)
    assert central_counts(cluster) == before
    wait_for(lambda: not site_leftovers(cluster, site, made), 60, "the site holds nothing")
    shown = cluster.client.get(f"{LCM}/vnf_instances/{inst['id']}")
    assert shown["instantiationState"] == "NOT_INSTANTIATED"
    cluster.client.delete(f"{LCM}/vnf_instances/{inst['id']}")

    # A flavour with direct (SR-IOV) ports at a site without VFs: refused at central.
    upf = load_vnfd(REPO / "vnf-templates" / "upf")
    inst = cluster.client.post(f"{LCM}/vnf_instances", {"vnfdId": upf.id})
    occ = instantiate(cluster, inst["id"], site, {"n3": net["id"], "n6": net["id"]})
    occ = wait_op(cluster, occ["id"], "FAILED_TEMP", timeout=60)
    assert "vnic_type 'direct'" in occ["error"]["detail"], occ["error"]
    cluster.client.post(f"{LCM}/vnf_lcm_op_occs/{occ['id']}/rollback")
    wait_op(cluster, occ["id"], "ROLLED_BACK", timeout=60)
    assert central_counts(cluster) == before


def test_vfirewall_scales_out_and_in_by_one_step(
    cluster: LocalCluster, sites: list[str], tiny_disk: Path
) -> None:
    site = sites[0]
    add_site(cluster, site, tunnel_local_ip="127.0.0.1")
    cluster.upload_image("tiny-disk", tiny_disk, "qcow2")
    outside = uplink(cluster, site, "outside")
    vnfd = load_vnfd(REPO / "vnf-templates" / "vfirewall")
    inst = cluster.client.post(f"{LCM}/vnf_instances", {"vnfdId": vnfd.id, "vnfInstanceName": "fw"})
    occ = instantiate(cluster, inst["id"], site, {"outside": outside["id"]})
    wait_op(cluster, occ["id"], "COMPLETED", timeout=400)
    assert len(domains(site)) == 2  # manager + one filter (level small)

    scale = f"{LCM}/vnf_instances/{inst['id']}/scale"
    cluster.client.post(scale, {"type": "SCALE_OUT", "aspectId": "filter_instances"})
    occ = wait_op(cluster, latest_op(cluster, inst["id"])["id"], "COMPLETED", timeout=400)
    (added,) = occ["resourceChanges"]["affectedVnfcs"]
    server = cluster.wait_marker(added["id"], timeout=400)
    assert server["name"] == "fw-filter-1" and server["status"] == "ACTIVE"
    assert len(domains(site)) == 3
    shown = cluster.client.get(f"{LCM}/vnf_instances/{inst['id']}")
    assert shown["instantiatedVnfInfo"]["scaleStatus"] == [
        {"aspectId": "filter_instances", "scaleLevel": 1}
    ]

    cluster.client.post(scale, {"type": "SCALE_IN", "aspectId": "filter_instances"})
    occ = wait_op(cluster, latest_op(cluster, inst["id"])["id"], "COMPLETED", timeout=180)
    (removed,) = occ["resourceChanges"]["affectedVnfcs"]
    assert removed["id"] == added["id"] and removed["changeType"] == "REMOVED"
    assert len(domains(site)) == 2
    assert f"skerry-{site}-{added['id']}" not in domains(site)

    cluster.client.post(
        f"{LCM}/vnf_instances/{inst['id']}/terminate", {"terminationType": "FORCEFUL"}
    )
    wait_op(cluster, latest_op(cluster, inst["id"])["id"], "COMPLETED", timeout=180)
    assert domains(site) == {}


def test_dns_cache_healed_after_its_domain_was_destroyed(
    cluster: LocalCluster, sites: list[str], tiny_disk: Path
) -> None:
    site = sites[0]
    add_site(cluster, site, tunnel_local_ip="127.0.0.1")  # "clients" is a VXLAN network
    cluster.upload_image("tiny-disk", tiny_disk, "qcow2")
    clients = uplink(cluster, site, "clients")
    vnfd = load_vnfd(REPO / "vnf-templates" / "dns-cache")
    inst = cluster.client.post(
        f"{LCM}/vnf_instances", {"vnfdId": vnfd.id, "vnfInstanceName": "dns"}
    )
    occ = instantiate(cluster, inst["id"], site, {"clients": clients["id"]})
    occ = wait_op(cluster, occ["id"], "COMPLETED", timeout=400)
    (vnfc,) = occ["resourceChanges"]["affectedVnfcs"]
    (storage,) = occ["resourceChanges"]["affectedVirtualStorages"]
    cluster.wait_marker(vnfc["id"], timeout=400)

    destroy_domain(f"skerry-{site}-{vnfc['id']}")
    cluster.client.post(
        f"{LCM}/vnf_instances/{inst['id']}/heal",
        {"vnfcInstanceId": [vnfc["id"]], "cause": "domain destroyed"},
    )
    occ = wait_op(cluster, latest_op(cluster, inst["id"])["id"], "COMPLETED", timeout=400)
    removed, added = occ["resourceChanges"]["affectedVnfcs"]
    assert removed["id"] == vnfc["id"] and added["changeType"] == "ADDED"
    server = cluster.wait_marker(added["id"], timeout=400)
    assert server["name"] == "dns-dns-0" and server["status"] == "ACTIVE"
    assert domains(site) == {f"skerry-{site}-{added['id']}": True}
    volume = cluster.client.get(f"/v1/volumes/{storage['id']}")
    assert volume["server_id"] == added["id"]
    wait_for(
        lambda: cluster.client.get(f"/v1/volumes/{storage['id']}")["attached_to"] == added["id"],
        60,
        "the volume attached to the new server at the site",
    )
    cluster.client.post(
        f"{LCM}/vnf_instances/{inst['id']}/terminate", {"terminationType": "FORCEFUL"}
    )
    wait_op(cluster, latest_op(cluster, inst["id"])["id"], "COMPLETED", timeout=180)
    assert domains(site) == {}
