"""Tokens and the identity snapshot: the contract between central and sites.

central signs tokens (JWS compact, EdDSA over Ed25519, ``kid`` in the header)
and sends every site an *identity snapshot* in its desired-state document:
the token-verification public keys, projects, users, role assignments and
revocations. Both central and sites validate a token with :func:`verify`
against a snapshot, so a site decides exactly as central would, offline.

Claims: ``iss`` (the issuer), ``sub`` (user id), ``name`` (user name), ``prj``
(project id), ``roles``, ``jti`` (token id), ``iat``, ``exp``, and ``acr``
(application credential id) when one was used. A token's roles only count
while the user still holds them in that project, per the snapshot.

The snapshot section of a document::

    {"issuer": "skerry", "admin_project": "<project id>",
     "keys": {"<kid>": "<base64url raw Ed25519 public key>"},
     "projects": {"<id>": {"name": "...", "enabled": true}},
     "users": {"<id>": {"name": "...", "enabled": true}},
     "assignments": {"<user id>": {"<project id>": ["member", ...]}},
     "revoked_tokens": {"<jti>": <exp>},
     "revoked_before": {"user:<id>": <time>, "project:<id>": <time>}}
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "EdDSA"
ROLES = ("reader", "member", "admin")
CLOCK_SKEW_S = 60.0
_JWS = jwt.PyJWS(algorithms=[ALGORITHM])


class TokenError(Exception):
    """A token that must be refused (HTTP 401); ``reason`` says why, never the token."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Principal:
    """Who a valid token speaks for, with the roles it may use now."""

    user_id: str
    user_name: str
    project_id: str
    roles: frozenset[str]
    token_id: str
    expires_at: float
    admin_project: str = ""
    app_credential: str | None = None

    @property
    def can_write(self) -> bool:
        return bool(self.roles & {"member", "admin"})

    @property
    def is_cloud_admin(self) -> bool:
        """``admin`` on the admin project: sees and manages everything."""
        return "admin" in self.roles and self.project_id == self.admin_project


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class IdentitySnapshot:
    """What a token is checked against (see the module docstring for the shape)."""

    issuer: str = "skerry"
    admin_project: str = ""
    keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    projects: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    assignments: dict[str, dict[str, frozenset[str]]] = field(default_factory=dict)
    revoked_tokens: dict[str, float] = field(default_factory=dict)
    revoked_before: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> IdentitySnapshot:
        """Build from a document's ``identity`` section; ValueError names what is wrong."""
        try:
            keys = {
                str(kid): Ed25519PublicKey.from_public_bytes(unb64url(str(pub)))
                for kid, pub in dict(section.get("keys", {})).items()
            }
            assignments = {
                str(user): {str(p): frozenset(map(str, roles)) for p, roles in dict(prj).items()}
                for user, prj in dict(section.get("assignments", {})).items()
            }
            return cls(
                issuer=str(section.get("issuer", "skerry")),
                admin_project=str(section.get("admin_project", "")),
                keys=keys,
                projects={str(k): dict(v) for k, v in dict(section.get("projects", {})).items()},
                users={str(k): dict(v) for k, v in dict(section.get("users", {})).items()},
                assignments=assignments,
                revoked_tokens={
                    str(k): float(v) for k, v in dict(section.get("revoked_tokens", {})).items()
                },
                revoked_before={
                    str(k): float(v) for k, v in dict(section.get("revoked_before", {})).items()
                },
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"identity section is malformed: {exc}") from None


def issue(
    key: Ed25519PrivateKey,
    kid: str,
    *,
    issuer: str,
    user_id: str,
    user_name: str,
    project_id: str,
    roles: Iterable[str],
    ttl_s: float,
    app_credential: str | None = None,
    now: float | None = None,
) -> tuple[str, dict[str, Any]]:
    """A signed token and its claims."""
    # Sub-second iat: a revocation at time T catches exactly the tokens issued before T.
    issued = round(now if now is not None else time.time(), 3)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": user_id,
        "name": user_name,
        "prj": project_id,
        "roles": sorted(set(roles)),
        "jti": uuid.uuid4().hex,
        "iat": issued,
        "exp": round(issued + ttl_s, 3),
    }
    if app_credential:
        claims["acr"] = app_credential
    payload = json.dumps(claims, separators=(",", ":")).encode()
    token = _JWS.encode(payload, key, algorithm=ALGORITHM, headers={"kid": kid})
    return token, claims


def _claims(token: str, snap: IdentitySnapshot) -> dict[str, Any]:
    """Signature and shape: the library checks the JWS and refuses any other alg."""
    if not isinstance(token, str) or token.count(".") != 2 or len(token) > 4096:
        raise TokenError("malformed", "token is not a compact JWS")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenError("malformed", "token header is unreadable") from None
    if header.get("alg") != ALGORITHM:
        raise TokenError("bad_algorithm", f"token algorithm must be {ALGORITHM}")
    key = snap.keys.get(str(header.get("kid")))
    if key is None:
        raise TokenError("unknown_key", "token signed with an unknown key")
    try:
        payload = _JWS.decode_complete(token, key, algorithms=[ALGORITHM])["payload"]
    except jwt.InvalidSignatureError:
        raise TokenError("bad_signature", "token signature is invalid") from None
    except jwt.PyJWTError:
        raise TokenError("malformed", "token cannot be decoded") from None
    try:
        claims = json.loads(payload)
    except ValueError:
        raise TokenError("malformed", "token claims are not JSON") from None
    if not isinstance(claims, dict):
        raise TokenError("malformed", "token claims are not an object")
    return claims


def verify(token: str, snap: IdentitySnapshot, now: float | None = None) -> Principal:
    """The principal a token speaks for, or TokenError saying why it is refused."""
    claims = _claims(token, snap)
    now = now if now is not None else time.time()
    try:
        user_id, project_id, jti = str(claims["sub"]), str(claims["prj"]), str(claims["jti"])
        issued, expires = float(claims["iat"]), float(claims["exp"])
        roles = frozenset(map(str, claims["roles"]))
    except (KeyError, TypeError, ValueError):
        raise TokenError("malformed", "token lacks a required claim") from None
    if claims.get("iss") != snap.issuer:
        raise TokenError("wrong_issuer", "token is from another issuer")
    if expires <= now:
        raise TokenError("expired", "token has expired")
    if issued > now + CLOCK_SKEW_S:
        raise TokenError("not_yet_valid", "token is issued in the future")
    if jti in snap.revoked_tokens:
        raise TokenError("revoked", "token has been revoked")
    user, project = snap.users.get(user_id), snap.projects.get(project_id)
    if user is None or not user.get("enabled", False):
        raise TokenError("user_disabled", "user is unknown or disabled")
    if project is None or not project.get("enabled", False):
        raise TokenError("project_disabled", "project is unknown or disabled")
    cutoff = max(
        snap.revoked_before.get(f"user:{user_id}", -1.0),
        snap.revoked_before.get(f"project:{project_id}", -1.0),
    )
    if issued < cutoff:
        raise TokenError("revoked", "token has been revoked")
    held = snap.assignments.get(user_id, {}).get(project_id, frozenset())
    effective = roles & held
    if not effective:
        raise TokenError("no_role", "user holds no role in the token's project")
    return Principal(
        user_id=user_id,
        user_name=str(claims.get("name", "")),
        project_id=project_id,
        roles=effective,
        token_id=jti,
        expires_at=expires,
        admin_project=snap.admin_project,
        app_credential=claims.get("acr"),
    )


def public_key_text(key: Ed25519PrivateKey) -> str:
    """The base64url raw public key, as carried in snapshots."""
    from cryptography.hazmat.primitives import serialization

    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return b64url(raw)
