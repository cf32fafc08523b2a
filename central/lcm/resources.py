"""The executor: records a plan's resources at central (through the same functions the
/v1 handlers use) and removes what an operation or an instance made, step by step as
its site reports. Every resource made is tagged in ``vnf_resources`` with its instance
and operation, so terminate and rollback find exactly them."""

from __future__ import annotations

import json
from typing import Any

from central.api.errors import ApiError
from central.api.models import Flavor, ServerCreate
from central.api.network_models import NetworkCreate, Pool, PortCreate, SubnetCreate
from central.api.networks import insert_network, insert_subnet
from central.api.ports import insert_port
from central.api.servers import insert_server
from central.api.services import Services, change_at
from central.api.volume_models import VolumeCreate
from central.api.volumes import attach_row, insert_volume
from central.lcm.plan import Plan, ServerIntent
from central.refusal import Refusal
from central.store import Store, now

KINDS = ("server", "port", "volume", "subnet", "network")


def image_id(store: Store, name: str, project_id: str, what: str) -> str:
    """The active central image named ``name`` the project sees (its own or public);
    a Refusal naming ``what`` needs it when there is none, or several."""
    rows = store.query(
        "SELECT id FROM images WHERE name = ? AND status = 'active' "
        "AND (project_id = ? OR visibility = 'public') ORDER BY id",
        (name, project_id),
    )
    if not rows:
        raise Refusal(
            "image", f"{what} needs image {name!r}: no active central image of that name "
            "is visible to the project (upload it first)", 409
        )  # fmt: skip
    if len(rows) > 1:
        raise Refusal("image", f"{what} needs image {name!r}: several images have that name", 409)
    return rows[0]["id"]


def _tag(store: Store, kind: str, rid: str, op: dict[str, Any], name: str, site: str) -> None:
    store.db["vnf_resources"].insert(
        {
            "kind": kind,
            "resource_id": rid,
            "vnf_instance_id": op["vnf_instance_id"],
            "op_id": op["id"],
            "descriptor_name": name,
            "site": site,
            "created_at": now(),
        }
    )


def _external_network(store: Store, network_id: str, project_id: str, site: str) -> dict:
    row = store.one("SELECT * FROM networks WHERE id = ?", (network_id,))
    if row is None or (row["project_id"] != project_id and row["kind"] != "provider"):
        raise Refusal("extVirtualLinks", f"network {network_id!r} does not exist", 409)
    if row["site"] != site:
        raise Refusal(
            "extVirtualLinks", f"network {network_id!r} is at site {row['site']!r}, not {site!r}",
            409,
        )  # fmt: skip
    return row


def create(
    svc: Services,
    op: dict[str, Any],
    plan: Plan,
    project_id: str,
    existing_vls: dict[str, str] | None = None,
) -> list[str]:
    """Record every resource of ``plan`` at its site in one change (all or nothing): the
    site gets them with its next document. ``existing_vls``: VL -> network id of the
    instance's VLs made before (a scale-out). Returns the warnings of what was not done
    as asked. Raises Refusal / ApiError / ValueError (pydantic) with the cause."""
    site = plan.site
    vni = (svc.config.vxlan_vni_min, svc.config.vxlan_vni_max)
    warnings = list(plan.warnings)
    with change_at(svc, site) as store:
        images = {
            s.name: image_id(store, s.image, project_id, f"VDU {s.vdu!r}") for s in plan.servers
        }
        vl_networks = {
            vl: dict(store.db["networks"].get(nid)) for vl, nid in (existing_vls or {}).items()
        }
        for net in plan.networks:
            if net.segmentation != "vxlan":
                warnings.append(f"VL {net.vl!r} asks for {net.segmentation}; it gets vxlan")
            nid = insert_network(
                store, NetworkCreate(name=net.name, site=site, mtu=net.mtu), project_id, vni
            )
            _tag(store, "network", nid, op, net.vl, site)
            pools = [Pool(start=a, end=b) for a, b in net.pools] or None
            subnet = SubnetCreate(cidr=net.cidr, gateway=net.gateway, allocation_pools=pools)
            _tag(store, "subnet", insert_subnet(store, nid, subnet), op, net.vl, site)
            vl_networks[net.vl] = dict(store.db["networks"].get(nid))
        for server in plan.servers:
            _server(store, op, server, site, project_id, vl_networks, images[server.name])
    return warnings


def _server(
    store: Store,
    op: dict[str, Any],
    server: ServerIntent,
    site: str,
    project_id: str,
    vl_networks: dict[str, dict[str, Any]],
    image: str,
) -> None:
    port_ids = []
    for port in server.ports:
        if port.vl is not None:
            network = vl_networks[port.vl]
        else:
            assert port.network_id is not None
            network = _external_network(store, port.network_id, project_id, site)
        body = PortCreate(network_id=network["id"], name=port.name, vnic_type=port.vnic_type)
        pid = insert_port(store, network, project_id, body)
        _tag(store, "port", pid, op, port.cp, site)
        port_ids.append(pid)
    boot, attached = None, []
    for vol in server.volumes:
        source = (
            image_id(store, vol.image, project_id, f"storage {vol.storage!r}")
            if vol.image
            else None
        )
        body = VolumeCreate(name=vol.name, site=site, size_gb=vol.size_gb, image_id=source)
        vid = insert_volume(store, body, project_id, project_id)
        _tag(store, "volume", vid, op, vol.storage, site)
        if vol.boot:
            boot = vid
        else:
            attached.append(vid)
    body = ServerCreate(
        name=server.name,
        site=site,
        flavor=Flavor(**server.flavor),
        image=image,
        ports=port_ids,
        metadata=server.metadata,
        boot_volume_id=boot,
    )
    sid = insert_server(store, body, project_id, project_id)
    _tag(store, "server", sid, op, server.vdu, site)
    for vid in attached:
        attach_row(store, dict(store.db["volumes"].get(vid)), sid, project_id)


def cause(exc: BaseException) -> str:
    """A failure as an operation's error detail."""
    if isinstance(exc, Refusal | ApiError):
        field = getattr(exc, "field", None) or getattr(exc, "details", {}).get("field")
        return f"{exc.message}" + (f" (field {field})" if field else "")
    return str(exc) or type(exc).__name__


# -- removal -------------------------------------------------------------------------------


def tagged(store: Store, column: str, value: str) -> list[dict[str, Any]]:
    """The tags of an instance (column ``vnf_instance_id``) or an operation (``op_id``)."""
    assert column in ("vnf_instance_id", "op_id")
    return store.query(
        f"SELECT * FROM vnf_resources WHERE {column} = ? ORDER BY created_at", (value,)
    )


def _exists(store: Store, kind: str, rid: str) -> dict[str, Any] | None:
    table = {"server": "servers", "port": "ports", "volume": "volumes"}
    table.update(subnet="subnets", network="networks")
    return store.one(f"SELECT * FROM {table[kind]} WHERE id = ?", (rid,))


def instance_servers(store: Store, instance_id: str) -> dict[str, list[tuple[int, str]]]:
    """VDU -> (index, server id) of the instance's servers (the index ends the name)."""
    out: dict[str, list[tuple[int, str]]] = {}
    for row in store.query(
        "SELECT r.descriptor_name, s.id, s.name FROM vnf_resources r JOIN servers s "
        "ON s.id = r.resource_id WHERE r.kind = 'server' AND r.vnf_instance_id = ?",
        (instance_id,),
    ):
        tail = row["name"].rsplit("-", 1)[-1]
        out.setdefault(row["descriptor_name"], []).append(
            (int(tail) if tail.isdigit() else 0, row["id"])
        )
    return {vdu: sorted(pairs) for vdu, pairs in out.items()}


def server_tags(store: Store, server_ids: list[str]) -> list[dict[str, Any]]:
    """The tags of these servers and of the ports and volumes attached to them."""
    tags = []
    for sid in server_ids:
        ids = [sid]
        ids += [r["id"] for r in store.query("SELECT id FROM ports WHERE server_id = ?", (sid,))]
        ids += [r["id"] for r in store.query("SELECT id FROM volumes WHERE server_id = ?", (sid,))]
        for rid in ids:
            tags += store.query("SELECT * FROM vnf_resources WHERE resource_id = ?", (rid,))
    return tags


def snapshot_server(store: Store, server_id: str) -> dict[str, Any]:
    """What a recreated server needs of the one it replaces: the record, its VDU, its
    ports (NIC order) and volumes."""
    row = dict(store.db["servers"].get(server_id))
    tag = store.one(
        "SELECT descriptor_name FROM vnf_resources WHERE kind = 'server' AND resource_id = ?",
        (server_id,),
    )
    ports = store.query("SELECT id FROM ports WHERE server_id = ? ORDER BY id", (server_id,))
    volumes = store.query(
        "SELECT id, boot FROM volumes WHERE server_id = ? ORDER BY boot DESC, id", (server_id,)
    )
    return {
        "server": {k: row[k] for k in ("id", "name", "site", "image", "metadata")},
        "flavor": {k: row[k] for k in Flavor.model_fields},
        "vdu": tag["descriptor_name"] if tag else "",
        "ports": [p["id"] for p in ports],
        "volumes": [{"id": v["id"], "boot": bool(v["boot"])} for v in volumes],
    }


def recreate_servers(
    svc: Services, op: dict[str, Any], olds: list[dict[str, Any]], project_id: str
) -> list[str]:
    """New servers like ``olds`` (:func:`snapshot_server`) on their ports and volumes, in
    one change (all or none); tagged with ``op``. Returns their ids."""
    made = []
    with change_at(svc, olds[0]["server"]["site"]) as store:
        for old in olds:
            server = old["server"]
            boot = next((v["id"] for v in old["volumes"] if v["boot"]), None)
            body = ServerCreate(
                name=server["name"],
                site=server["site"],
                flavor=Flavor(**old["flavor"]),
                image=server["image"],
                ports=old["ports"],
                metadata=json.loads(server["metadata"] or "{}"),
                boot_volume_id=boot,
            )
            sid = insert_server(store, body, project_id, project_id)
            _tag(store, "server", sid, op, old["vdu"], server["site"])
            for vol in old["volumes"]:
                if not vol["boot"]:
                    attach_row(store, dict(store.db["volumes"].get(vol["id"])), sid, project_id)
            made.append(sid)
    return made


def stop_servers(svc: Services, tags: list[dict[str, Any]]) -> bool:
    """Ask the servers among ``tags`` to stop; True when every one is SHUTOFF (or gone)."""
    done = True
    for tag in (t for t in tags if t["kind"] == "server"):
        row = _exists(svc.store, "server", tag["resource_id"])
        if row is None or row["deleting"]:
            continue
        if row["power"] != "stopped":
            with change_at(svc, row["site"]) as store:
                store.db["servers"].update(row["id"], {"power": "stopped", "updated_at": now()})
        if row["status"] not in ("SHUTOFF", "ERROR"):
            done = False
    return done


def remove_step(svc: Services, tags: list[dict[str, Any]]) -> bool:
    """One step of removing the resources of ``tags``: servers first (the site destroys
    them), then, once they are gone, ports, volumes, subnets and networks. Returns
    whether all are gone at central and their site has seen the change."""
    store = svc.store
    live: dict[str, list[dict[str, Any]]] = {t["kind"]: [] for t in tags}
    for tag in tags:
        row = _exists(store, tag["kind"], tag["resource_id"])
        if row is not None:
            live[tag["kind"]].append(row)
    servers = live.get("server", [])
    for row in servers:
        if not row["deleting"]:
            with change_at(svc, row["site"]) as s:
                s.db["servers"].update(row["id"], {"deleting": 1, "updated_at": now()})
    if servers:
        return False
    sites = {t["site"] for t in tags}
    pending = {
        t["site"]
        for t in tags
        if (row := _exists(store, t["kind"], t["resource_id"])) is not None
        and (t["kind"] in ("port", "subnet", "network") or (t["kind"] == "volume"
             and not row["deleting"]))
    }  # fmt: skip
    for site in sorted(pending):
        with change_at(svc, site) as s:
            for row in live.get("port", []):
                if row["site"] == site:
                    s.conn.execute("DELETE FROM ip_allocations WHERE port_id = ?", (row["id"],))
                    s.conn.execute("DELETE FROM ports WHERE id = ?", (row["id"],))
            for row in live.get("volume", []):
                if row["site"] == site and not row["deleting"]:
                    s.conn.execute(
                        "UPDATE volumes SET deleting = 1, server_id = NULL, boot = 0, "
                        "updated_at = ? WHERE id = ?",
                        (now(), row["id"]),
                    )
            for row in live.get("subnet", []):
                network = s.one("SELECT site FROM networks WHERE id = ?", (row["network_id"],))
                if network is None or network["site"] == site:
                    s.conn.execute("DELETE FROM subnets WHERE id = ?", (row["id"],))
            for row in live.get("network", []):
                if row["site"] != site:
                    continue
                others = s.query("SELECT id FROM ports WHERE network_id = ?", (row["id"],))
                if others:
                    raise Refusal(
                        "network", f"network {row['id']} ({row['name']}) has ports the VNF "
                        f"did not make: {', '.join(o['id'] for o in others)}", 409
                    )  # fmt: skip
                s.conn.execute("DELETE FROM networks WHERE id = ?", (row["id"],))
    if any(_exists(store, "volume", row["id"]) for row in live.get("volume", [])):
        return False
    seen = all(
        (r := store.one("SELECT desired_generation, observed_generation FROM sites WHERE name = ?",
                        (site,))) is None or r["observed_generation"] >= r["desired_generation"]
        for site in sites
    )  # fmt: skip
    return seen


def forget(store: Store, tags: list[dict[str, Any]]) -> None:
    """Drop the tags of removed resources."""
    for tag in tags:
        store.conn.execute(
            "DELETE FROM vnf_resources WHERE kind = ? AND resource_id = ?",
            (tag["kind"], tag["resource_id"]),
        )


def changes(tags: list[dict[str, Any]], change: str) -> dict[str, list[dict[str, Any]]]:
    """SOL 003 ``resourceChanges`` of ``tags``, all with ``changeType`` ``change``."""
    out: dict[str, list[dict[str, Any]]] = {
        "affectedVnfcs": [],
        "affectedVirtualLinks": [],
        "affectedExtLinkPorts": [],
        "affectedVirtualStorages": [],
    }
    for t in tags:
        resource = {"resourceId": t["resource_id"], "vimLevelResourceType": t["kind"]}
        if t["kind"] == "server":
            out["affectedVnfcs"].append(
                {"id": t["resource_id"], "vduId": t["descriptor_name"], "changeType": change,
                 "computeResource": resource}
            )  # fmt: skip
        elif t["kind"] == "network":
            out["affectedVirtualLinks"].append(
                {"id": t["resource_id"], "vnfVirtualLinkDescId": t["descriptor_name"],
                 "changeType": change, "networkResource": resource}
            )  # fmt: skip
        elif t["kind"] == "volume":
            out["affectedVirtualStorages"].append(
                {"id": t["resource_id"], "virtualStorageDescId": t["descriptor_name"],
                 "changeType": change, "storageResource": resource}
            )  # fmt: skip
        elif t["kind"] == "port":
            out["affectedExtLinkPorts"].append(
                {"id": t["resource_id"], "cpdId": t["descriptor_name"], "changeType": change,
                 "resourceHandle": resource}
            )  # fmt: skip
    return out


def dumps_changes(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))
