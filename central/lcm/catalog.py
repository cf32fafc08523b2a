"""Where the lifecycle finds a descriptor by its id: the project's onboarded VNF
packages (:func:`central.vnf_packages.vnfd_for`), else the built-in packages under the
repository's ``vnf-templates/`` (each read with :func:`central.vnfd.check_vnfd`)."""

from __future__ import annotations

from pathlib import Path

from central import vnf_packages
from central.refusal import Refusal
from central.store import Store
from central.vnfd import Vnfd, check_vnfd

TEMPLATES = Path(__file__).resolve().parents[2] / "vnf-templates"


class VnfdNotFound(Exception):
    """No usable descriptor with that id for the project."""


def resolve_vnfd(store: Store, vnfd_id: str, project_id: str) -> tuple[Vnfd, str | None]:
    """The descriptor ``vnfd_id`` the project may use, and its package id (None: a
    built-in template); VnfdNotFound else (also for a DISABLED package)."""
    try:
        vnfd, folder = vnf_packages.vnfd_for(store, vnfd_id, project_id)
        return vnfd, folder.name
    except Refusal as exc:
        if exc.status != 400:  # onboarded but not usable (disabled)
            raise VnfdNotFound(exc.message) from None
    for path in sorted(TEMPLATES.iterdir()) if TEMPLATES.is_dir() else ():
        if not path.is_dir():
            continue
        vnfd, _errors = check_vnfd(path)
        if vnfd is not None and vnfd.id == vnfd_id:
            return vnfd, None
    raise VnfdNotFound(f"no onboarded VNF package (or built-in template) has vnfdId {vnfd_id!r}")


def mark_in_use(store: Store, package_id: str | None, in_use: bool) -> None:
    """The package's usageState: IN_USE while any instance made from it is INSTANTIATED."""
    if package_id is None:
        return
    others = store.one(
        "SELECT id FROM vnf_instances WHERE package_id = ? AND instantiation_state = "
        "'INSTANTIATED' LIMIT 1",
        (package_id,),
    )
    vnf_packages.mark_in_use(store, package_id, in_use or others is not None)
