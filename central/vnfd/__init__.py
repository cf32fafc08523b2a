"""ETSI NFV-SOL 001 VNF descriptors: load a package (file, folder or CSAR zip), check it
against Skerry's documented subset (docs/vnfd.md) and build the typed model.

    vnfd = load_vnfd(path)            # Vnfd, or raises VnfdInvalid(errors)
    vnfd, errors = check_vnfd(path)   # (Vnfd, []) or (None, [VnfdError, ...])

Pure: no I/O besides reading the package's files, no central imports."""

from __future__ import annotations

from pathlib import Path

from central.vnfd.descriptor import build
from central.vnfd.errors import Problems, VnfdError, VnfdInvalid
from central.vnfd.model import (
    AntiAffinityRule,
    BlockStorage,
    Flavour,
    InstantiationLevel,
    ScalingAspect,
    SwImage,
    Vdu,
    VduCp,
    VirtualLink,
    Vnfd,
)
from central.vnfd.package import find_entry, load_files, open_source

__all__ = [
    "AntiAffinityRule",
    "BlockStorage",
    "Flavour",
    "InstantiationLevel",
    "ScalingAspect",
    "SwImage",
    "Vdu",
    "VduCp",
    "VirtualLink",
    "Vnfd",
    "VnfdError",
    "VnfdInvalid",
    "check_vnfd",
    "load_vnfd",
]


def check_vnfd(path: str | Path) -> tuple[Vnfd | None, list[VnfdError]]:
    """The descriptor at ``path`` and no errors, or None and every error found."""
    problems = Problems()
    opened = open_source(Path(path), problems)
    if opened is None:
        return None, problems.errors
    source, entry = opened
    try:
        if entry is None:
            entry = find_entry(source, problems)
        if entry is None:
            return None, problems.errors
        files = load_files(source, entry, problems)
        vnfd = build(files, entry, problems) if files else None
    finally:
        zf = getattr(source, "zf", None)
        if zf is not None:
            zf.close()
    if problems:
        return None, problems.errors
    return vnfd, []


def load_vnfd(path: str | Path) -> Vnfd:
    """The descriptor at ``path``; ``VnfdInvalid`` (with every error) when it does not
    validate."""
    vnfd, errors = check_vnfd(path)
    if vnfd is None:
        raise VnfdInvalid(errors)
    return vnfd
