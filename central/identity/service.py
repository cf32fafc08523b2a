"""Authentication at central: log-ins, token issue, and token verification against
a cached identity snapshot (rebuilt after every identity change).

Tokens are signed with :func:`edged.tokens.issue` and checked with
:func:`edged.tokens.verify`, exactly as sites check them offline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from central.identity import records, signing
from central.identity.passwords import check_secret
from central.identity.ratelimit import LoginLimiter
from central.identity.snapshot import build_section
from central.store import Store
from edged import tokens
from edged.tokens import IdentitySnapshot, Principal, TokenError

log = logging.getLogger(__name__)

# One message for every refused log-in: it must not tell which part was wrong.
REFUSED = "invalid credentials, or no role in that project"


class AuthFailure(Exception):
    """A refused log-in (HTTP 401); ``reason`` is for the audit, not the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(REFUSED)
        self.reason = reason


class RateLimited(Exception):
    """Too many failed log-ins for one name (HTTP 429)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many failed log-ins; try again later")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Issued:
    token: str
    claims: dict[str, Any]
    user: dict[str, Any]
    project: dict[str, Any]

    def view(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "token_id": self.claims["jti"],
            "expires_at": self.claims["exp"],
            "issued_at": self.claims["iat"],
            "user": {"id": self.user["id"], "name": self.user["name"]},
            "project": {"id": self.project["id"], "name": self.project["name"]},
            "roles": self.claims["roles"],
            "application_credential": self.claims.get("acr"),
        }


class IdentityService:
    """Log-ins and token checks; holds the snapshot central verifies against."""

    def __init__(
        self, store: Store, token_ttl_s: float, max_failures: int, window_s: float
    ) -> None:
        self.store = store
        self.token_ttl_s = token_ttl_s
        self.limiter = LoginLimiter(max_failures, window_s)
        self.section: dict[str, Any] = {}
        self.snapshot = IdentitySnapshot()
        self._app_credentials: set[str] = set()
        self.refresh()

    def refresh(self) -> None:
        """Rebuild the cached snapshot from the store (after every identity change)."""
        section = build_section(self.store)
        self.snapshot = IdentitySnapshot.from_section(section)
        self.section = section
        self._app_credentials = {
            r["id"] for r in self.store.query("SELECT id FROM app_credentials")
        }

    # -- verification -----------------------------------------------------------------

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; TokenError says why one is refused."""
        principal = tokens.verify(token, self.snapshot)
        # Central also refuses tokens of a deleted application credential (sites
        # keep honouring them until they expire: the snapshot does not list them).
        if principal.app_credential and principal.app_credential not in self._app_credentials:
            raise TokenError("revoked", "the token's application credential was deleted")
        return principal

    # -- log-ins ----------------------------------------------------------------------

    def _throttle(self, key: str) -> None:
        wait = self.limiter.retry_after(key)
        if wait is not None:
            raise RateLimited(wait)

    async def login_password(self, user_name: str, password: str, project_name: str) -> Issued:
        key = f"user:{user_name.lower()}"
        self._throttle(key)
        user = records.user_by_name(self.store, user_name)
        # scrypt costs ~50 ms of CPU: hash in a worker so the API and hub keep serving.
        stored = user["password_hash"] if user else None
        if not await asyncio.to_thread(check_secret, password, stored):
            self.limiter.failed(key)
            raise AuthFailure("bad_password" if user else "unknown_user")
        assert user is not None
        self.limiter.succeeded(key)
        if not user["enabled"]:
            raise AuthFailure("user_disabled")
        project = records.project_by_name(self.store, project_name)
        if project is None or not project["enabled"]:
            raise AuthFailure("project_unknown_or_disabled")
        roles = records.roles_of(self.store, user["id"], project["id"])
        if not roles:
            raise AuthFailure("no_role")
        return self._issue(user, project, roles)

    async def login_app_credential(self, cred_id: str, secret: str) -> Issued:
        key = f"appcred:{cred_id}"
        self._throttle(key)
        cred = records.app_credential(self.store, cred_id)
        stored = cred["secret_hash"] if cred else None
        if not await asyncio.to_thread(check_secret, secret, stored):
            self.limiter.failed(key)
            raise AuthFailure("bad_secret" if cred else "unknown_credential")
        assert cred is not None
        self.limiter.succeeded(key)
        if cred["expires_at"] is not None and cred["expires_at"] <= time.time():
            raise AuthFailure("credential_expired")
        user = records.user(self.store, cred["user_id"])
        project = records.project(self.store, cred["project_id"])
        if user is None or not user["enabled"]:
            raise AuthFailure("user_disabled")
        if project is None or not project["enabled"]:
            raise AuthFailure("project_unknown_or_disabled")
        held = records.roles_of(self.store, user["id"], project["id"])
        roles = held & set(json.loads(cred["roles"]))
        if not roles:
            raise AuthFailure("no_role")
        return self._issue(user, project, roles, cred_id, cred["expires_at"])

    def _issue(
        self,
        user: dict[str, Any],
        project: dict[str, Any],
        roles: set[str],
        app_credential: str | None = None,
        not_after: float | None = None,
    ) -> Issued:
        key = signing.newest_active(self.store)
        if key is None:
            raise RuntimeError("no active signing key")
        stamp = time.time()
        ttl = self.token_ttl_s
        if not_after is not None:
            ttl = max(0.001, min(ttl, not_after - stamp))
        token, claims = tokens.issue(
            key.private,
            key.kid,
            issuer=self.snapshot.issuer,
            user_id=user["id"],
            user_name=user["name"],
            project_id=project["id"],
            roles=roles,
            ttl_s=ttl,
            app_credential=app_credential,
            now=stamp,
        )
        log.info(
            "token %s issued to user %s in project %s (kid %s)",
            claims["jti"],
            user["name"],
            project["name"],
            key.kid,
        )
        return Issued(token, claims, user, project)
