"""Where the lifecycle finds a descriptor by its id: the seam to the VNF packages.

Until the packages API is merged, descriptors are the packages under the repository's
``vnf-templates/`` (each read with :func:`central.vnfd.load_vnfd`)."""

from __future__ import annotations

from pathlib import Path

from central.store import Store
from central.vnfd import Vnfd, check_vnfd

TEMPLATES = Path(__file__).resolve().parents[2] / "vnf-templates"


class VnfdNotFound(Exception):
    """No onboarded descriptor with that id is visible to the project."""


def resolve_vnfd(store: Store, vnfd_id: str, project_id: str) -> tuple[Vnfd, str | None]:
    """The descriptor ``vnfd_id`` the project may use, and its package id (None: a
    template); VnfdNotFound else."""
    for path in sorted(TEMPLATES.iterdir()) if TEMPLATES.is_dir() else ():
        if not path.is_dir():
            continue
        vnfd, _errors = check_vnfd(path)
        if vnfd is not None and vnfd.id == vnfd_id:
            return vnfd, None
    raise VnfdNotFound(f"VNFD {vnfd_id!r} is not onboarded")


def mark_in_use(store: Store, package_id: str | None, in_use: bool) -> None:
    """The package's usageState follows whether an instance uses it."""
    del store, package_id, in_use  # templates have no usage state
