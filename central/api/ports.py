"""/v1/ports: a MAC and fixed IPs on a network, optionally attached to a server.

A port belongs to the project of the token that created it and lives at its
network's site. Central gives its MAC (``fa:16:3e:..``, unless one is named)
and its addresses: the lowest free one of each subnet's pools unless fixed IPs
are named. ``ip_allocations``' primary key (subnet, address) means no address
is ever given twice; deleting the port releases them. Another project's port is
"not found". Every change publishes the site's next document in the same
transaction.

A ``direct`` port (an SR-IOV VF) needs a network with a physnet the site
reports VFs on. Bound to a server it takes a VF's NUMA node (``numa_node``,
chosen by :mod:`central.placement`: one of the server's nodes when it has a
placement); detaching releases it.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from typing import Any

from quart import Blueprint
from quart_schema import validate_request, validate_response

from central.api.errors import conflict, not_found
from central.api.models import Error
from central.api.network_models import FixedIp, Port, PortAttach, PortCreate, PortList
from central.api.networks import get_network, invalid
from central.api.policy import principal, project_scope, set_audit_target, writer
from central.api.services import services, site_change
from central.api.sites import site_books, site_inventory
from central.ipam import IpamError, fixed_address, in_subnet, lowest_free, normal_mac, random_mac
from central.placement import check_sriov, place_port
from central.store import Store, now

bp = Blueprint("ports", __name__, url_prefix="/v1/ports")


def port_view(row: dict[str, Any]) -> dict[str, Any]:
    ips = services().store.query(
        "SELECT a.subnet_id, a.address AS ip_address FROM ip_allocations a "
        "JOIN subnets s ON s.id = a.subnet_id WHERE a.port_id = ? ORDER BY s.created_at, a.address",
        (row["id"],),
    )
    return {
        "id": row["id"],
        "name": row["name"],
        "project_id": row["project_id"],
        "network_id": row["network_id"],
        "site": row["site"],
        "mac_address": row["mac"],
        "fixed_ips": ips,
        "vnic_type": row["vnic_type"],
        "server_id": row["server_id"],
        "numa_node": row["numa_node"],
        "status": row["status"],
        "reason": row["reason"],
        "binding": json.loads(row["binding"]) if row["binding"] else None,
        "created_at": row["created_at"],
    }


def get_port(port_id: str) -> dict[str, Any]:
    """A port the caller may see, or 404."""
    row = services().store.one("SELECT * FROM ports WHERE id = ?", (port_id,))
    scope = project_scope()
    if row is None or (scope is not None and row["project_id"] != scope):
        raise not_found("port", port_id)
    return row


def check_server(store: Store, server_id: str, project_id: str, site: str) -> dict[str, Any]:
    """The server a port attaches to: same project, same site, not being deleted (else 409)."""
    server = store.one(
        "SELECT site, numa_placement FROM servers WHERE id = ? AND project_id = ? AND deleting = 0",
        (server_id, project_id),
    )
    if server is None:
        raise conflict(
            f"server {server_id!r} does not exist in the port's project", field="server_id"
        )
    if server["site"] != site:
        raise conflict(
            f"server {server_id!r} is at site {server['site']!r}, the network at {site!r}",
            field="server_id",
        )
    return server


def check_direct(store: Store, network: dict[str, Any]) -> None:
    """A direct port's network has a physnet, and its site reports VFs on it (else 409)."""
    if not network["physnet"]:
        raise conflict(
            f"vnic_type 'direct' needs a network with a physnet; network {network['id']!r} "
            f"({network['kind']} {network['segmentation']}) has none",
            field="vnic_type",
        )
    check_sriov(site_inventory(store, network["site"]), network["physnet"], "vnic_type")


def bind_vf(store: Store, port_id: str, physnet: str, server: dict[str, Any]) -> None:
    """Give a direct port bound to ``server`` the NUMA node of a free VF (else 409)."""
    node = place_port(
        site_books(store, server["site"]), physnet, json.loads(server["numa_placement"])
    )
    store.conn.execute("UPDATE ports SET numa_node = ? WHERE id = ?", (node, port_id))


def _requests(
    subnets: list[dict[str, Any]], fixed_ips: list[FixedIp] | None
) -> list[tuple[dict[str, Any], str | None]]:
    """(subnet, wanted address or None) for every address the port gets."""
    if fixed_ips is None:
        return [(s, None) for s in subnets]
    wanted = []
    for fip in fixed_ips:
        if fip.subnet_id is None and fip.ip_address is None:
            raise invalid("fixed_ips", "each fixed IP names a subnet_id, an ip_address or both")
        if fip.subnet_id is not None:
            found = [s for s in subnets if s["id"] == fip.subnet_id]
            if not found:
                raise invalid("fixed_ips", f"subnet {fip.subnet_id!r} is not on the port's network")
            subnet = found[0]
        else:
            assert fip.ip_address is not None
            holding = [s for s in subnets if in_subnet(fip.ip_address, s["cidr"])]
            if not holding:
                raise invalid(
                    "fixed_ips", f"{fip.ip_address} is in no subnet of the port's network"
                )
            subnet = holding[0]
        wanted.append((subnet, fip.ip_address))
    return wanted


def _allocate(store: Store, port_id: str, network_id: str, fixed_ips: list[FixedIp] | None) -> None:
    subnets = store.query(
        "SELECT * FROM subnets WHERE network_id = ? ORDER BY created_at, id", (network_id,)
    )
    for subnet, wanted in _requests(subnets, fixed_ips):
        taken = [
            r["address"]
            for r in store.query(
                "SELECT address FROM ip_allocations WHERE subnet_id = ?", (subnet["id"],)
            )
        ]
        if wanted is not None:
            address: str | None = fixed_address(wanted, subnet["cidr"], subnet["gateway"])
            if address in taken:
                raise IpamError("fixed_ips", f"address {address} is in use", 409)
        else:
            address = lowest_free(json.loads(subnet["allocation_pools"]), taken)
            if address is None:
                raise IpamError("fixed_ips", f"no free address in subnet {subnet['cidr']}", 409)
        try:
            store.conn.execute(
                "INSERT INTO ip_allocations (subnet_id, address, port_id) VALUES (?, ?, ?)",
                (subnet["id"], address, port_id),
            )
        except sqlite3.IntegrityError:
            raise conflict(f"address {address} is in use", field="fixed_ips") from None


def _mac(store: Store, given: str | None) -> str:
    if given is not None:
        mac = normal_mac(given)
        if store.one("SELECT id FROM ports WHERE mac = ?", (mac,)):
            raise conflict(f"mac in use: {mac}", field="mac_address")
        return mac
    while True:
        mac = random_mac()
        if not store.one("SELECT id FROM ports WHERE mac = ?", (mac,)):
            return mac


def insert_port(store: Store, network: dict[str, Any], project_id: str, data: PortCreate) -> str:
    """Record a port on ``network`` (one the project may use) with its MAC and addresses,
    inside the caller's site change; 409 when a direct port has no VF, an address is
    taken, … Returns its id."""
    port_id = str(uuid.uuid4())
    direct = data.vnic_type == "direct"
    if direct:
        check_direct(store, network)
    server = None
    if data.server_id is not None:
        server = check_server(store, data.server_id, project_id, network["site"])
    mac = _mac(store, data.mac_address)
    store.db["ports"].insert(
        {
            "id": port_id,
            "name": data.name,
            "project_id": project_id,
            "network_id": network["id"],
            "mac": mac,
            "vnic_type": data.vnic_type,
            "server_id": data.server_id,
            "site": network["site"],
            "created_at": now(),
        }
    )
    _allocate(store, port_id, network["id"], data.fixed_ips)
    if direct and server is not None:
        bind_vf(store, port_id, network["physnet"], server)
    return port_id


@bp.post("")
@writer
@validate_request(PortCreate)
@validate_response(Port, 201)
@validate_response(Error, 400)
@validate_response(Error, 404)
@validate_response(Error, 409)
async def create_port(data: PortCreate):  # type: ignore[no-untyped-def]
    """Create a port on a network the project may use; optionally attach it to a server."""
    network = get_network(data.network_id)
    with site_change(network["site"]) as store:
        port_id = insert_port(store, network, principal().project_id, data)
    set_audit_target(f"port_id={port_id}")
    return port_view(get_port(port_id)), 201


@bp.get("")
@validate_response(PortList)
async def list_ports():  # type: ignore[no-untyped-def]
    """The project's ports (all of them for a cloud admin)."""
    scope = project_scope()
    store = services().store
    if scope is None:
        rows = store.query("SELECT * FROM ports ORDER BY site, name, id")
    else:
        rows = store.query(
            "SELECT * FROM ports WHERE project_id = ? ORDER BY site, name, id", (scope,)
        )
    return {"ports": [port_view(r) for r in rows]}


@bp.get("/<port_id>")
@validate_response(Port)
@validate_response(Error, 404)
async def show_port(port_id: str):  # type: ignore[no-untyped-def]
    """One port with its MAC and addresses."""
    return port_view(get_port(port_id))


@bp.delete("/<port_id>")
@writer
@validate_response(Error, 404)
async def delete_port(port_id: str):  # type: ignore[no-untyped-def]
    """Delete a port (attached or not) and release its addresses."""
    row = get_port(port_id)
    with site_change(row["site"]) as store:
        store.conn.execute("DELETE FROM ip_allocations WHERE port_id = ?", (port_id,))
        store.conn.execute("DELETE FROM ports WHERE id = ?", (port_id,))
    return "", 204


@bp.post("/<port_id>/attach")
@writer
@validate_request(PortAttach)
@validate_response(Port)
@validate_response(Error, 404)
@validate_response(Error, 409)
async def attach_port(port_id: str, data: PortAttach):  # type: ignore[no-untyped-def]
    """Attach the port to a server of its project at its network's site (a direct port: on a
    free VF on one of the server's NUMA nodes)."""
    row = get_port(port_id)
    if row["server_id"] == data.server_id:
        return port_view(row)
    if row["server_id"] is not None:
        raise conflict(
            f"the port is attached to server {row['server_id']!r}; detach it first",
            field="server_id",
        )
    with site_change(row["site"]) as store:
        server = check_server(store, data.server_id, row["project_id"], row["site"])
        store.conn.execute("UPDATE ports SET server_id = ? WHERE id = ?", (data.server_id, port_id))
        if row["vnic_type"] == "direct":
            network = dict(store.db["networks"].get(row["network_id"]))
            check_direct(store, network)
            bind_vf(store, port_id, network["physnet"], server)
    return port_view(get_port(port_id))


@bp.post("/<port_id>/detach")
@writer
@validate_response(Port)
@validate_response(Error, 404)
async def detach_port(port_id: str):  # type: ignore[no-untyped-def]
    """Detach the port from its server, releasing its VF (nothing to do when not attached)."""
    row = get_port(port_id)
    if row["server_id"] is not None:
        with site_change(row["site"]) as store:
            store.conn.execute(
                "UPDATE ports SET server_id = NULL, numa_node = NULL WHERE id = ?", (port_id,)
            )
    return port_view(get_port(port_id))
