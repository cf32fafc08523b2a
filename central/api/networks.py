"""/v1/networks and their subnets: L2 segments at one site, and the IPv4/IPv6 ranges on them.

A network lives at exactly one site (``site``). Tenant networks belong to the
project of the token that created them: VXLAN (central gives the lowest free
VNI of ``vxlan_vni_min``..``vxlan_vni_max``, unique across the fleet: sites
may share a host, which has one VXLAN device per VNI) or VLAN (the caller names
the id, and may name the physnet it rides on). Provider networks (cloud admin
only) are a VLAN or the untagged (flat) ``physnet`` of the site, and every
project may use them. A named physnet must be one the site reports, and a VLAN
network needs a site that reports 802.1Q support (else 409). Another project's
tenant network is "not found". Every change publishes the site's next document
in the same transaction. ``status`` is BUILD until the site reports the network.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from quart import Blueprint
from quart_schema import validate_request, validate_response

from central.api.errors import ApiError, conflict, not_found
from central.api.models import Error
from central.api.network_models import (
    Network,
    NetworkCreate,
    NetworkList,
    SubnetCreate,
    SubnetList,
    SubnetView,
)
from central.api.policy import forbidden, principal, project_scope, set_audit_target, writer
from central.api.services import services, site_change
from central.api.sites import get_site, site_inventory
from central.ipam import plan_subnet
from central.placement import check_network
from central.store import Store, now

bp = Blueprint("networks", __name__, url_prefix="/v1/networks")


def invalid(field: str, message: str) -> ApiError:
    """400 naming the field, in the shape request validation uses."""
    return ApiError(400, "invalid_request", message, fields=[{"field": field, "problem": message}])


def subnet_view(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "allocation_pools": json.loads(row["allocation_pools"])}


def network_view(row: dict[str, Any]) -> dict[str, Any]:
    subnets = services().store.query(
        "SELECT * FROM subnets WHERE network_id = ? ORDER BY created_at, id", (row["id"],)
    )
    return {**row, "physnet": row["physnet"] or None, "subnets": [subnet_view(s) for s in subnets]}


def get_network(network_id: str) -> dict[str, Any]:
    """A network the caller may see (its project's, or a provider network), or 404."""
    row = services().store.one("SELECT * FROM networks WHERE id = ?", (network_id,))
    scope = project_scope()
    if row is None or (
        scope is not None and row["project_id"] != scope and row["kind"] != "provider"
    ):
        raise not_found("network", network_id)
    return row


def changeable_network(network_id: str) -> dict[str, Any]:
    """A network the caller may change: a provider network only as cloud admin."""
    row = get_network(network_id)
    if row["kind"] == "provider" and not principal().is_cloud_admin:
        raise forbidden("provider networks are changed by the cloud admin only")
    return row


def _segment(data: NetworkCreate) -> None:
    """Refuse a segmentation that does not fit the kind of network."""
    if data.kind == "provider":
        if not principal().is_cloud_admin:
            raise forbidden("provider networks are created by the cloud admin only")
        if data.physnet is None:
            raise invalid("physnet", "a provider network needs a physnet")
        if data.segmentation == "vxlan":
            raise invalid("segmentation", "a provider network is vlan or flat")
    else:
        if data.physnet is not None and data.segmentation != "vlan":
            raise invalid("physnet", "only a tenant vlan network names a physnet")
        if data.segmentation == "flat":
            raise invalid("segmentation", "a tenant network is vxlan or vlan")
    if data.segmentation == "vlan" and data.segmentation_id is None:
        raise invalid("segmentation_id", "a vlan network needs its VLAN id (1-4094)")
    if data.segmentation != "vlan" and data.segmentation_id is not None:
        why = "central chooses the VNI" if data.segmentation == "vxlan" else "flat has no id"
        raise invalid("segmentation_id", f"segmentation_id is not given for {why}")


def _free_vni(store: Store, lo: int, hi: int) -> int:
    """The lowest VNI of the range no site uses."""
    used = store.conn.execute(
        "SELECT DISTINCT segmentation_id FROM networks WHERE segmentation = 'vxlan' "
        "AND segmentation_id BETWEEN ? AND ? ORDER BY segmentation_id",
        (lo, hi),
    )
    candidate = lo
    for (vni,) in used:
        if vni != candidate:
            break
        candidate += 1
    if candidate > hi:
        raise conflict(f"no free VNI in {lo}..{hi}", field="segmentation_id")
    return candidate


def _check_taken(store: Store, data: NetworkCreate, physnet: str) -> None:
    if data.segmentation == "vlan":
        clash = store.one(
            "SELECT id FROM networks WHERE site = ? AND segmentation = 'vlan' AND physnet = ? "
            "AND segmentation_id = ?",
            (data.site, physnet, data.segmentation_id),
        )
        if clash:
            raise conflict(
                f"VLAN {data.segmentation_id} is in use at site {data.site!r}",
                field="segmentation_id",
            )
    if data.segmentation == "flat" and store.one(
        "SELECT id FROM networks WHERE site = ? AND segmentation = 'flat' AND physnet = ?",
        (data.site, physnet),
    ):
        raise conflict(f"physnet {physnet!r} already has a flat network", field="physnet")


def insert_network(
    store: Store, data: NetworkCreate, project_id: str, vni_range: tuple[int, int]
) -> str:
    """Record a network whose segmentation was checked (inside the caller's site change):
    the site must support it and its segment be free (else 409). Returns its id."""
    network_id = str(uuid.uuid4())
    physnet = data.physnet or ""
    check_network(site_inventory(store, data.site), data.segmentation, data.physnet)
    _check_taken(store, data, physnet)
    seg_id = _free_vni(store, *vni_range) if data.segmentation == "vxlan" else None
    store.db["networks"].insert(
        {
            "id": network_id,
            "name": data.name,
            "project_id": project_id,
            "kind": data.kind,
            "segmentation": data.segmentation,
            "segmentation_id": seg_id if seg_id is not None else data.segmentation_id,
            "physnet": physnet,
            "mtu": data.mtu or (1450 if data.segmentation == "vxlan" else 1500),
            "site": data.site,
            "created_at": now(),
        }
    )
    return network_id


@bp.post("")
@writer
@validate_request(NetworkCreate)
@validate_response(Network, 201)
@validate_response(Error, 400)
@validate_response(Error, 404)
@validate_response(Error, 409)
async def create_network(data: NetworkCreate):  # type: ignore[no-untyped-def]
    """Create a network at one site (provider networks: cloud admin only)."""
    _segment(data)
    get_site(data.site)
    config = services().config
    with site_change(data.site) as store:
        network_id = insert_network(
            store, data, principal().project_id, (config.vxlan_vni_min, config.vxlan_vni_max)
        )
    set_audit_target(f"network_id={network_id}")
    return network_view(get_network(network_id)), 201


@bp.get("")
@validate_response(NetworkList)
async def list_networks():  # type: ignore[no-untyped-def]
    """The project's networks and every provider network (all of them for a cloud admin)."""
    scope = project_scope()
    store = services().store
    if scope is None:
        rows = store.query("SELECT * FROM networks ORDER BY site, name, id")
    else:
        rows = store.query(
            "SELECT * FROM networks WHERE project_id = ? OR kind = 'provider' "
            "ORDER BY site, name, id",
            (scope,),
        )
    return {"networks": [network_view(r) for r in rows]}


@bp.get("/<network_id>")
@validate_response(Network)
@validate_response(Error, 404)
async def show_network(network_id: str):  # type: ignore[no-untyped-def]
    """One network with its subnets."""
    return network_view(get_network(network_id))


@bp.delete("/<network_id>")
@writer
@validate_response(Error, 404)
@validate_response(Error, 409)
async def delete_network(network_id: str):  # type: ignore[no-untyped-def]
    """Delete a network and its subnets; refused (409) while it has ports."""
    row = changeable_network(network_id)
    with site_change(row["site"]) as store:
        ports = [
            r["id"] for r in store.query("SELECT id FROM ports WHERE network_id = ?", (network_id,))
        ]
        if ports:
            raise conflict("the network still has ports", field="ports", ports=ports)
        store.conn.execute("DELETE FROM subnets WHERE network_id = ?", (network_id,))
        store.conn.execute("DELETE FROM networks WHERE id = ?", (network_id,))
    return "", 204


# -- subnets --------------------------------------------------------------------------------


def insert_subnet(store: Store, network_id: str, data: SubnetCreate) -> str:
    """Record a subnet of a network (inside the caller's site change); 400/409 when it
    is malformed or overlaps the network's others. Returns its id."""
    subnet_id = str(uuid.uuid4())
    pools = (
        None if data.allocation_pools is None else [p.model_dump() for p in data.allocation_pools]
    )
    existing = [
        r["cidr"]
        for r in store.query("SELECT cidr FROM subnets WHERE network_id = ?", (network_id,))
    ]
    plan = plan_subnet(data.cidr, data.gateway, pools, existing)
    store.db["subnets"].insert(
        {
            "id": subnet_id,
            "network_id": network_id,
            "cidr": plan.cidr,
            "gateway": plan.gateway,
            "allocation_pools": json.dumps(plan.pools),
            "ip_version": plan.ip_version,
            "created_at": now(),
        }
    )
    return subnet_id


@bp.post("/<network_id>/subnets")
@writer
@validate_request(SubnetCreate)
@validate_response(SubnetView, 201)
@validate_response(Error, 400)
@validate_response(Error, 404)
@validate_response(Error, 409)
async def create_subnet(network_id: str, data: SubnetCreate):  # type: ignore[no-untyped-def]
    """Add an address range to a network (no overlap with its other subnets)."""
    row = changeable_network(network_id)
    with site_change(row["site"]) as store:
        subnet_id = insert_subnet(store, network_id, data)
    set_audit_target(f"network_id={network_id},subnet_id={subnet_id}")
    return subnet_view(
        services().store.one("SELECT * FROM subnets WHERE id = ?", (subnet_id,)) or {}
    ), 201


@bp.get("/<network_id>/subnets")
@validate_response(SubnetList)
@validate_response(Error, 404)
async def list_subnets(network_id: str):  # type: ignore[no-untyped-def]
    """The subnets of a network."""
    return {"subnets": network_view(get_network(network_id))["subnets"]}


@bp.delete("/<network_id>/subnets/<subnet_id>")
@writer
@validate_response(Error, 404)
@validate_response(Error, 409)
async def delete_subnet(network_id: str, subnet_id: str):  # type: ignore[no-untyped-def]
    """Delete a subnet; refused (409) while any of its addresses is allocated."""
    row = changeable_network(network_id)
    store = services().store
    if not store.one(
        "SELECT id FROM subnets WHERE id = ? AND network_id = ?", (subnet_id, network_id)
    ):
        raise not_found("subnet", subnet_id)
    with site_change(row["site"]) as store:
        used = store.query(
            "SELECT address FROM ip_allocations WHERE subnet_id = ? ORDER BY address",
            (subnet_id,),
        )
        if used:
            raise conflict(
                "the subnet has allocated addresses",
                field="fixed_ips",
                addresses=[u["address"] for u in used],
            )
        store.conn.execute("DELETE FROM subnets WHERE id = ?", (subnet_id,))
    return "", 204
