"""The identity section of desired-state documents, built from the store.

The same section, parsed with :meth:`edged.tokens.IdentitySnapshot.from_section`,
is what central verifies its own API tokens against, so central and every site
decide alike. The shape is documented in ``edged/tokens.py``.
"""

from __future__ import annotations

from typing import Any

from central.store import Store, now

ISSUER = "skerry"
ADMIN_PROJECT = "admin"


def admin_project_id(store: Store) -> str:
    row = store.one("SELECT id FROM projects WHERE name = ?", (ADMIN_PROJECT,))
    return row["id"] if row else ""


def prune_revocations(store: Store, at: float | None = None) -> int:
    """Forget token revocations whose token has expired anyway; returns how many."""
    cur = store.conn.execute(
        "DELETE FROM revocations WHERE kind = 'token' AND until < ?",
        (at if at is not None else now(),),
    )
    return cur.rowcount


def build_section(store: Store) -> dict[str, Any]:
    """The ``identity`` section of a document, as the records say now."""
    assignments: dict[str, dict[str, list[str]]] = {}
    for row in store.query("SELECT user_id, project_id, role FROM assignments ORDER BY role"):
        assignments.setdefault(row["user_id"], {}).setdefault(row["project_id"], []).append(
            row["role"]
        )
    revoked_tokens: dict[str, float] = {}
    revoked_before: dict[str, float] = {}
    for row in store.query("SELECT kind, target, until FROM revocations ORDER BY kind, target"):
        if row["kind"] == "token":
            revoked_tokens[row["target"]] = row["until"]
        else:
            revoked_before[f"{row['kind']}:{row['target']}"] = row["until"]
    return {
        "issuer": ISSUER,
        "admin_project": admin_project_id(store),
        "keys": {
            r["kid"]: r["public_key"]
            for r in store.query(
                "SELECT kid, public_key FROM signing_keys WHERE state = 'active' ORDER BY kid"
            )
        },
        "projects": {
            r["id"]: {"name": r["name"], "enabled": bool(r["enabled"])}
            for r in store.query("SELECT id, name, enabled FROM projects ORDER BY id")
        },
        "users": {
            r["id"]: {"name": r["name"], "enabled": bool(r["enabled"])}
            for r in store.query("SELECT id, name, enabled FROM users ORDER BY id")
        },
        "assignments": assignments,
        "revoked_tokens": revoked_tokens,
        "revoked_before": revoked_before,
    }
