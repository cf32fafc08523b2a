"""Identity records in the store: projects, users, role assignments, application
credentials and revocations.

Plain store operations: callers wrap them in a transaction together with the
publication of every site's next document (identity travels in all of them).
Secrets are stored only as scrypt hashes.
"""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any

from central.identity.passwords import hash_secret, new_secret
from central.identity.snapshot import ADMIN_PROJECT
from central.store import Store, now
from edged.tokens import ROLES

MIN_PASSWORD = 8


class IdentityError(Exception):
    """A refused identity change; ``kind`` is ``not_found`` or ``conflict``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _one(store: Store, sql: str, *params: Any) -> dict[str, Any] | None:
    return store.one(sql, params)


# -- projects ---------------------------------------------------------------------------


def project(store: Store, project_id: str) -> dict[str, Any] | None:
    return _one(
        store, "SELECT id, name, enabled, created_at FROM projects WHERE id = ?", project_id
    )


def project_by_name(store: Store, name: str) -> dict[str, Any] | None:
    return _one(store, "SELECT id, name, enabled, created_at FROM projects WHERE name = ?", name)


def create_project(store: Store, name: str) -> dict[str, Any]:
    if project_by_name(store, name) is not None:
        raise IdentityError("conflict", f"project {name!r} already exists")
    row = {"id": uuid.uuid4().hex, "name": name, "enabled": 1, "created_at": now()}
    store.db["projects"].insert(row)
    return row


def set_project_enabled(store: Store, project_id: str, enabled: bool) -> None:
    store.db["projects"].update(project_id, {"enabled": int(enabled)})
    if not enabled:
        revoke_before(store, "project", project_id)


# -- users ----------------------------------------------------------------------------


def user(store: Store, user_id: str) -> dict[str, Any] | None:
    return _one(store, "SELECT id, name, enabled, created_at FROM users WHERE id = ?", user_id)


def user_by_name(store: Store, name: str) -> dict[str, Any] | None:
    return _one(store, "SELECT * FROM users WHERE name = ?", name)


def create_user(store: Store, name: str, password: str) -> dict[str, Any]:
    if len(password) < MIN_PASSWORD:
        raise IdentityError("invalid", f"password must have at least {MIN_PASSWORD} characters")
    if user_by_name(store, name) is not None:
        raise IdentityError("conflict", f"user {name!r} already exists")
    row = {
        "id": uuid.uuid4().hex,
        "name": name,
        "password_hash": hash_secret(password),
        "enabled": 1,
        "created_at": now(),
    }
    store.db["users"].insert(row)
    return {k: v for k, v in row.items() if k != "password_hash"}


def set_user_enabled(store: Store, user_id: str, enabled: bool) -> None:
    store.db["users"].update(user_id, {"enabled": int(enabled)})
    if not enabled:
        revoke_before(store, "user", user_id)


def set_user_password(store: Store, user_id: str, password: str) -> None:
    """A new password; tokens issued before it stop validating."""
    if len(password) < MIN_PASSWORD:
        raise IdentityError("invalid", f"password must have at least {MIN_PASSWORD} characters")
    store.db["users"].update(user_id, {"password_hash": hash_secret(password)})
    revoke_before(store, "user", user_id)


def user_count(store: Store) -> int:
    return store.db["users"].count


# -- role assignments --------------------------------------------------------------------


def roles_of(store: Store, user_id: str, project_id: str) -> set[str]:
    rows = store.query(
        "SELECT role FROM assignments WHERE user_id = ? AND project_id = ?", (user_id, project_id)
    )
    return {r["role"] for r in rows}


def grant(store: Store, user_id: str, project_id: str, role: str) -> bool:
    """Give ``role``; False when the user already held it."""
    if role not in ROLES:
        raise IdentityError("invalid", f"role must be one of {', '.join(ROLES)}")
    if role in roles_of(store, user_id, project_id):
        return False
    store.db["assignments"].insert({"user_id": user_id, "project_id": project_id, "role": role})
    return True


def ungrant(store: Store, user_id: str, project_id: str, role: str) -> bool:
    """Take ``role`` away; False when the user did not hold it."""
    cur = store.conn.execute(
        "DELETE FROM assignments WHERE user_id = ? AND project_id = ? AND role = ?",
        (user_id, project_id, role),
    )
    return cur.rowcount > 0


def assignments(store: Store, project_id: str | None = None) -> list[dict[str, Any]]:
    sql = (
        "SELECT a.user_id, u.name AS user_name, a.project_id, p.name AS project_name, a.role "
        "FROM assignments a JOIN users u ON u.id = a.user_id JOIN projects p "
        "ON p.id = a.project_id"
    )
    if project_id is None:
        return store.query(sql + " ORDER BY p.name, u.name, a.role")
    return store.query(sql + " WHERE a.project_id = ? ORDER BY u.name, a.role", (project_id,))


# -- application credentials -----------------------------------------------------------


def app_credential_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "user_id": row["user_id"],
        "project_id": row["project_id"],
        "roles": json.loads(row["roles"]),
        "expires_at": row["expires_at"],
        "created_at": row["created_at"],
    }


def app_credential(store: Store, cred_id: str) -> dict[str, Any] | None:
    return _one(store, "SELECT * FROM app_credentials WHERE id = ?", cred_id)


def app_credentials(store: Store, user_id: str) -> list[dict[str, Any]]:
    return store.query(
        "SELECT * FROM app_credentials WHERE user_id = ? ORDER BY created_at, id", (user_id,)
    )


def create_app_credential(
    store: Store,
    user_id: str,
    project_id: str,
    name: str,
    roles: list[str],
    expires_at: float | None,
) -> tuple[dict[str, Any], str]:
    """A new credential and its secret (the only time the secret exists in clear)."""
    secret = new_secret()
    row = {
        "id": secrets.token_hex(16),
        "name": name,
        "user_id": user_id,
        "project_id": project_id,
        "secret_hash": hash_secret(secret),
        "roles": json.dumps(sorted(set(roles))),
        "expires_at": expires_at,
        "created_at": now(),
    }
    store.db["app_credentials"].insert(row)
    return row, secret


def delete_app_credential(store: Store, cred_id: str) -> None:
    store.db["app_credentials"].delete(cred_id)


# -- revocations ------------------------------------------------------------------------


def revoke_token(store: Store, jti: str, until: float) -> None:
    """Refuse token ``jti``; the row can go once ``until`` (its expiry) passed."""
    store.db["revocations"].upsert(
        {"kind": "token", "target": jti, "until": until, "created_at": now()},
        pk=("kind", "target"),
    )


def revoke_before(store: Store, kind: str, target: str, at: float | None = None) -> None:
    """Refuse every token of a user or project issued before ``at`` (now)."""
    # A millisecond ahead: token iat is rounded to the millisecond, maybe upwards.
    until = at if at is not None else now() + 0.001
    store.db["revocations"].upsert(
        {"kind": kind, "target": target, "until": until, "created_at": now()},
        pk=("kind", "target"),
    )


# -- bootstrap --------------------------------------------------------------------------


def bootstrap(store: Store, user_name: str, password: str) -> dict[str, Any]:
    """The first user, ``admin`` on the admin project; refused once any user exists."""
    if user_count(store) > 0:
        raise IdentityError("conflict", "users exist already; bootstrap runs only once")
    admin = project_by_name(store, ADMIN_PROJECT) or create_project(store, ADMIN_PROJECT)
    created = create_user(store, user_name, password)
    grant(store, created["id"], admin["id"], "admin")
    return created
