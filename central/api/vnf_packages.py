"""/vnfpkgm/v1/vnf_packages: VNF packages in ETSI SOL 005 (Tacker) shapes.

A package is created empty (``CREATED``, ``DISABLED``, ``NOT_IN_USE``); its CSAR
zip is then uploaded once with ``PUT .../package_content``: streamed to disk
(``UPLOADING``), extracted safely and checked with the descriptor parser
(``PROCESSING``), and kept as ``ONBOARDED`` and ``ENABLED`` with what the VNFD says.
A refused upload (not a zip, an unsafe member, too large) or a descriptor with
errors answers 400 (413 for a body over ``vnf_package_max_bytes``), puts the
package back to ``CREATED`` with ``onboardingFailureDetails`` and keeps nothing.
Packages belong to the project that created them; another project's is "not
found". A package is deleted only when ``DISABLED`` and ``NOT_IN_USE``.
"""

from __future__ import annotations

import io
import json
import re
import sqlite3
import uuid
import zipfile
from pathlib import Path
from typing import Any

from quart import Blueprint, Request, Response, current_app, request
from quart_schema import validate_request, validate_response

from central.api.errors import ApiError, conflict, not_found
from central.api.models import Error
from central.api.policy import principal, project_scope, set_audit_target, writer
from central.api.services import services
from central.api.vnf_package_models import VnfPkgCreate, VnfPkgPatch
from central.store import dumps, now
from central.vnf_packages import (
    OnboardingFailed,
    PackageError,
    PackageStore,
    failure_details,
    onboard,
    refusal_details,
    software_images,
)
from central.vnfd import VnfdError

ROOT = "/vnfpkgm/v1/vnf_packages"
bp = Blueprint("vnf_packages", __name__, url_prefix=ROOT)
UPLOAD_PATH = re.compile(r"^/vnfpkgm/v1/vnf_packages/[^/]+/package_content$")
STORE_KEY = "skerry.vnf_packages"
YAML_SUFFIXES = (".yaml", ".yml")


def request_class(base: type[Request]) -> type[Request]:
    """``base`` without the app-wide body limit on package uploads: those stream to disk,
    bounded by ``vnf_package_max_bytes`` (413)."""

    class PackageUploadRequest(base):  # type: ignore[valid-type,misc]
        def __init__(self, method: str, scheme: str, path: str, *args: Any, **kwargs: Any):
            if method == "PUT" and UPLOAD_PATH.match(path):
                kwargs["max_content_length"] = None
            super().__init__(method, scheme, path, *args, **kwargs)

    return PackageUploadRequest


def package_store() -> PackageStore:
    """The app's package folder, made on first use; onboardings a stopped central left
    half done go back to CREATED (their files were removed with the stale temporaries)."""
    found = current_app.extensions.get(STORE_KEY)
    if found is None:
        config = services().config
        found = PackageStore(config.state_dir / "vnf-packages", config.vnf_package_max_bytes)
        failure = {
            "type": "about:blank",
            "title": "Onboarding interrupted",
            "status": 500,
            "detail": "central stopped during the upload; upload the package again",
        }
        with services().store.transaction() as db:
            db.conn.execute(
                "UPDATE vnf_packages SET onboarding_state = 'CREATED', failure = ? "
                "WHERE onboarding_state IN ('UPLOADING', 'PROCESSING')",
                (dumps(failure),),
            )
        current_app.extensions[STORE_KEY] = found
    return found


def package_view(row: dict[str, Any]) -> dict[str, Any]:
    """A package as SOL 005's VnfPkgInfo (attributes without a value are left out)."""
    href = f"{ROOT}/{row['id']}"
    view: dict[str, Any] = {"id": row["id"]}
    for key, column in (
        ("vnfdId", "vnfd_id"),
        ("vnfProvider", "vnf_provider"),
        ("vnfProductName", "vnf_product_name"),
        ("vnfSoftwareVersion", "vnf_software_version"),
        ("vnfdVersion", "vnfd_version"),
    ):
        if row[column] is not None:
            view[key] = row[column]
    if row["sha256"] is not None:
        view["checksum"] = {"algorithm": "SHA-256", "hash": row["sha256"]}
    if row["onboarding_state"] == "ONBOARDED":
        view["softwareImages"] = json.loads(row["software_images"])
    view["onboardingState"] = row["onboarding_state"]
    view["operationalState"] = row["operational_state"]
    view["usageState"] = row["usage_state"]
    view["userDefinedData"] = json.loads(row["user_defined_data"])
    if row["failure"] is not None:
        view["onboardingFailureDetails"] = json.loads(row["failure"])
    view["_links"] = {
        "self": {"href": href},
        "vnfd": {"href": f"{href}/vnfd"},
        "packageContent": {"href": f"{href}/package_content"},
    }
    return view


def get_package(package_id: str) -> dict[str, Any]:
    """A package of the caller's project (any, for a cloud admin), or 404."""
    package_store()  # after a restart: interrupted onboardings reset first
    row = services().store.one("SELECT * FROM vnf_packages WHERE id = ?", (package_id,))
    scope = project_scope()
    if row is None or (scope is not None and row["project_id"] != scope):
        raise not_found("vnf package", package_id)
    return row


def _set(package_id: str, where: str | None = None, **fields: Any) -> bool:
    """Update a package's columns (only while ``onboarding_state`` is ``where``, if given)."""
    fields["updated_at"] = now()
    sets = ", ".join(f"{k} = :{k}" for k in fields)
    sql = f"UPDATE vnf_packages SET {sets} WHERE id = :id"
    if where is not None:
        sql += " AND onboarding_state = :where"
    with services().store.transaction() as db:
        cur = db.conn.execute(sql, {**fields, "id": package_id, "where": where})
        return cur.rowcount == 1


def _where(e: VnfdError) -> str:
    """``file:line: path`` of a descriptor error."""
    at = f"{e.file}:{e.line}" if e.line is not None else e.file
    return f"{at}: {e.path or '(top)'}"


def _failed(package_id: str, failure: dict[str, Any]) -> None:
    _set(package_id, onboarding_state="CREATED", failure=dumps(failure))


@bp.post("")
@writer
@validate_request(VnfPkgCreate)
@validate_response(Error, 400)
@validate_response(Error, 403)
async def create_package(data: VnfPkgCreate):  # type: ignore[no-untyped-def]
    """Create an empty package (CREATED); its content comes with PUT .../package_content."""
    package_id = str(uuid.uuid4())
    stamp = now()
    with services().store.transaction() as db:
        db["vnf_packages"].insert(
            {
                "id": package_id,
                "project_id": principal().project_id,
                "onboarding_state": "CREATED",
                "operational_state": "DISABLED",
                "usage_state": "NOT_IN_USE",
                "user_defined_data": dumps(data.userDefinedData),
                "software_images": "[]",
                "created_at": stamp,
                "updated_at": stamp,
            }
        )
    set_audit_target(f"vnf_package_id={package_id}")
    view = package_view(get_package(package_id))
    return view, 201, {"Location": view["_links"]["self"]["href"]}


@bp.put("/<package_id>/package_content")
@writer
@validate_response(Error, 400)
@validate_response(Error, 404)
@validate_response(Error, 409)
@validate_response(Error, 413)
async def upload_package(package_id: str):  # type: ignore[no-untyped-def]
    """Upload the CSAR zip (the raw bytes as the body, streamed) and onboard it."""
    get_package(package_id)
    packages = package_store()
    if not _set(package_id, "CREATED", onboarding_state="UPLOADING", failure=None):
        state = get_package(package_id)["onboarding_state"]
        raise conflict(
            f"vnf package {package_id!r} is {state}; content is uploaded once, to a CREATED one",
            onboardingState=state,
        )
    try:
        staged = await packages.receive(request.body, request.content_length)
        _set(package_id, onboarding_state="PROCESSING")
        done = await onboard(packages, staged)
    except PackageError as exc:
        _failed(package_id, refusal_details(exc))
        raise
    except OnboardingFailed as exc:
        details = failure_details(exc.errors)
        _failed(package_id, details)
        fields = [{"field": _where(e), "problem": e.message} for e in exc.errors]
        raise ApiError(
            400,
            "invalid_request",
            f"the package's descriptor does not validate: {exc} "
            f"({len(exc.errors)} error(s); see onboardingFailureDetails)",
            fields=fields,
            onboardingFailureDetails=details,
        ) from None
    except BaseException:
        _failed(package_id, {"title": "Onboarding failed", "status": 500, "detail": "see log"})
        raise
    vnfd = done.vnfd
    try:
        path = packages.keep(done, package_id)
    except BaseException:
        packages.discard(done)
        _failed(package_id, {"title": "Onboarding failed", "status": 500, "detail": "see log"})
        raise
    fields = {
        "onboarding_state": "ONBOARDED",
        "operational_state": "ENABLED",
        "vnfd_id": vnfd.id,
        "vnf_provider": vnfd.provider,
        "vnf_product_name": vnfd.product_name,
        "vnf_software_version": vnfd.software_version,
        "vnfd_version": vnfd.descriptor_version,
        "software_images": dumps(software_images(vnfd)),
        "entry": vnfd.entry,
        "path": str(path),
        "size": staged.size,
        "sha256": staged.sha256,
    }
    try:
        _set(package_id, "PROCESSING", **fields)
    except sqlite3.IntegrityError:
        packages.remove(package_id)
        message = f"vnfdId {vnfd.id!r} is already onboarded in another package of the project"
        _failed(
            package_id,
            {"type": "about:blank", "title": "Onboarding failed", "status": 409, "detail": message},
        )
        raise conflict(message, field="vnfdId") from None
    return package_view(get_package(package_id)), 202


@bp.get("")
async def list_packages():  # type: ignore[no-untyped-def]
    """The packages of the token's project (all for a cloud admin), as a JSON array."""
    package_store()
    scope = project_scope()
    if scope is None:
        rows = services().store.query("SELECT * FROM vnf_packages ORDER BY created_at, id")
    else:
        rows = services().store.query(
            "SELECT * FROM vnf_packages WHERE project_id = ? ORDER BY created_at, id", (scope,)
        )
    return [package_view(r) for r in rows]


@bp.get("/<package_id>")
@validate_response(Error, 404)
async def show_package(package_id: str):  # type: ignore[no-untyped-def]
    """One package."""
    return package_view(get_package(package_id))


def _definitions_zip(folder: Path, entry: str) -> bytes:
    """The descriptor files: the entry's top folder (or the root's YAML files) and
    TOSCA-Metadata, as a zip."""
    top = entry.split("/", 1)[0] if "/" in entry else None
    names = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.is_symlink():
            continue
        rel = p.relative_to(folder).as_posix()
        first = rel.split("/", 1)[0]
        in_root = "/" not in rel and rel.endswith(YAML_SUFFIXES)
        if first in ("TOSCA-Metadata", top) or (top is None and in_root):
            names.append(rel)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in names:
            zf.write(folder / rel, rel)
    return out.getvalue()


@bp.get("/<package_id>/vnfd")
@validate_response(Error, 404)
@validate_response(Error, 406)
@validate_response(Error, 409)
async def get_vnfd(package_id: str):  # type: ignore[no-untyped-def]
    """The VNFD: the entry descriptor as YAML (``text/plain``), or a zip of the
    descriptor files with ``Accept: application/zip``."""
    row = get_package(package_id)
    if row["onboarding_state"] != "ONBOARDED":
        raise conflict(
            f"vnf package {package_id!r} is not onboarded",
            onboardingState=row["onboarding_state"],
        )
    best = request.accept_mimetypes.best_match(["text/plain", "application/zip"])
    if request.accept_mimetypes and best is None:
        raise ApiError(406, "not_acceptable", "the VNFD is text/plain or application/zip")
    folder = Path(row["path"])
    if best == "application/zip":
        return Response(_definitions_zip(folder, row["entry"]), mimetype="application/zip")
    text = (folder / row["entry"]).read_bytes()
    return Response(text, mimetype="text/plain")


@bp.patch("/<package_id>")
@writer
@validate_request(VnfPkgPatch)
@validate_response(Error, 400)
@validate_response(Error, 404)
@validate_response(Error, 409)
async def update_package(package_id: str, data: VnfPkgPatch):  # type: ignore[no-untyped-def]
    """Enable or disable an onboarded package, or change its userDefinedData; the answer
    is what changed (SOL 005's VnfPkgInfoModifications)."""
    row = get_package(package_id)
    changes: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    if data.operationalState is not None:
        if row["onboarding_state"] != "ONBOARDED":
            raise conflict(
                f"vnf package {package_id!r} is not onboarded",
                field="operationalState",
                onboardingState=row["onboarding_state"],
            )
        if row["operational_state"] == data.operationalState:
            raise conflict(
                f"vnf package {package_id!r} is already {data.operationalState}",
                field="operationalState",
            )
        fields["operational_state"] = changes["operationalState"] = data.operationalState
    if data.userDefinedData is not None:
        merged = json.loads(row["user_defined_data"])
        for key, value in data.userDefinedData.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        fields["user_defined_data"] = dumps(merged)
        changes["userDefinedData"] = data.userDefinedData
    if not fields:
        raise ApiError(
            400,
            "invalid_request",
            "nothing to change: give operationalState or userDefinedData",
            fields=[{"field": "operationalState", "problem": "missing"}],
        )
    _set(package_id, **fields)
    return changes


@bp.delete("/<package_id>")
@writer
@validate_response(Error, 404)
@validate_response(Error, 409)
async def delete_package(package_id: str):  # type: ignore[no-untyped-def]
    """Delete a package and its files: only when DISABLED and NOT_IN_USE, not mid-upload."""
    row = get_package(package_id)
    with services().store.transaction() as db:
        cur = db.conn.execute(
            "DELETE FROM vnf_packages WHERE id = ? AND operational_state = 'DISABLED' "
            "AND usage_state = 'NOT_IN_USE' AND onboarding_state IN ('CREATED', 'ONBOARDED')",
            (package_id,),
        )
        if cur.rowcount != 1:
            raise conflict(
                f"vnf package {package_id!r} is {row['operational_state']}, "
                f"{row['usage_state']}, {row['onboarding_state']}: only a DISABLED, "
                "NOT_IN_USE package that is not being uploaded can be deleted",
                operationalState=row["operational_state"],
                usageState=row["usage_state"],
            )
    package_store().remove(package_id)
    return "", 204
