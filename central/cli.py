"""``skerry``: the operator CLI (sites, servers, networks and ports, VNF descriptors, the demo)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from central import cli_identity, cli_network, cli_vnfd, cli_vnfpkg, cli_volume
from central.client import ApiFailure, Client

DEFAULT_API = os.environ.get("SKERRY_API", "http://127.0.0.1:8700")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as a plain aligned text table."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def site_rows(sites: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for s in sites:
        inv = s.get("inventory") or {}
        seen = s.get("last_seen")
        rows.append(
            {
                "name": s["name"],
                "state": s["state"],
                "generation": f"{s['acked_generation']}/{s['desired_generation']}",
                "observed": s["observed_generation"],
                "last_seen": f"{time.time() - seen:.1f}s ago" if seen else "never",
                "cpus": inv.get("cpus", "-"),
                "ram_mb": inv.get("ram_mb", "-"),
                "hypervisor": inv.get("hypervisor", "-"),
            }
        )
    return rows


SITE_COLUMNS = (
    "name",
    "state",
    "generation",
    "observed",
    "last_seen",
    "cpus",
    "ram_mb",
    "hypervisor",
)
SERVER_COLUMNS = ("id", "name", "site", "status", "power", "flavor", "image", "reason")


def flavor_text(f: dict[str, Any], placement: list[int] | None = None) -> str:
    """``2c/1024M/1G``, plus what is not the default: ``dedicated 2MB numa=0,1``."""
    parts = [f"{f['vcpus']}c/{f['ram_mb']}M/{f['disk_gb']}G"]
    if f.get("cpu_policy", "shared") != "shared":
        parts.append(f["cpu_policy"])
    if f.get("mem_page_size", "small") != "small":
        parts.append(f["mem_page_size"])
    if placement:
        parts.append("numa=" + ",".join(map(str, placement)))
    elif f.get("numa_nodes", 1) > 1:
        parts.append(f"cells={f['numa_nodes']}")
    return " ".join(parts)


def server_rows(servers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for s in servers:
        flavor = flavor_text(s["flavor"], s.get("numa_placement"))
        rows.append({**s, "id": s["id"][:8], "flavor": flavor})
    return rows


def meta_pair(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (the value may be empty or hold '=') for ``servers create --meta``."""
    key, sep, value = text.partition("=")
    if not (sep and key):
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def server_body(args: argparse.Namespace) -> dict[str, Any]:
    """``servers create``'s request: only what differs from the API's defaults is sent."""
    flavor: dict[str, Any] = {"vcpus": args.vcpus, "ram_mb": args.ram_mb, "disk_gb": args.disk_gb}
    if args.dedicated:
        flavor["cpu_policy"] = "dedicated"
    if args.page_size is not None:
        flavor["mem_page_size"] = args.page_size
    if args.numa_nodes is not None:
        flavor["numa_nodes"] = args.numa_nodes
    body: dict[str, Any] = {
        "name": args.name,
        "site": args.site,
        "image": args.image,
        "flavor": flavor,
        "power": "stopped" if args.stopped else "running",
    }
    if args.ports:
        body["ports"] = args.ports
    if args.meta:
        body["metadata"] = dict(args.meta)
    if args.boot_volume:
        body["boot_volume_id"] = args.boot_volume
    return body


def _print(args: argparse.Namespace, data: Any, rows: Any = None, cols: Any = None) -> None:
    if args.json or rows is None:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(table(rows, cols))


def enroll(api: Client, args: argparse.Namespace) -> int:
    """``sites enroll NAME``: register the site's CURVE public key (creating the site if new)."""
    from central import zap

    secret_file = args.write_secret
    if secret_file is not None:
        pair = zap.new_keypair()
        try:
            zap.write_key_file(secret_file, pair)  # created 0600, never overwritten
        except OSError as exc:
            print(f"skerry: cannot write {secret_file}: {exc.strerror}", file=sys.stderr)
            return 1
        public_key = pair.public
    else:
        public_key = args.public_key
    try:
        try:
            api.get(f"/v1/sites/{args.name}")
            exists = True
        except ApiFailure as exc:
            if exc.status != 404:
                raise
            exists = False
        if exists:
            site = api.call("PUT", f"/v1/sites/{args.name}/key", {"public_key": public_key})
        else:
            site = api.post("/v1/sites", {"name": args.name, "public_key": public_key})
        central_key = api.get("/v1/hub")["public_key"]
    except ApiFailure:
        if secret_file is not None:
            secret_file.unlink(missing_ok=True)  # not enrolled: do not leave a useless secret
        raise
    if args.json:
        print(json.dumps({"site": site, "central_public_key": central_key}, indent=2))
        return 0
    print(f"site {args.name}: {'key rotated' if exists else 'created'}")
    print(f"site public key:    {public_key}")
    print(f"central public key: {central_key}")
    if secret_file is not None:
        print(f"secret key file:    {secret_file} (mode 0600)")
        print(f"edged config:       curve_secret_key_file: {secret_file}")
        print(f"                    central_public_key: '{central_key}'")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.cmd in cli_vnfd.COMMANDS:  # local: no central needed
        return cli_vnfd.run(args)
    api = Client(args.api, token=args.token or os.environ.get("SKERRY_TOKEN") or None)
    if args.cmd in cli_identity.COMMANDS:
        return cli_identity.run(args, api, _print)
    if args.cmd in cli_network.COMMANDS:
        return cli_network.run(args, api, _print)
    if args.cmd in cli_volume.COMMANDS:
        return cli_volume.run(args, api, _print)
    if args.cmd in cli_vnfpkg.COMMANDS:
        return cli_vnfpkg.run(args, api, _print)
    if args.cmd == "demo":
        from central.demo import run_demo

        return run_demo(keep=args.keep)
    if args.cmd == "hub":
        print(api.get("/v1/hub")["public_key"])
        return 0
    if args.cmd == "sites":
        if args.action == "enroll":
            return enroll(api, args)
        if args.action == "revoke":
            _print(args, api.delete(f"/v1/sites/{args.name}/key"))
        elif args.action == "create":
            _print(args, api.post("/v1/sites", {"name": args.name}))
        elif args.action == "show":
            _print(args, api.get(f"/v1/sites/{args.name}"))
        else:
            sites = api.get("/v1/sites")["sites"]
            _print(args, sites, site_rows(sites), SITE_COLUMNS)
        return 0
    if args.action == "create":
        _print(args, api.post("/v1/servers", server_body(args)))
    elif args.action in ("show", "start", "stop", "delete"):
        if args.action == "show":
            data = api.get(f"/v1/servers/{args.id}")
        elif args.action == "delete":
            data = api.delete(f"/v1/servers/{args.id}")
        else:
            data = api.post(f"/v1/servers/{args.id}/{args.action}")
        _print(args, data)
    else:
        servers = api.get("/v1/servers")["servers"]
        _print(args, servers, server_rows(servers), SERVER_COLUMNS)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skerry", description=__doc__)
    p.add_argument("--api", default=DEFAULT_API, help="central API URL (env SKERRY_API)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--token", help="API token (env SKERRY_TOKEN; get one with `skerry login`)")
    sub = p.add_subparsers(dest="cmd", required=True)
    cli_identity.add_parsers(sub)
    cli_network.add_parsers(sub)
    cli_volume.add_parsers(sub)
    cli_vnfd.add_parsers(sub)
    cli_vnfpkg.add_parsers(sub)

    sites = sub.add_parser("sites", help="edge sites")
    s = sites.add_subparsers(dest="action", required=True)
    s.add_parser("list")
    for name in ("create", "show"):
        s.add_parser(name).add_argument("name")
    e = s.add_parser("enroll", help="register a site's CURVE public key (creates the site if new)")
    e.add_argument("name")
    key = e.add_mutually_exclusive_group(required=True)
    key.add_argument("--public-key", metavar="Z85", help="the site's public key, made elsewhere")
    key.add_argument(
        "--write-secret",
        metavar="FILE",
        type=Path,
        help="make the site's key pair here, write it to FILE (mode 0600), enroll its public key",
    )
    s.add_parser("revoke", help="revoke a site's key: its link is cut off").add_argument("name")

    hub = sub.add_parser("hub", help="central's control-channel hub")
    hub.add_subparsers(dest="action", required=True).add_parser(
        "key", help="print the hub's CURVE public key (edged's central_public_key)"
    )

    servers = sub.add_parser("servers", help="servers at sites")
    v = servers.add_subparsers(dest="action", required=True)
    v.add_parser("list")
    c = v.add_parser("create")
    c.add_argument("name")
    c.add_argument("--site", required=True)
    c.add_argument("--image", default="tiny")
    c.add_argument("--vcpus", type=int, default=1)
    c.add_argument("--ram-mb", type=int, default=128)
    c.add_argument("--disk-gb", type=int, default=1)
    c.add_argument("--stopped", action="store_true", help="create powered off")
    c.add_argument(
        "--port",
        action="append",
        dest="ports",
        metavar="PORT_ID",
        help="attach this free port of the project at the site (repeat)",
    )
    c.add_argument("--dedicated", action="store_true", help="pin each vCPU to its own host CPU")
    c.add_argument(
        "--page-size",
        choices=["small", "2MB", "1GB"],
        help="hugepage-backed memory (default small)",
    )
    c.add_argument("--numa-nodes", type=int, metavar="N", help="guest NUMA cells (default 1)")
    c.add_argument(
        "--meta",
        action="append",
        type=meta_pair,
        metavar="KEY=VALUE",
        help="metadata the guest reads at boot (repeat)",
    )
    c.add_argument(
        "--boot-volume", metavar="VOLUME_ID", help="a free volume at the site as the root disk"
    )
    for name in ("show", "start", "stop", "delete"):
        v.add_parser(name).add_argument("id")

    demo = sub.add_parser("demo", help="central + two edge sites on this machine, end to end")
    demo.add_argument("--keep", action="store_true", help="leave everything running at the end")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except ApiFailure as exc:
        print(f"skerry: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
