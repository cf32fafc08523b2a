"""``skerry vnfd validate PATH``: check a VNF descriptor (a top-level file, a package
folder or a CSAR zip) locally, without central; print what it holds, or every error."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from central.vnfd import Flavour, Vdu, Vnfd, check_vnfd

COMMANDS = ("vnfd",)


def add_parsers(sub: Any) -> None:
    vnfd = sub.add_parser("vnfd", help="ETSI SOL001 VNF descriptors (checked locally)")
    v = vnfd.add_subparsers(dest="action", required=True)
    v.add_parser(
        "validate", help="check a descriptor file, package folder or CSAR zip; exit 1 on errors"
    ).add_argument("path")


def _vdu_line(vdu: Vdu) -> str:
    flavor = f"{vdu.vcpus}c/{vdu.ram_mb}M/{vdu.disk_gb}G"
    extra = [
        x
        for x in (
            vdu.cpu_policy if vdu.cpu_policy != "shared" else "",
            vdu.mem_page_size if vdu.mem_page_size != "small" else "",
            f"numa={vdu.numa_nodes}" if vdu.numa_nodes > 1 else "",
        )
        if x
    ]
    image = vdu.image.name if vdu.image else f"volume {vdu.boot_storage}"
    return (
        f"    {vdu.name}: {' '.join([flavor, *extra])} image={image} "
        f"instances={vdu.min_instances}..{vdu.max_instances}"
        + (f" storages={','.join(vdu.storages)}" if vdu.storages else "")
    )


def _flavour_lines(f: Flavour) -> list[str]:
    lines = [f"flavour {f.id} ({f.file})" + (f": {f.description}" if f.description else "")]
    lines.append(f"  VDUs ({len(f.vdus)}):")
    lines += [_vdu_line(v) for v in f.vdus.values()]
    lines.append(f"  CPs ({len(f.cps)}):")
    for vdu in f.vdus:
        for cp in f.cps_of(vdu):
            link = f"vl={cp.virtual_link}" if cp.virtual_link else f"external={cp.external}"
            lines.append(f"    {cp.name}: vdu={cp.vdu} {link} vnic={cp.vnic_type}")
    lines.append(f"  VLs ({len(f.vls)}):")
    for vl in f.vls.values():
        net = vl.cidr or "cidr chosen at instantiate"
        lines.append(
            f"    {vl.name}: ipv{vl.ip_version} {net}" + (f" mtu={vl.mtu}" if vl.mtu else "")
        )
    if f.storages:
        lines.append(f"  storages ({len(f.storages)}):")
        for s in f.storages.values():
            src = f" from image {s.image.name}" if s.image else ""
            lines.append(f"    {s.name}: {s.size_gb}G{src}")
    if f.aspects:
        lines.append(f"  aspects ({len(f.aspects)}):")
        for a in f.aspects.values():
            deltas = "; ".join(
                f"{d}: " + ", ".join(f"{v}+{n}" for v, n in per.items())
                for d, per in a.deltas.items()
            )
            lines.append(f"    {a.id}: max_scale_level={a.max_scale_level} {deltas}".rstrip())
    if f.levels:
        lines.append(f"  instantiation levels ({len(f.levels)}, default {f.default_level}):")
        for lv in f.levels.values():
            counts = ", ".join(f"{v}={f.instances(v, lv.id)}" for v in f.vdus)
            lines.append(f"    {lv.id}: {counts}")
    for rule in f.anti_affinity:
        lines.append(f"  anti-affinity {rule.name}: {', '.join(rule.vdus)} by {rule.scope}")
    return lines


def summary(vnfd: Vnfd) -> str:
    head = (
        f"VNFD {vnfd.id}: {vnfd.provider} {vnfd.product_name} {vnfd.software_version} "
        f"(descriptor {vnfd.descriptor_version}, entry {vnfd.entry})"
    )
    lines = [head, f"flavours: {', '.join(vnfd.flavours)}"]
    for f in vnfd.flavours.values():
        lines += _flavour_lines(f)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    vnfd, errors = check_vnfd(args.path)
    if vnfd is None:
        if args.json:
            print(json.dumps({"errors": [asdict(e) for e in errors]}, indent=2))
        else:
            for e in errors:
                print(e, file=sys.stderr)
            print(f"{args.path}: {len(errors)} error(s)", file=sys.stderr)
        return 1
    print(json.dumps(asdict(vnfd), indent=2) if args.json else summary(vnfd))
    return 0
