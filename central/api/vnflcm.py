"""/vnflcm/v1: VNF instances and their lifecycle operation occurrences (ETSI NFV-SOL 003
shapes). An instance belongs to the project of the token that created it; another
project's instance or operation is "not found". Instantiate and terminate answer 202
with ``Location`` of the occurrence, which :class:`central.lcm.engine.LcmEngine` drives;
one operation at a time per instance (409 otherwise)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from quart import Blueprint, current_app
from quart_schema import validate_request

from central.api.errors import conflict, not_found
from central.api.networks import get_network, invalid
from central.api.policy import principal, project_scope, set_audit_target, writer
from central.api.services import services
from central.api.sites import get_site
from central.api.vnflcm_models import (
    CreateVnfRequest,
    HealVnfRequest,
    InstantiateVnfRequest,
    ScaleVnfRequest,
    TerminateVnfRequest,
)
from central.lcm.catalog import VnfdNotFound
from central.lcm.engine import LcmEngine
from central.lcm.plan import PlanError, plan_instantiate, scale_target
from central.lcm.records import Busy, current_op, move, start_op
from central.lcm.states import IllegalMove, after_request
from central.store import now

bp = Blueprint("vnflcm", __name__, url_prefix="/vnflcm/v1")
BASE = "/vnflcm/v1"


def engine() -> LcmEngine:
    return current_app.extensions["skerry.lcm"]


def _time(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z")


# -- views ----------------------------------------------------------------------------------


def _instantiated_info(row: dict[str, Any]) -> dict[str, Any]:
    store = services().store
    tags = store.query(
        "SELECT * FROM vnf_resources WHERE vnf_instance_id = ? ORDER BY created_at, kind",
        (row["id"],),
    )
    own_networks = {t["resource_id"] for t in tags if t["kind"] == "network"}
    vnfcs, ext_cps, vls, storages = [], [], [], []
    for t in tags:
        rid = t["resource_id"]
        if t["kind"] == "server":
            server = store.one("SELECT status, site FROM servers WHERE id = ?", (rid,))
            vnfcs.append(
                {
                    "id": rid,
                    "vduId": t["descriptor_name"],
                    "computeResource": {"resourceId": rid, "vimLevelResourceType": "server",
                                        "site": t["site"]},
                    "status": server["status"] if server else "DELETED",
                }
            )  # fmt: skip
        elif t["kind"] == "port":
            port = store.one("SELECT network_id FROM ports WHERE id = ?", (rid,))
            if port is not None and port["network_id"] not in own_networks:
                ext_cps.append(
                    {"id": rid, "cpdId": t["descriptor_name"],
                     "extLinkPortId": rid, "networkId": port["network_id"]}
                )  # fmt: skip
        elif t["kind"] == "network":
            vls.append(
                {"id": rid, "vnfVirtualLinkDescId": t["descriptor_name"],
                 "networkResource": {"resourceId": rid, "vimLevelResourceType": "network"}}
            )  # fmt: skip
        elif t["kind"] == "volume":
            storages.append(
                {"id": rid, "virtualStorageDescId": t["descriptor_name"],
                 "storageResource": {"resourceId": rid, "vimLevelResourceType": "volume"}}
            )  # fmt: skip
    return {
        "flavourId": row["flavour_id"],
        "instantiationLevelId": row["level_id"],
        "vnfState": row["vnf_state"],
        "site": row["site"],
        "scaleStatus": json.loads(row["scale_status"] or "[]"),
        "extCpInfo": ext_cps,
        "vnfcResourceInfo": vnfcs,
        "vnfVirtualLinkResourceInfo": vls,
        "virtualStorageResourceInfo": storages,
    }


def instance_view(row: dict[str, Any]) -> dict[str, Any]:
    here = f"{BASE}/vnf_instances/{row['id']}"
    view = {
        "id": row["id"],
        "vnfInstanceName": row["name"] or None,
        "vnfInstanceDescription": row["description"] or None,
        "vnfdId": row["vnfd_id"],
        "vnfProvider": row["vnf_provider"],
        "vnfProductName": row["vnf_product_name"],
        "vnfSoftwareVersion": row["vnf_software_version"],
        "vnfdVersion": row["vnfd_version"],
        "instantiationState": row["instantiation_state"],
        "_links": {
            "self": {"href": here},
            "instantiate": {"href": f"{here}/instantiate"},
            "terminate": {"href": f"{here}/terminate"},
            "scale": {"href": f"{here}/scale"},
            "heal": {"href": f"{here}/heal"},
        },
    }
    if row["instantiation_state"] == "INSTANTIATED":
        view["instantiatedVnfInfo"] = _instantiated_info(row)
    return view


def op_view(row: dict[str, Any]) -> dict[str, Any]:
    here = f"{BASE}/vnf_lcm_op_occs/{row['id']}"
    links = {
        "self": {"href": here},
        "vnfInstance": {"href": f"{BASE}/vnf_instances/{row['vnf_instance_id']}"},
    }
    if row["operation_state"] == "FAILED_TEMP":
        for action in ("retry", "rollback", "fail"):
            links[action] = {"href": f"{here}/{action}"}
    return {
        "id": row["id"],
        "operationState": row["operation_state"],
        "stateEnteredTime": _time(row["state_entered_time"]),
        "startTime": _time(row["start_time"]),
        "vnfInstanceId": row["vnf_instance_id"],
        "grantId": None,
        "operation": row["operation"],
        "isAutomaticInvocation": bool(row["is_automatic"]),
        "operationParams": json.loads(row["operation_params"] or "{}"),
        "isCancelPending": bool(row["is_cancel_pending"]),
        "error": json.loads(row["error"]) if row["error"] else None,
        "resourceChanges": json.loads(row["resource_changes"] or "{}"),
        "warnings": json.loads(row["warnings"] or "[]"),
        "_links": links,
    }


# -- lookups ---------------------------------------------------------------------------------


def get_instance(instance_id: str) -> dict[str, Any]:
    """An instance the caller may see, or 404."""
    row = services().store.one("SELECT * FROM vnf_instances WHERE id = ?", (instance_id,))
    scope = project_scope()
    if row is None or (scope is not None and row["project_id"] != scope):
        raise not_found("vnf instance", instance_id)
    return row


def get_op(op_id: str) -> dict[str, Any]:
    """An operation occurrence the caller may see, or 404."""
    row = services().store.one("SELECT * FROM vnf_lcm_op_occs WHERE id = ?", (op_id,))
    scope = project_scope()
    if row is None or (scope is not None and row["project_id"] != scope):
        raise not_found("vnf lcm op occ", op_id)
    return row


def _resolve(vnfd_id: str, project_id: str):  # type: ignore[no-untyped-def]
    try:
        return engine().resolve(services().store, vnfd_id, project_id)
    except VnfdNotFound as exc:
        raise conflict(str(exc), field="vnfdId") from None


# -- instances -------------------------------------------------------------------------------


@bp.post("/vnf_instances")
@writer
@validate_request(CreateVnfRequest)
async def create_instance(data: CreateVnfRequest):  # type: ignore[no-untyped-def]
    """Create a VNF instance of an onboarded VNFD (NOT_INSTANTIATED)."""
    project_id = principal().project_id
    vnfd, package = _resolve(data.vnfdId, project_id)
    instance_id = str(uuid.uuid4())
    stamp = now()
    store = services().store
    with store.transaction():
        store.db["vnf_instances"].insert(
            {
                "id": instance_id,
                "name": data.vnfInstanceName or "",
                "description": data.vnfInstanceDescription or "",
                "project_id": project_id,
                "vnfd_id": vnfd.id,
                "vnf_provider": vnfd.provider,
                "vnf_product_name": vnfd.product_name,
                "vnf_software_version": vnfd.software_version,
                "vnfd_version": vnfd.descriptor_version,
                "package_id": package,
                "instantiation_state": "NOT_INSTANTIATED",
                "created_at": stamp,
                "updated_at": stamp,
            }
        )
    set_audit_target(f"vnf_instance_id={instance_id}")
    row = get_instance(instance_id)
    return instance_view(row), 201, {"Location": f"{BASE}/vnf_instances/{instance_id}"}


@bp.get("/vnf_instances")
async def list_instances():  # type: ignore[no-untyped-def]
    """The project's VNF instances (all of them for a cloud admin), a JSON array."""
    scope = project_scope()
    store = services().store
    if scope is None:
        rows = store.query("SELECT * FROM vnf_instances ORDER BY created_at, id")
    else:
        rows = store.query(
            "SELECT * FROM vnf_instances WHERE project_id = ? ORDER BY created_at, id", (scope,)
        )
    return [instance_view(r) for r in rows]


@bp.get("/vnf_instances/<instance_id>")
async def show_instance(instance_id: str):  # type: ignore[no-untyped-def]
    """One VNF instance, with ``instantiatedVnfInfo`` when INSTANTIATED."""
    return instance_view(get_instance(instance_id))


@bp.delete("/vnf_instances/<instance_id>")
@writer
async def delete_instance(instance_id: str):  # type: ignore[no-untyped-def]
    """Delete a NOT_INSTANTIATED instance with no operation in progress (409 otherwise);
    its finished operation occurrences go with it."""
    row = get_instance(instance_id)
    store = services().store
    with store.transaction():
        if row["instantiation_state"] != "NOT_INSTANTIATED":
            raise conflict("the VNF instance is INSTANTIATED; terminate it first",
                           field="instantiationState")  # fmt: skip
        running = current_op(store, instance_id)
        if running is not None:
            raise conflict(f"operation {running['id']} is {running['operation_state']}",
                           field="operation")  # fmt: skip
        if store.one("SELECT kind FROM vnf_resources WHERE vnf_instance_id = ?", (instance_id,)):
            raise conflict("resources of a failed operation remain; terminate the instance",
                           field="operation")  # fmt: skip
        store.conn.execute("DELETE FROM vnf_lcm_op_occs WHERE vnf_instance_id = ?", (instance_id,))
        store.conn.execute("DELETE FROM vnf_instances WHERE id = ?", (instance_id,))
    return "", 204


def _start(row: dict[str, Any], operation: str, body: dict[str, Any]):  # type: ignore[no-untyped-def]
    store = services().store
    with store.transaction():
        try:
            op = start_op(store, row, operation, body)
        except Busy as exc:
            raise conflict(str(exc), field="operation") from None
    engine().wake()
    set_audit_target(f"vnf_instance_id={row['id']},vnf_lcm_op_occ_id={op['id']}")
    return "", 202, {"Location": f"{BASE}/vnf_lcm_op_occs/{op['id']}"}


@bp.post("/vnf_instances/<instance_id>/instantiate")
@writer
@validate_request(InstantiateVnfRequest)
async def instantiate(instance_id: str, data: InstantiateVnfRequest):  # type: ignore[no-untyped-def]
    """Instantiate at a site: 202 and the occurrence's ``Location``; 400 when the request
    does not fit the VNFD, 409 when the instance is INSTANTIATED or busy."""
    row = get_instance(instance_id)
    if row["instantiation_state"] != "NOT_INSTANTIATED":
        raise conflict("the VNF instance is already INSTANTIATED", field="instantiationState")
    site = data.additionalParams.site
    get_site(site)
    body = data.model_dump(exclude_none=True)
    for i, link in enumerate(data.extVirtualLinks):
        network = get_network(link.resourceId)
        if network["site"] != site:
            raise conflict(
                f"network {link.resourceId!r} is at site {network['site']!r}, not {site!r}",
                field=f"extVirtualLinks[{i}].resourceId",
            )
    vnfd, _package = _resolve(row["vnfd_id"], row["project_id"])
    try:
        links = body.get("extVirtualLinks", [])
        plan_instantiate(
            vnfd, data.flavourId, data.instantiationLevelId, site, links, row["id"], "vnf"
        )
    except PlanError as exc:
        raise invalid(exc.field, exc.message) from None
    return _start(row, "INSTANTIATE", body)


@bp.post("/vnf_instances/<instance_id>/terminate")
@writer
@validate_request(TerminateVnfRequest)
async def terminate(instance_id: str, data: TerminateVnfRequest):  # type: ignore[no-untyped-def]
    """Terminate (GRACEFUL: servers stopped first, up to the timeout): 202 and the
    occurrence's ``Location``; 409 when NOT_INSTANTIATED or busy."""
    row = get_instance(instance_id)
    leftovers = services().store.one(
        "SELECT kind FROM vnf_resources WHERE vnf_instance_id = ?", (instance_id,)
    )
    # NOT_INSTANTIATED with resources: an instantiate given up (fail) left them.
    if row["instantiation_state"] != "INSTANTIATED" and leftovers is None:
        raise conflict("the VNF instance is NOT_INSTANTIATED", field="instantiationState")
    return _start(row, "TERMINATE", data.model_dump(exclude_none=True))


@bp.post("/vnf_instances/<instance_id>/scale")
@writer
@validate_request(ScaleVnfRequest)
async def scale(instance_id: str, data: ScaleVnfRequest):  # type: ignore[no-untyped-def]
    """Scale an aspect out or in by steps: 202 and the occurrence's ``Location``; 400 when
    the aspect is unknown or the level would leave 0..max, 409 when NOT_INSTANTIATED or
    busy."""
    row = get_instance(instance_id)
    if row["instantiation_state"] != "INSTANTIATED":
        raise conflict("the VNF instance is NOT_INSTANTIATED", field="instantiationState")
    vnfd, _package = _resolve(row["vnfd_id"], row["project_id"])
    status = {s["aspectId"]: s["scaleLevel"] for s in json.loads(row["scale_status"] or "[]")}
    try:
        flavour = vnfd.flavours[row["flavour_id"]]
        current = status.get(data.aspectId, 0)
        scale_target(flavour, data.aspectId, current, data.type, data.numberOfSteps)
    except PlanError as exc:
        raise invalid(exc.field, exc.message) from None
    return _start(row, "SCALE", data.model_dump())


@bp.post("/vnf_instances/<instance_id>/heal")
@writer
@validate_request(HealVnfRequest)
async def heal(instance_id: str, data: HealVnfRequest):  # type: ignore[no-untyped-def]
    """Heal VNFC instances (servers of the instance): RESTART stops and starts them,
    RECREATE replaces them by new servers on the same ports and volumes. 202 and the
    occurrence's ``Location``; 400 naming a VNFC that is not the instance's."""
    row = get_instance(instance_id)
    if row["instantiation_state"] != "INSTANTIATED":
        raise conflict("the VNF instance is NOT_INSTANTIATED", field="instantiationState")
    store = services().store
    for i, vnfc in enumerate(data.vnfcInstanceId):
        if not store.one(
            "SELECT kind FROM vnf_resources WHERE kind = 'server' AND resource_id = ? "
            "AND vnf_instance_id = ?",
            (vnfc, instance_id),
        ):
            raise invalid(f"vnfcInstanceId[{i}]", f"{vnfc!r} is not a VNFC of the instance")
    return _start(row, "HEAL", data.model_dump(exclude_none=True))


# -- operation occurrences -----------------------------------------------------------------


@bp.get("/vnf_lcm_op_occs")
async def list_ops():  # type: ignore[no-untyped-def]
    """The project's operation occurrences (all for a cloud admin), a JSON array."""
    scope = project_scope()
    store = services().store
    if scope is None:
        rows = store.query("SELECT * FROM vnf_lcm_op_occs ORDER BY start_time, id")
    else:
        rows = store.query(
            "SELECT * FROM vnf_lcm_op_occs WHERE project_id = ? ORDER BY start_time, id",
            (scope,),
        )
    return [op_view(r) for r in rows]


@bp.get("/vnf_lcm_op_occs/<op_id>")
async def show_op(op_id: str):  # type: ignore[no-untyped-def]
    """One operation occurrence."""
    return op_view(get_op(op_id))


def _request(op_id: str, request: str):  # type: ignore[no-untyped-def]
    row = get_op(op_id)
    store = services().store
    with store.transaction():
        fresh = store.one("SELECT * FROM vnf_lcm_op_occs WHERE id = ?", (op_id,)) or row
        try:
            kind = fresh["operation"]
            if kind == "SCALE" and json.loads(fresh["operation_params"]).get("type") == "SCALE_IN":
                kind = "SCALE_IN"
            target = after_request(fresh["operation_state"], request, kind)
        except IllegalMove as exc:
            raise conflict(str(exc), field="operationState") from None
        fields: dict[str, Any] = {"deadline": None}
        if request == "retry":
            # A retried instantiate or scale-out first removes what the failed attempt made.
            again = fresh["operation"] in ("INSTANTIATE", "SCALE") and kind != "SCALE_IN"
            fields["phase"] = "cleanup" if again else fresh["phase"]
            fields["error"] = None
        elif request == "rollback":
            fields["phase"] = "remove"
        else:
            fields["phase"] = ""
        move(store, op_id, target, **fields)
    engine().wake()
    return "", 202, {"Location": f"{BASE}/vnf_lcm_op_occs/{op_id}"}


@bp.post("/vnf_lcm_op_occs/<op_id>/retry")
@writer
async def retry_op(op_id: str):  # type: ignore[no-untyped-def]
    """Retry a FAILED_TEMP operation (PROCESSING again); 409 from any other state."""
    return _request(op_id, "retry")


@bp.post("/vnf_lcm_op_occs/<op_id>/rollback")
@writer
async def rollback_op(op_id: str):  # type: ignore[no-untyped-def]
    """Roll back a FAILED_TEMP operation: what it made is removed (ROLLING_BACK, then
    ROLLED_BACK); 409 from any other state or for a terminate."""
    return _request(op_id, "rollback")


@bp.post("/vnf_lcm_op_occs/<op_id>/fail")
@writer
async def fail_op(op_id: str):  # type: ignore[no-untyped-def]
    """Give up a FAILED_TEMP operation (FAILED; what it made stays until terminated
    or cleaned up); 409 from any other state."""
    return _request(op_id, "fail")
