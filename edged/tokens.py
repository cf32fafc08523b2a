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
import math
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "EdDSA"
ROLES = ("reader", "member", "admin")
CLOCK_SKEW_S = 60.0
_COMPACT = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)", re.ASCII)


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
        return bool(self.admin_project) and (
            "admin" in self.roles and self.project_id == self.admin_project
        )


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _role_set(roles: Any) -> frozenset[str]:
    # A bare string would otherwise become a set of its characters.
    if isinstance(roles, str | bytes | Mapping):
        raise ValueError(f"roles must be a list, got {roles!r}")
    return frozenset(map(str, roles))


def _entity(entry: Any) -> dict[str, Any]:
    # "enabled": "false" must not count as enabled; SQLite's 0/1 are fine.
    entry = dict(entry)
    if not isinstance(entry.get("enabled", False), bool | int):
        raise ValueError(f"'enabled' must be true or false, got {entry['enabled']!r}")
    return entry


def _number(claims: Mapping[str, Any], name: str) -> float:
    """A finite numeric claim: NaN would pass every expiry and cut-off comparison."""
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(name)
    return float(value)


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
                str(user): {str(p): _role_set(roles) for p, roles in dict(prj).items()}
                for user, prj in dict(section.get("assignments", {})).items()
            }
            return cls(
                issuer=str(section.get("issuer", "skerry")),
                admin_project=str(section.get("admin_project", "")),
                keys=keys,
                projects={str(k): _entity(v) for k, v in dict(section.get("projects", {})).items()},
                users={str(k): _entity(v) for k, v in dict(section.get("users", {})).items()},
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
    # Signing happens at central only; sites never import PyJWT (it costs them memory).
    import jwt

    token = jwt.PyJWS(algorithms=[ALGORITHM]).encode(
        payload, key, algorithm=ALGORITHM, headers={"kid": kid}
    )
    return token, claims


def _segment(text: str) -> bytes:
    """Strict base64url: unpadded and canonical, so a token has exactly one spelling."""
    if len(text) % 4 == 1:
        raise ValueError("bad base64url length")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url(raw) != text:
        raise ValueError("non-canonical base64url")
    return raw


def _claims(token: str, snap: IdentitySnapshot) -> dict[str, Any]:
    """Signature and shape: one strict parse, then an Ed25519 verify (cryptography).

    Parsed here once rather than by ``PyJWS.decode_complete`` after
    ``get_unverified_header`` (two full parses, each with a per-character
    Python loop): that doubled the cost of a validation on top of the signature
    itself (bench/tokens.py). Only EdDSA is ever tried; no JWS extension
    (``crit``, ``b64``) is accepted.
    """
    if not isinstance(token, str) or len(token) > 4096:
        raise TokenError("malformed", "token is not a compact JWS")
    match = _COMPACT.fullmatch(token)
    if match is None:
        raise TokenError("malformed", "token is not a compact JWS")
    head, body, sig = match.groups()
    try:
        header = json.loads(_segment(head))
    except (ValueError, RecursionError):
        raise TokenError("malformed", "token header is unreadable") from None
    if not isinstance(header, dict):
        raise TokenError("malformed", "token header is unreadable")
    if header.get("alg") != ALGORITHM:
        raise TokenError("bad_algorithm", f"token algorithm must be {ALGORITHM}")
    if "crit" in header or "b64" in header:
        raise TokenError("malformed", "token uses a JWS extension")
    kid = header.get("kid")
    key = snap.keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise TokenError("unknown_key", "token signed with an unknown key")
    try:
        signature, payload = _segment(sig), _segment(body)
    except ValueError:
        raise TokenError("malformed", "token cannot be decoded") from None
    try:
        key.verify(signature, f"{head}.{body}".encode())
    except InvalidSignature:
        raise TokenError("bad_signature", "token signature is invalid") from None
    try:
        claims = json.loads(payload)
    except (ValueError, RecursionError):
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
        issued, expires = _number(claims, "iat"), _number(claims, "exp")
        if not isinstance(claims["roles"], list):
            raise TypeError("roles")
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
