"""edged.tokens: issue -> verify, and every reason a token is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edged.tokens import (
    IdentitySnapshot,
    Principal,
    TokenError,
    b64url,
    issue,
    public_key_text,
    verify,
)

NOW = 1_800_000_000.0
KEY = Ed25519PrivateKey.generate()


def section(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "issuer": "skerry",
        "admin_project": "p-admin",
        "keys": {"k1": public_key_text(KEY)},
        "projects": {
            "p1": {"name": "one", "enabled": True},
            "p2": {"name": "two", "enabled": True},
            "p-admin": {"name": "admin", "enabled": True},
            "p-off": {"name": "off", "enabled": False},
        },
        "users": {
            "u1": {"name": "alice", "enabled": True},
            "u-root": {"name": "root", "enabled": True},
            "u-off": {"name": "mallory", "enabled": False},
        },
        "assignments": {
            "u1": {"p1": ["member", "reader"], "p2": ["reader"], "p-off": ["member"]},
            "u-root": {"p-admin": ["admin"], "p1": ["admin"]},
            "u-off": {"p1": ["member"]},
        },
        "revoked_tokens": {},
        "revoked_before": {},
    }
    base.update(overrides)
    return base


SNAP = IdentitySnapshot.from_section(section())


def token(
    *,
    key: Ed25519PrivateKey = KEY,
    kid: str = "k1",
    user: str = "u1",
    project: str = "p1",
    roles: tuple[str, ...] = ("member",),
    ttl: float = 3600,
    now: float = NOW,
    issuer: str = "skerry",
) -> tuple[str, dict[str, Any]]:
    return issue(
        key,
        kid,
        issuer=issuer,
        user_id=user,
        user_name="alice",
        project_id=project,
        roles=roles,
        ttl_s=ttl,
        now=now,
    )


def refused(tok: Any, snap: IdentitySnapshot = SNAP, now: float = NOW + 1) -> str:
    with pytest.raises(TokenError) as err:
        verify(tok, snap, now=now)
    assert str(err.value)  # a message for humans, never the token
    assert tok not in str(err.value) if isinstance(tok, str) and tok else True
    return err.value.reason


def forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    def part(obj: dict[str, Any]) -> str:
        return b64url(json.dumps(obj).encode())

    return f"{part(header)}.{part(claims)}.{b64url(signature)}"


# -- the happy path ---------------------------------------------------------------------


def test_round_trip() -> None:
    tok, claims = token(roles=("member", "reader"))
    who = verify(tok, SNAP, now=NOW + 1)
    assert isinstance(who, Principal)
    assert (who.user_id, who.user_name, who.project_id) == ("u1", "alice", "p1")
    assert who.roles == {"member", "reader"}
    assert who.token_id == claims["jti"]
    assert who.expires_at == NOW + 3600
    assert who.can_write
    assert not who.is_cloud_admin
    assert who.app_credential is None
    header = json.loads(base64.urlsafe_b64decode(tok.split(".")[0] + "=="))
    assert header["alg"] == "EdDSA" and header["kid"] == "k1"


def test_distinct_token_ids() -> None:
    assert token()[1]["jti"] != token()[1]["jti"]


def test_app_credential_claim() -> None:
    tok, _ = issue(
        KEY,
        "k1",
        issuer="skerry",
        user_id="u1",
        user_name="alice",
        project_id="p1",
        roles=["member"],
        ttl_s=60,
        app_credential="ac-1",
        now=NOW,
    )
    assert verify(tok, SNAP, now=NOW).app_credential == "ac-1"


def test_effective_roles_are_the_intersection() -> None:
    # u1 holds only reader in p2: a token claiming member+reader there acts as reader.
    tok, _ = token(project="p2", roles=("member", "reader"))
    who = verify(tok, SNAP, now=NOW)
    assert who.roles == {"reader"}
    assert not who.can_write


def test_cloud_admin() -> None:
    admin = verify(token(user="u-root", project="p-admin", roles=("admin",))[0], SNAP, now=NOW)
    assert admin.is_cloud_admin
    # admin of an ordinary project is not a cloud admin
    local = verify(token(user="u-root", project="p1", roles=("admin",))[0], SNAP, now=NOW)
    assert local.can_write and not local.is_cloud_admin
    # nor is anyone when the snapshot names no admin project
    assert not Principal("u", "n", "", frozenset({"admin"}), "j", NOW).is_cloud_admin


def test_skew_within_tolerance_is_accepted() -> None:
    tok, _ = token(now=NOW + 30)
    assert verify(tok, SNAP, now=NOW).user_id == "u1"


# -- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    ["", "garbage", "a.b.c", "...", "a.b", "a.b.c.d", "x" * 5000, None, b"a.b.c", 42],
)
def test_malformed(garbage: Any) -> None:
    assert refused(garbage) == "malformed"


def test_truncated_and_two_parts() -> None:
    tok, _ = token()
    head, body, sig = tok.split(".")
    assert refused(f"{head}.{body}") == "malformed"
    assert refused(tok[: len(tok) // 2]) == "malformed"
    assert refused(f"{head}.{body}.{sig[:10]}") in ("malformed", "bad_signature")
    assert refused(f"{head[:5]}.{body}.{sig}") == "malformed"


def test_payload_not_json() -> None:
    header = b64url(json.dumps({"alg": "EdDSA", "kid": "k1", "typ": "JWT"}).encode())
    payload = b64url(b"not json at all")
    signing_input = f"{header}.{payload}".encode()
    tok = f"{header}.{payload}.{b64url(KEY.sign(signing_input))}"
    assert refused(tok) == "malformed"
    # JSON but not an object
    payload = b64url(b"[1, 2]")
    tok = f"{header}.{payload}.{b64url(KEY.sign(f'{header}.{payload}'.encode()))}"
    assert refused(tok) == "malformed"


def signed(claims: dict[str, Any]) -> str:
    header = b64url(json.dumps({"alg": "EdDSA", "kid": "k1"}).encode())
    payload = b64url(json.dumps(claims).encode())
    return f"{header}.{payload}.{b64url(KEY.sign(f'{header}.{payload}'.encode()))}"


@pytest.mark.parametrize(
    "change",
    [
        {"iat": None},
        {"exp": "soon"},
        {"exp": float("nan")},
        {"iat": float("nan")},
        {"exp": True},
        {"roles": "member"},
        {"sub": None, "drop": "sub"},
        {"drop": "jti"},
        {"drop": "roles"},
    ],
)
def test_bad_claims_are_malformed(change: dict[str, Any]) -> None:
    _, claims = token()
    drop = change.pop("drop", None)
    claims.update(change)
    if drop:
        claims.pop(drop)
    assert refused(signed(claims)) == "malformed"


def test_bad_signature_other_key_same_kid() -> None:
    tok, _ = token(key=Ed25519PrivateKey.generate(), kid="k1")
    assert refused(tok) == "bad_signature"


def test_tampered_claims_bad_signature() -> None:
    tok, claims = token()
    head, _body, sig = tok.split(".")
    claims["prj"] = "p2"
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    assert refused(f"{head}.{body}.{sig}") == "bad_signature"


def test_unknown_kid() -> None:
    assert refused(token(kid="k9")[0]) == "unknown_key"
    _, claims = token()
    assert refused(forge({"alg": "EdDSA"}, claims, b"x" * 64)) == "unknown_key"


def test_alg_none() -> None:
    _, claims = token()
    tok = forge({"alg": "none", "kid": "k1", "typ": "JWT"}, claims)
    assert refused(tok) == "bad_algorithm"
    assert refused(tok.rstrip(".") + ".") == "bad_algorithm"
    assert refused(forge({"alg": "None", "kid": "k1"}, claims)) == "bad_algorithm"


def test_hs256_with_the_public_key_as_secret() -> None:
    # The classic confusion attack: HMAC keyed with the (public) verification key.
    _, claims = token()
    header = b64url(json.dumps({"alg": "HS256", "kid": "k1", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    secret = section()["keys"]["k1"].encode()
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert refused(f"{header}.{payload}.{b64url(mac)}") == "bad_algorithm"


def test_expired() -> None:
    tok, _ = token(ttl=10)
    assert refused(tok, now=NOW + 10) == "expired"
    assert refused(tok, now=NOW + 1000) == "expired"


def test_issued_in_the_future() -> None:
    tok, _ = token(now=NOW + 120)
    assert refused(tok, now=NOW) == "not_yet_valid"


def test_wrong_issuer() -> None:
    assert refused(token(issuer="someone-else")[0]) == "wrong_issuer"


def test_revoked_jti() -> None:
    tok, claims = token()
    snap = IdentitySnapshot.from_section(section(revoked_tokens={claims["jti"]: NOW + 3600}))
    assert refused(tok, snap) == "revoked"
    assert verify(token()[0], snap, now=NOW).user_id == "u1"  # another token still works


def test_user_disabled_or_unknown() -> None:
    assert refused(token(user="u-off")[0]) == "user_disabled"
    assert refused(token(user="u-nobody")[0]) == "user_disabled"
    no_flag = section()
    no_flag["users"]["u1"] = {"name": "alice"}  # enabled must be said
    assert refused(token()[0], IdentitySnapshot.from_section(no_flag)) == "user_disabled"


def test_project_disabled_or_unknown() -> None:
    assert refused(token(project="p-off")[0]) == "project_disabled"
    assert refused(token(project="p-nowhere")[0]) == "project_disabled"


@pytest.mark.parametrize("scope", ["user:u1", "project:p1"])
def test_revoked_before(scope: str) -> None:
    before, _ = token(now=NOW)
    after, _ = token(now=NOW + 5)
    snap = IdentitySnapshot.from_section(section(revoked_before={scope: NOW + 1}))
    assert refused(before, snap, now=NOW + 10) == "revoked"
    assert verify(after, snap, now=NOW + 10).user_id == "u1"


def test_role_removed_is_no_role() -> None:
    tok, _ = token(roles=("member",))
    assert verify(tok, SNAP, now=NOW).roles == {"member"}
    changed = section()
    changed["assignments"]["u1"]["p1"] = ["reader"]
    assert refused(tok, IdentitySnapshot.from_section(changed)) == "no_role"
    changed["assignments"]["u1"].pop("p1")
    assert refused(tok, IdentitySnapshot.from_section(changed)) == "no_role"


def test_error_never_carries_the_token() -> None:
    tok, _ = token(ttl=1)
    with pytest.raises(TokenError) as err:
        verify(tok, SNAP, now=NOW + 5)
    assert tok not in repr(err.value) and tok.split(".")[2] not in str(err.value)


def test_real_clock_default() -> None:
    tok, _ = token(now=time.time())
    assert verify(tok, SNAP).user_id == "u1"


# -- the snapshot section ---------------------------------------------------------------


def test_from_section_empty_and_defaults() -> None:
    snap = IdentitySnapshot.from_section({})
    assert snap.issuer == "skerry" and snap.keys == {} and snap.users == {}
    assert refused(token()[0], snap) == "unknown_key"


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        "identity",
        {"keys": {"k1": "not-base64-key!"}},
        {"keys": {"k1": b64url(b"short")}},
        {"keys": ["k1"]},
        {"projects": {"p1": "yes"}},
        {"projects": {"p1": {"enabled": "false"}}},
        {"users": {"u1": {"enabled": "true"}}},
        {"users": [1, 2]},
        {"assignments": {"u1": ["p1"]}},
        {"assignments": {"u1": {"p1": "member"}}},
        {"assignments": {"u1": {"p1": 3}}},
        {"revoked_tokens": {"j": "never"}},
        {"revoked_before": {"user:u1": None}},
        {"revoked_before": 5},
    ],
)
def test_from_section_rejects_malformed(bad: Any) -> None:
    with pytest.raises(ValueError, match="identity section is malformed"):
        IdentitySnapshot.from_section(bad)


def test_strict_compact_form() -> None:
    tok, _ = token()
    head, body, sig = tok.split(".")
    assert verify(tok, SNAP, now=NOW).user_id == "u1"
    # padding, other alphabets, whitespace: one token has one spelling
    assert refused(f"{head}.{body}.{sig}=") == "malformed"
    assert refused(f"{head}.{body}.+{sig[1:]}") == "malformed"
    assert refused(f"{head}.{body}./{sig[1:]}") == "malformed"
    assert refused(f" {tok}") == "malformed"
    assert refused(f"{head}.{body}.{sig}\n") == "malformed"
    assert refused(f"{head}.{body}.é{sig}") == "malformed"
    # non-canonical trailing bits in the signature segment (86 chars carry 2 spare bits)
    last = sig[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = alphabet[alphabet.index(last) ^ 1]
    assert refused(f"{head}.{body}.{sig[:-1]}{twin}") == "malformed"


def test_jws_extensions_refused() -> None:
    _, claims = token()
    for extra in ({"crit": ["exp"]}, {"b64": False, "crit": ["b64"]}):
        header = {"alg": "EdDSA", "kid": "k1", **extra}
        h = b64url(json.dumps(header).encode())
        p = b64url(json.dumps(claims).encode())
        tok = f"{h}.{p}.{b64url(KEY.sign(f'{h}.{p}'.encode()))}"
        assert refused(tok) == "malformed"


def test_deeply_nested_json_is_malformed() -> None:
    nested = b64url(b"[" * 2500 + b"]" * 2500)
    assert refused(f"{nested}.e30.e30"[:4096]) == "malformed"
    header = b64url(json.dumps({"alg": "EdDSA", "kid": "k1"}).encode())
    body = b64url(b"[" * 2000 + b"]" * 2000)
    tok = f"{header}.{body}.{b64url(KEY.sign(f'{header}.{body}'.encode()))}"
    assert refused(tok) == "malformed"


def test_empty_signature_with_eddsa_is_bad_signature() -> None:
    tok, _ = token()
    head, body, _sig = tok.split(".")
    assert refused(f"{head}.{body}.") == "bad_signature"
