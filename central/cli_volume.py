"""``skerry volumes`` commands: block volumes at a site, attach/detach, extend, snapshots.
Lists print tables; everything else, and every command under ``--json``, prints the
API's JSON (which never holds a volume's key)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from central.client import Client

COMMANDS = ("volumes",)
Printer = Callable[..., None]

VOLUME_COLUMNS = ("id", "name", "site", "size_gb", "encrypted", "server", "status", "reason")
SNAPSHOT_COLUMNS = ("id", "name", "volume_id", "size_gb", "status", "reason")


def _short(value: str | None) -> str:
    return value[:8] if value else "-"


def volume_rows(volumes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            **v,
            "id": _short(v["id"]),
            "server": (_short(v["server_id"]) + (" (boot)" if v["boot"] else ""))
            if v["server_id"]
            else "-",
            "reason": v["reason"] or "-",
        }
        for v in volumes
    ]


def snapshot_rows(snapshots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Full ids: `volumes create --snapshot` and `snapshot-delete` take them.
    return [{**s, "reason": s["reason"] or "-"} for s in snapshots]


def add_parsers(sub: Any) -> None:
    volumes = sub.add_parser("volumes", help="block volumes at a site")
    v = volumes.add_subparsers(dest="action", required=True)
    v.add_parser("list")
    v.add_parser("show").add_argument("id")
    c = v.add_parser("create", help="empty, from an image (--image) or a snapshot (--snapshot)")
    c.add_argument("name")
    c.add_argument("--site", required=True)
    c.add_argument("--size", type=int, required=True, metavar="GB", dest="size_gb")
    c.add_argument("--encrypted", action="store_true", help="LUKS with a key made by central")
    c.add_argument("--image", metavar="IMAGE_ID")
    c.add_argument("--snapshot", metavar="SNAPSHOT_ID")
    v.add_parser("delete", help="refused while attached or while it has snapshots").add_argument(
        "id"
    )
    e = v.add_parser("extend", help="grow a detached volume")
    e.add_argument("id")
    e.add_argument("size_gb", type=int, metavar="GB")
    a = v.add_parser("attach", help="attach to a server of the project at the volume's site")
    a.add_argument("id")
    a.add_argument("server_id")
    v.add_parser("detach").add_argument("id")
    s = v.add_parser("snapshot", help="a full copy of a detached volume")
    s.add_argument("id")
    s.add_argument("name")
    v.add_parser("snapshots", help="the snapshots of a volume").add_argument("id")
    d = v.add_parser("snapshot-delete")
    d.add_argument("id")
    d.add_argument("snapshot_id")


def volume_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"name": args.name, "site": args.site, "size_gb": args.size_gb}
    if args.encrypted:
        body["encrypted"] = True
    if args.image:
        body["image_id"] = args.image
    if args.snapshot:
        body["snapshot_id"] = args.snapshot
    return body


def run(args: argparse.Namespace, api: Client, show: Printer) -> int:
    base = f"/v1/volumes/{getattr(args, 'id', '')}"
    if args.action == "list":
        rows = api.get("/v1/volumes")["volumes"]
        show(args, rows, volume_rows(rows), VOLUME_COLUMNS)
    elif args.action == "show":
        show(args, api.get(base))
    elif args.action == "create":
        show(args, api.post("/v1/volumes", volume_body(args)))
    elif args.action == "delete":
        show(args, api.delete(base))
    elif args.action == "extend":
        show(args, api.post(f"{base}/extend", {"size_gb": args.size_gb}))
    elif args.action == "attach":
        show(args, api.post(f"{base}/attach", {"server_id": args.server_id}))
    elif args.action == "detach":
        show(args, api.post(f"{base}/detach"))
    elif args.action == "snapshot":
        show(args, api.post(f"{base}/snapshots", {"name": args.name}))
    elif args.action == "snapshots":
        rows = api.get(f"{base}/snapshots")["snapshots"]
        show(args, rows, snapshot_rows(rows), SNAPSHOT_COLUMNS)
    else:
        show(args, api.delete(f"{base}/snapshots/{args.snapshot_id}"))
    return 0
