"""The VNF act of ``skerry demo``: the vRouter template onboarded and instantiated.

The ``vnf-templates/vrouter`` package is uploaded to central's package API,
a VNF instance is instantiated at one site with its external link mapped to a
tenant network (SOL 003 shapes), and the demo waits until the operation is
COMPLETED and every VDU's guest printed its marker. Terminating it removes
every server, port, network and volume it made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from central.cli import table
from central.cli_vnfpkg import csar_bytes
from central.localcluster import REPO, LocalCluster, wait_for

TEMPLATE = REPO / "vnf-templates" / "vrouter"
PKGS = "/vnfpkgm/v1/vnf_packages"
LCM = "/vnflcm/v1"
VNFC_COLUMNS = ("vdu", "server", "site", "status")


def deploy(cluster: LocalCluster, site: str, say: Callable[[str], None]) -> dict[str, Any]:
    """Onboard the vRouter, map its uplink to a new tenant network, instantiate it."""
    api = cluster.client
    pkg = api.post(PKGS, {})
    api.send("PUT", f"{PKGS}/{pkg['id']}/package_content", csar_bytes(TEMPLATE), "application/zip")
    pkg = api.get(f"{PKGS}/{pkg['id']}")
    say(f"VNF package vrouter {pkg['onboardingState']} (vnfdId {pkg['vnfdId'][:8]}…)")
    net = api.post("/v1/networks", {"name": "vr-uplink", "site": site})
    api.post(f"/v1/networks/{net['id']}/subnets", {"cidr": "192.0.2.0/24"})
    inst = api.post(f"{LCM}/vnf_instances", {"vnfdId": pkg["vnfdId"], "vnfInstanceName": "vr1"})
    link = {"id": "uplink", "resourceId": net["id"], "extCps": [{"cpdId": "uplink"}]}
    body = {"flavourId": "default", "extVirtualLinks": [link], "additionalParams": {"site": site}}
    api.post(f"{LCM}/vnf_instances/{inst['id']}/instantiate", body)
    return {"site": site, "package": pkg, "network": net, "instance": inst}


def show(cluster: LocalCluster, made: dict[str, Any], say: Callable[[str], None]) -> None:
    """Wait for the instantiate to complete and every VDU's guest marker; print the VNFCs."""
    api, inst_id = cluster.client, made["instance"]["id"]
    op = wait_for(lambda: _done(api, inst_id), 240, "vRouter instantiate COMPLETED", 0.5)
    info = api.get(f"{LCM}/vnf_instances/{inst_id}")["instantiatedVnfInfo"]
    for vnfc in info["vnfcResourceInfo"]:
        server_id = vnfc["computeResource"]["resourceId"]
        cluster.wait_marker(server_id, timeout=120)
    say(
        f"VNF vr1 (vRouter) instantiated at {made['site']}: operation {op['operationState']}, "
        f"{len(info['vnfcResourceInfo'])} VDUs up"
    )
    print()
    print(table([_vnfc_row(v) for v in info["vnfcResourceInfo"]], VNFC_COLUMNS))


def clean(cluster: LocalCluster, made: dict[str, Any]) -> None:
    """Terminate the VNF (it removes what it made), then drop instance, package, network."""
    api, inst_id = cluster.client, made["instance"]["id"]
    api.post(f"{LCM}/vnf_instances/{inst_id}/terminate", {"terminationType": "FORCEFUL"})
    wait_for(
        lambda: (
            api.get(f"{LCM}/vnf_instances/{inst_id}")["instantiationState"] == "NOT_INSTANTIATED"
        ),
        120,
        "vRouter terminated",
        0.5,
    )
    api.delete(f"{LCM}/vnf_instances/{inst_id}")
    api.patch(f"{PKGS}/{made['package']['id']}", {"operationalState": "DISABLED"})
    api.delete(f"{PKGS}/{made['package']['id']}")
    api.delete(f"/v1/networks/{made['network']['id']}")


def _done(api: Any, instance_id: str) -> dict[str, Any] | None:
    ops = [o for o in api.get(f"{LCM}/vnf_lcm_op_occs") if o["vnfInstanceId"] == instance_id]
    if not ops:
        return None
    op = ops[-1]
    if op["operationState"] in ("FAILED_TEMP", "FAILED", "ROLLED_BACK"):
        raise AssertionError(f"vRouter instantiate {op['operationState']}: {op['error']}")
    return op if op["operationState"] == "COMPLETED" else None


def _vnfc_row(vnfc: dict[str, Any]) -> dict[str, Any]:
    compute = vnfc["computeResource"]
    return {
        "vdu": vnfc["vduId"],
        "server": compute["resourceId"][:8],
        "site": vnfc.get("site") or compute.get("site", "-"),
        "status": vnfc.get("status", "-"),
    }
