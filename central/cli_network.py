"""``skerry`` networking commands: networks, their subnets, and ports (MACs, fixed IPs,
SR-IOV ``direct`` ports, attach/detach). Lists print tables; everything else, and
every command under ``--json``, prints the API's JSON."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from central.client import Client

COMMANDS = ("networks", "subnets", "ports")
Printer = Callable[..., None]

NETWORK_COLUMNS = (
    "id",
    "name",
    "site",
    "kind",
    "segmentation",
    "segmentation_id",
    "physnet",
    "mtu",
    "status",
    "subnets",
)
SUBNET_COLUMNS = ("id", "cidr", "gateway", "allocation_pools", "ip_version")
PORT_COLUMNS = (
    "id",
    "name",
    "network",
    "site",
    "mac_address",
    "fixed_ips",
    "vnic_type",
    "server",
    "status",
    "binding",
    "reason",
)


def _short(value: str | None) -> str:
    return value[:8] if value else "-"


def _or_dash(value: Any) -> Any:
    return "-" if value is None or value == "" else value


def pool(text: str) -> dict[str, str]:
    """``START-END`` (IPv4 or IPv6: neither has a '-') as an allocation pool."""
    start, sep, end = text.partition("-")
    if not (sep and start.strip() and end.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not START-END")
    return {"start": start.strip(), "end": end.strip()}


def binding_text(binding: dict[str, Any] | None) -> str:
    """``tap sk-t-1234abcd`` or ``vf 0000:11:01.0 node 1``, as the site reported it."""
    if not binding:
        return "-"
    kind = binding.get("kind")
    if kind == "tap":
        return f"tap {binding.get('tap', '?')}"
    if kind == "vf":
        text = f"vf {binding.get('pci', '?')}"
        node = binding.get("numa_node")
        return text if node is None else f"{text} node {node}"
    return str(kind or "?")


def network_rows(networks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            **n,
            "id": _short(n["id"]),
            "segmentation_id": _or_dash(n["segmentation_id"]),
            "physnet": _or_dash(n["physnet"]),
            "subnets": ",".join(s["cidr"] for s in n["subnets"]) or "-",
        }
        for n in networks
    ]


def subnet_rows(subnets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Full ids: `subnets delete` and `ports create --subnet` take them, and no other
    # command shows them.
    return [
        {
            **s,
            "allocation_pools": ",".join(f"{p['start']}-{p['end']}" for p in s["allocation_pools"]),
        }
        for s in subnets
    ]


def port_rows(ports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            **p,
            "id": _short(p["id"]),
            "name": _or_dash(p["name"]),
            "network": _short(p["network_id"]),
            "fixed_ips": ",".join(f["ip_address"] for f in p["fixed_ips"]) or "-",
            "server": _short(p["server_id"]),
            "binding": binding_text(p["binding"]),
            "reason": _or_dash(p["reason"]),
        }
        for p in ports
    ]


def add_parsers(sub: Any) -> None:
    networks = sub.add_parser("networks", help="L2 networks at a site, with their subnets")
    n = networks.add_subparsers(dest="action", required=True)
    n.add_parser("list")
    n.add_parser("show").add_argument("id")
    c = n.add_parser("create", help="tenant vxlan by default; vlan needs --segmentation-id")
    c.add_argument("name")
    c.add_argument("--site", required=True)
    c.add_argument(
        "--provider", action="store_true", help="a provider network (cloud admin; vlan or flat)"
    )
    c.add_argument("--segmentation", choices=["vxlan", "vlan", "flat"])
    c.add_argument("--segmentation-id", type=int, metavar="N", help="the VLAN id (vlan only)")
    c.add_argument("--physnet", metavar="P", help="physical network (provider, tenant vlan)")
    c.add_argument("--mtu", type=int, metavar="N", help="default 1450 for vxlan, else 1500")
    n.add_parser("delete", help="refused while the network has ports").add_argument("id")

    subnets = sub.add_parser("subnets", help="IPv4/IPv6 ranges on a network")
    s = subnets.add_subparsers(dest="action", required=True)
    c = s.add_parser("create")
    c.add_argument("network_id")
    c.add_argument("cidr", help="e.g. 10.0.0.0/24 (no host bits)")
    c.add_argument("--gateway", metavar="IP", help="default: the first host address")
    c.add_argument(
        "--pool",
        action="append",
        type=pool,
        dest="pools",
        metavar="START-END",
        help="allocation pool (repeat); default: every host address but the gateway",
    )
    s.add_parser("list").add_argument("network_id")
    d = s.add_parser("delete", help="refused while any of its addresses is allocated")
    d.add_argument("network_id")
    d.add_argument("subnet_id")

    ports = sub.add_parser("ports", help="ports: a MAC and fixed IPs on a network")
    p = ports.add_subparsers(dest="action", required=True)
    p.add_parser("list")
    p.add_parser("show").add_argument("id")
    c = p.add_parser("create", help="default: one address from every subnet of the network")
    c.add_argument("network_id")
    c.add_argument("--name", default="")
    c.add_argument("--mac", metavar="M", help="unicast MAC; default fa:16:3e:xx:xx:xx")
    c.add_argument(
        "--ip", action="append", dest="ips", metavar="ADDR", help="a fixed address (repeat)"
    )
    c.add_argument(
        "--subnet",
        metavar="SUBNET_ID",
        help="take the address from this subnet (with --ip: the addresses are in it)",
    )
    c.add_argument("--direct", action="store_true", help="an SR-IOV VF (vnic_type direct)")
    c.add_argument("--server", metavar="SERVER_ID", help="attach to this server now")
    p.add_parser("delete", help="releases its addresses").add_argument("id")
    a = p.add_parser("attach", help="attach to a server of the project at the port's site")
    a.add_argument("id")
    a.add_argument("server_id")
    p.add_parser("detach").add_argument("id")


def network_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"name": args.name, "site": args.site}
    if args.provider:
        body["kind"] = "provider"
    optional = {
        "segmentation": args.segmentation,
        "segmentation_id": args.segmentation_id,
        "physnet": args.physnet,
        "mtu": args.mtu,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def subnet_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"cidr": args.cidr}
    if args.gateway is not None:
        body["gateway"] = args.gateway
    if args.pools:
        body["allocation_pools"] = args.pools
    return body


def port_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"network_id": args.network_id, "name": args.name}
    if args.mac is not None:
        body["mac_address"] = args.mac
    subnet = {"subnet_id": args.subnet} if args.subnet else {}
    if args.ips:
        body["fixed_ips"] = [{**subnet, "ip_address": ip} for ip in args.ips]
    elif subnet:
        body["fixed_ips"] = [subnet]
    if args.direct:
        body["vnic_type"] = "direct"
    if args.server is not None:
        body["server_id"] = args.server
    return body


def _networks(args: argparse.Namespace, api: Client, show: Printer) -> None:
    if args.action == "list":
        rows = api.get("/v1/networks")["networks"]
        show(args, rows, network_rows(rows), NETWORK_COLUMNS)
    elif args.action == "show":
        show(args, api.get(f"/v1/networks/{args.id}"))
    elif args.action == "create":
        show(args, api.post("/v1/networks", network_body(args)))
    else:
        api.delete(f"/v1/networks/{args.id}")
        print(f"network {args.id} deleted")


def _subnets(args: argparse.Namespace, api: Client, show: Printer) -> None:
    base = f"/v1/networks/{args.network_id}/subnets"
    if args.action == "list":
        rows = api.get(base)["subnets"]
        show(args, rows, subnet_rows(rows), SUBNET_COLUMNS)
    elif args.action == "create":
        show(args, api.post(base, subnet_body(args)))
    else:
        api.delete(f"{base}/{args.subnet_id}")
        print(f"subnet {args.subnet_id} deleted")


def _ports(args: argparse.Namespace, api: Client, show: Printer) -> None:
    if args.action == "list":
        rows = api.get("/v1/ports")["ports"]
        show(args, rows, port_rows(rows), PORT_COLUMNS)
    elif args.action == "show":
        show(args, api.get(f"/v1/ports/{args.id}"))
    elif args.action == "create":
        show(args, api.post("/v1/ports", port_body(args)))
    elif args.action == "attach":
        show(args, api.post(f"/v1/ports/{args.id}/attach", {"server_id": args.server_id}))
    elif args.action == "detach":
        show(args, api.post(f"/v1/ports/{args.id}/detach"))
    else:
        api.delete(f"/v1/ports/{args.id}")
        print(f"port {args.id} deleted")


def run(args: argparse.Namespace, api: Client, show: Printer) -> int:
    {"networks": _networks, "subnets": _subnets, "ports": _ports}[args.cmd](args, api, show)
    return 0
