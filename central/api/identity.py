"""/v1/projects and /v1/users: projects, users, role assignments, application
credentials. The cloud admin manages them; users read themselves and manage
their own application credentials. Every change reaches every site in its
next document (the identity section) and the snapshot central verifies with.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint
from quart_schema import validate_request, validate_response

from central.api.errors import ApiError, not_found
from central.api.identity_models import (
    AppCredential,
    AppCredentialCreate,
    AppCredentialCreated,
    AppCredentialList,
    AssignmentList,
    Project,
    ProjectCreate,
    ProjectList,
    ProjectUpdate,
    User,
    UserCreate,
    UserList,
    UserUpdate,
)
from central.api.models import Error
from central.api.policy import (
    cloud_admin,
    forbidden,
    identity_change,
    principal,
    set_audit_target,
    writer,
)
from central.api.services import services
from central.identity import records
from central.identity.records import IdentityError
from central.identity.snapshot import ADMIN_PROJECT
from central.store import now

projects_bp = Blueprint("projects", __name__, url_prefix="/v1/projects")
users_bp = Blueprint("users", __name__, url_prefix="/v1/users")


def _view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "enabled": bool(row["enabled"]),
        "created_at": row["created_at"],
    }


def _refused(exc: IdentityError) -> ApiError:
    status = {"conflict": 409, "not_found": 404}.get(exc.kind, 400)
    code = {409: "conflict", 404: "not_found"}.get(status, "invalid_request")
    return ApiError(status, code, exc.message)


def visible_project(project_id: str) -> dict[str, Any]:
    """A project the caller may see (cloud admin: any; others: their own), or 404."""
    who = principal()
    row = records.project(services().store, project_id)
    if row is None or not (who.is_cloud_admin or who.project_id == project_id):
        raise not_found("project", project_id)
    return row


def visible_user(user_id: str) -> dict[str, Any]:
    """A user the caller may see (cloud admin: any; others: themselves), or 404."""
    who = principal()
    row = records.user(services().store, user_id)
    if row is None or not (who.is_cloud_admin or who.user_id == user_id):
        raise not_found("user", user_id)
    return row


# -- projects ---------------------------------------------------------------------------


@projects_bp.get("")
@validate_response(ProjectList)
async def list_projects():  # type: ignore[no-untyped-def]
    """All projects (cloud admin), or the caller's own."""
    who = principal()
    store = services().store
    if who.is_cloud_admin:
        rows = store.query("SELECT * FROM projects ORDER BY name")
    else:
        rows = store.query("SELECT * FROM projects WHERE id = ?", (who.project_id,))
    return {"projects": [_view(r) for r in rows]}


@projects_bp.post("")
@cloud_admin
@validate_request(ProjectCreate)
@validate_response(Project, 201)
@validate_response(Error, 409)
async def create_project(data: ProjectCreate):  # type: ignore[no-untyped-def]
    """Create a project."""
    try:
        with identity_change() as store:
            row = records.create_project(store, data.name)
    except IdentityError as exc:
        raise _refused(exc) from None
    set_audit_target(f"project_id={row['id']}")
    return _view(row), 201


@projects_bp.get("/<project_id>")
@validate_response(Project)
@validate_response(Error, 404)
async def show_project(project_id: str):  # type: ignore[no-untyped-def]
    """One project."""
    return _view(visible_project(project_id))


@projects_bp.patch("/<project_id>")
@cloud_admin
@validate_request(ProjectUpdate)
@validate_response(Project)
@validate_response(Error, 404)
@validate_response(Error, 409)
async def update_project(project_id: str, data: ProjectUpdate):  # type: ignore[no-untyped-def]
    """Enable or disable a project; disabling revokes every token scoped to it."""
    row = visible_project(project_id)
    if data.enabled is not None and bool(row["enabled"]) != data.enabled:
        if row["name"] == ADMIN_PROJECT and not data.enabled:
            raise ApiError(409, "conflict", "the admin project cannot be disabled")
        with identity_change() as store:
            records.set_project_enabled(store, project_id, data.enabled)
    return _view(visible_project(project_id))


@projects_bp.get("/<project_id>/roles")
@validate_response(AssignmentList)
@validate_response(Error, 404)
async def list_project_roles(project_id: str):  # type: ignore[no-untyped-def]
    """Who holds which role in a project."""
    visible_project(project_id)
    return {"assignments": records.assignments(services().store, project_id)}


def _assignment_target(project_id: str, user_id: str) -> None:
    store = services().store
    if records.project(store, project_id) is None:
        raise not_found("project", project_id)
    if records.user(store, user_id) is None:
        raise not_found("user", user_id)


@projects_bp.put("/<project_id>/users/<user_id>/roles/<role>")
@cloud_admin
@validate_response(Error, 404)
async def grant_role(project_id: str, user_id: str, role: str):  # type: ignore[no-untyped-def]
    """Give a user a role (reader, member, admin) in a project."""
    _assignment_target(project_id, user_id)
    try:
        if role not in records.roles_of(services().store, user_id, project_id):
            with identity_change() as store:
                records.grant(store, user_id, project_id, role)
    except IdentityError as exc:
        raise _refused(exc) from None
    return "", 204


@projects_bp.delete("/<project_id>/users/<user_id>/roles/<role>")
@cloud_admin
@validate_response(Error, 404)
async def revoke_role(project_id: str, user_id: str, role: str):  # type: ignore[no-untyped-def]
    """Take a role away; tokens relying on it lose it at once."""
    _assignment_target(project_id, user_id)
    if role not in records.roles_of(services().store, user_id, project_id):
        raise ApiError(404, "not_found", f"user {user_id!r} does not hold {role!r} there")
    with identity_change() as store:
        records.ungrant(store, user_id, project_id, role)
    return "", 204


# -- users ------------------------------------------------------------------------------


@users_bp.get("")
@cloud_admin
@validate_response(UserList)
async def list_users():  # type: ignore[no-untyped-def]
    """All users."""
    rows = services().store.query("SELECT id, name, enabled, created_at FROM users ORDER BY name")
    return {"users": [_view(r) for r in rows]}


@users_bp.post("")
@cloud_admin
@validate_request(UserCreate)
@validate_response(User, 201)
@validate_response(Error, 409)
async def create_user(data: UserCreate):  # type: ignore[no-untyped-def]
    """Create a user (give it roles with PUT /v1/projects/{id}/users/{uid}/roles/{role})."""
    try:
        with identity_change() as store:
            row = records.create_user(store, data.name, data.password)
    except IdentityError as exc:
        raise _refused(exc) from None
    set_audit_target(f"user_id={row['id']}")
    return _view(row), 201


@users_bp.get("/<user_id>")
@validate_response(User)
@validate_response(Error, 404)
async def show_user(user_id: str):  # type: ignore[no-untyped-def]
    """One user (yourself, or anyone as cloud admin)."""
    return _view(visible_user(user_id))


@users_bp.patch("/<user_id>")
@cloud_admin
@validate_request(UserUpdate)
@validate_response(User)
@validate_response(Error, 404)
@validate_response(Error, 409)
async def update_user(user_id: str, data: UserUpdate):  # type: ignore[no-untyped-def]
    """Enable or disable a user, or set a password; both revoke the user's tokens."""
    row = visible_user(user_id)
    if data.enabled is False and user_id == principal().user_id:
        raise ApiError(409, "conflict", "you cannot disable yourself")
    changes = data.enabled is not None and bool(row["enabled"]) != data.enabled
    if changes or data.password is not None:
        try:
            with identity_change() as store:
                if changes:
                    assert data.enabled is not None
                    records.set_user_enabled(store, user_id, data.enabled)
                if data.password is not None:
                    records.set_user_password(store, user_id, data.password)
        except IdentityError as exc:
            raise _refused(exc) from None
    return _view(visible_user(user_id))


@users_bp.post("/<user_id>/revoke-tokens")
@writer
@validate_response(Error, 404)
async def revoke_user_tokens(user_id: str):  # type: ignore[no-untyped-def]
    """Revoke every token the user holds now (yourself, or anyone as cloud admin)."""
    visible_user(user_id)
    with identity_change() as store:
        records.revoke_before(store, "user", user_id)
    return "", 204


# -- application credentials -------------------------------------------------------------


def _own_credential(user_id: str, cred_id: str) -> dict[str, Any]:
    visible_user(user_id)
    row = records.app_credential(services().store, cred_id)
    if row is None or row["user_id"] != user_id:
        raise not_found("application credential", cred_id)
    return row


@users_bp.get("/<user_id>/application_credentials")
@validate_response(AppCredentialList)
@validate_response(Error, 404)
async def list_app_credentials(user_id: str):  # type: ignore[no-untyped-def]
    """A user's application credentials (never their secrets)."""
    visible_user(user_id)
    rows = records.app_credentials(services().store, user_id)
    return {"application_credentials": [records.app_credential_view(r) for r in rows]}


@users_bp.post("/<user_id>/application_credentials")
@writer
@validate_request(AppCredentialCreate)
@validate_response(AppCredentialCreated, 201)
@validate_response(Error, 403)
@validate_response(Error, 404)
async def create_app_credential(user_id: str, data: AppCredentialCreate):  # type: ignore[no-untyped-def]
    """A credential for automation, scoped to the token's project and a subset of
    your roles there; its secret is in this answer and nowhere else."""
    who = principal()
    visible_user(user_id)
    if user_id != who.user_id:
        raise forbidden("application credentials are created by their owner")
    if who.app_credential:
        raise forbidden("an application credential cannot create another")
    roles = set(data.roles) if data.roles is not None else set(who.roles)
    if not roles or not roles <= who.roles:
        raise forbidden(f"roles must be a non-empty subset of yours: {sorted(who.roles)}")
    if data.expires_at is not None and data.expires_at <= now():
        raise ApiError(400, "invalid_request", "expires_at is in the past")
    with identity_change() as store:
        row, secret = records.create_app_credential(
            store, user_id, who.project_id, data.name, sorted(roles), data.expires_at
        )
    set_audit_target(f"application_credential={row['id']}")
    return {**records.app_credential_view(row), "secret": secret}, 201


@users_bp.get("/<user_id>/application_credentials/<cred_id>")
@validate_response(AppCredential)
@validate_response(Error, 404)
async def show_app_credential(user_id: str, cred_id: str):  # type: ignore[no-untyped-def]
    """One application credential."""
    return records.app_credential_view(_own_credential(user_id, cred_id))


@users_bp.delete("/<user_id>/application_credentials/<cred_id>")
@writer
@validate_response(Error, 404)
async def delete_app_credential(user_id: str, cred_id: str):  # type: ignore[no-untyped-def]
    """Delete an application credential; central refuses its tokens from now on."""
    _own_credential(user_id, cred_id)
    with identity_change() as store:
        records.delete_app_credential(store, cred_id)
    return "", 204
