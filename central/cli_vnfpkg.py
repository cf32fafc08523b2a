"""``skerry vnfpkgs`` commands: VNF packages at central (SOL 005). ``upload`` takes a
package folder (zipped on the fly into a CSAR, with its TOSCA-Metadata, made when the
folder has none) or a ready .zip/.csar."""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from central.client import ApiFailure, Client
from central.vnfd.errors import Problems
from central.vnfd.package import META, FolderSource, find_entry

COMMANDS = ("vnfpkgs",)
ROOT = "/vnfpkgm/v1/vnf_packages"
Printer = Callable[..., None]
PACKAGE_COLUMNS = (
    "id",
    "vnfdId",
    "vnfProductName",
    "vnfSoftwareVersion",
    "onboardingState",
    "operationalState",
    "usageState",
)


def csar_bytes(folder: Path) -> bytes:
    """A package folder as a CSAR zip: its files (symlinks left out) and
    TOSCA-Metadata/TOSCA.meta, written naming the entry descriptor when missing.
    ValueError when the folder has no recognisable entry descriptor."""
    source = FolderSource(folder)
    meta = None
    if META not in source.names:
        problems = Problems()
        entry = find_entry(source, problems)
        if entry is None:
            raise ValueError("; ".join(str(e) for e in problems.errors))
        meta = (
            "TOSCA-Meta-File-Version: 1.0\nCSAR-Version: 1.1\nCreated-By: skerry\n"
            f"Entry-Definitions: {entry}\n"
        )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        if meta is not None:
            zf.writestr(META, meta)
        for name in source.names:
            zf.write(source.root / name, name)
    return out.getvalue()


def package_bytes(path: Path) -> bytes:
    """What ``upload PATH`` sends: a folder zipped, or a .zip/.csar as it is."""
    if path.is_dir():
        return csar_bytes(path)
    if path.suffix.lower() in (".zip", ".csar") and path.is_file():
        return path.read_bytes()
    raise ValueError(f"{path}: expected a package folder or a .zip/.csar file")


def add_parsers(sub: Any) -> None:
    pkgs = sub.add_parser("vnfpkgs", help="VNF packages (ETSI SOL 005) at central")
    p = pkgs.add_subparsers(dest="action", required=True)
    p.add_parser("list")
    p.add_parser("show").add_argument("id")
    p.add_parser("create", help="an empty package; prints its id")
    u = p.add_parser("upload", help="create a package and onboard a folder or .zip/.csar")
    u.add_argument("path", type=Path)
    u.add_argument("--id", help="upload into this CREATED package instead of a new one")
    p.add_parser("delete", help="only a DISABLED, NOT_IN_USE package").add_argument("id")
    p.add_parser("enable").add_argument("id")
    p.add_parser("disable").add_argument("id")


def _upload(args: argparse.Namespace, api: Client) -> Any:
    try:
        data = package_bytes(args.path)
    except (ValueError, OSError) as exc:
        raise ApiFailure(0, "bad_package", str(exc)) from None
    package_id = args.id or api.post(ROOT, {})["id"]
    try:
        return api.send("PUT", f"{ROOT}/{package_id}/package_content", data, "application/zip")
    except ApiFailure:
        # The details (every descriptor error) are kept on the package: print them.
        failed = api.get(f"{ROOT}/{package_id}").get("onboardingFailureDetails")
        if failed:
            print(f"package {package_id}: onboarding failed:", file=sys.stderr)
            print(failed.get("detail", ""), file=sys.stderr)
        raise


def run(args: argparse.Namespace, api: Client, show: Printer) -> int:
    base = f"{ROOT}/{getattr(args, 'id', '')}"
    if args.action == "list":
        rows = api.get(ROOT)
        show(args, rows, [{**r, "vnfdId": r.get("vnfdId", "-")} for r in rows], PACKAGE_COLUMNS)
    elif args.action == "show":
        show(args, api.get(base))
    elif args.action == "create":
        show(args, api.post(ROOT, {}))
    elif args.action == "upload":
        show(args, _upload(args, api))
    elif args.action == "delete":
        api.delete(base)
        print(f"deleted {args.id}")
    elif args.action == "enable":
        show(args, api.patch(base, {"operationalState": "ENABLED"}))
    else:
        show(args, api.patch(base, {"operationalState": "DISABLED"}))
    return 0
