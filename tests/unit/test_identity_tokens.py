"""Tokens at central: every refused token is a 401 JSON error (never a 500),
application credentials, revocation, disabling, key rotation and retirement."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from quart import Quart

from central import orchestrator
from edged.tokens import b64url, issue
from tests.unit.identity_support import (
    ADMIN_PASSWORD,
    FLAVOR,
    PASSWORD,
    TokenClient,
    client_with,
    login,
    make_project,
    make_user,
    ok,
    store_of,
)


@pytest.fixture
async def member(app: Quart, admin: TokenClient) -> dict[str, Any]:
    """A member of project p1 with a token, and a site to put servers at."""
    project = await make_project(admin, "p1")
    user = await make_user(admin, "alice", project["id"], "member")
    await ok(await admin.post("/v1/sites", json={"name": "edge-a"}), 201)
    issued = await login(app, "alice", PASSWORD, "p1")
    return {"user": user, "project": project, **issued}


def signing_key(app: Quart) -> tuple[str, Ed25519PrivateKey]:
    row = store_of(app).one(
        "SELECT kid, private_pem FROM signing_keys WHERE state = 'active' ORDER BY created_at DESC"
    )
    key = serialization.load_pem_private_key(row["private_pem"].encode(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return row["kid"], key


def forge(app: Quart, member: dict[str, Any], **kw: Any) -> str:
    kid, key = signing_key(app)
    args: dict[str, Any] = {
        "issuer": "skerry",
        "user_id": member["user"]["id"],
        "user_name": "alice",
        "project_id": member["project"]["id"],
        "roles": ["member"],
        "ttl_s": 600,
    }
    args.update(kw)
    return issue(key, kid, **args)[0]


async def refused(app: Quart, token: str, reason: str | None = None) -> dict[str, Any]:
    resp = await client_with(app, token).get("/v1/servers")
    assert resp.status_code == 401, await resp.get_data()
    body = await resp.get_json()
    assert body["error"]["code"] == "unauthorized"
    if reason:
        assert reason in body["error"]["message"]
    assert token not in json.dumps(body) or not token
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    return body


async def test_token_works_in_both_headers(app: Quart, member: dict[str, Any]) -> None:
    for headers in (
        {"Authorization": f"Bearer {member['token']}"},
        {"X-Auth-Token": member["token"]},
    ):
        resp = await app.test_client().get("/v1/servers", headers=headers)
        assert resp.status_code == 200
    me = await ok(await client_with(app, member["token"]).get("/v1/auth/token"))
    assert me["user"]["name"] == "alice" and me["roles"] == ["member"]
    assert me["is_cloud_admin"] is False


async def test_login_answer(app: Quart, member: dict[str, Any]) -> None:
    assert member["user"]["name"] == "alice"
    assert member["project"]["name"] == "p1"
    assert member["roles"] == ["member"]
    assert 3590 < member["expires_at"] - time.time() <= 3600
    header = jwt.get_unverified_header(member["token"])
    assert header["alg"] == "EdDSA" and header["kid"]


@pytest.mark.parametrize(
    "body",
    [
        {"password": {"user": "alice", "password": "wrong-password", "project": "p1"}},
        {"password": {"user": "nobody", "password": PASSWORD, "project": "p1"}},
        {"password": {"user": "alice", "password": PASSWORD, "project": "admin"}},
        {"password": {"user": "alice", "password": PASSWORD, "project": "nope"}},
        {"application_credential": {"id": "nope", "secret": "nope"}},
    ],
)
async def test_bad_logins_are_401(app: Quart, member: dict[str, Any], body: Any) -> None:
    resp = await app.test_client().post("/v1/auth/tokens", json=body)
    assert resp.status_code == 401
    err = (await resp.get_json())["error"]
    assert err["code"] == "unauthorized"
    assert PASSWORD not in err["message"]


async def test_login_body_needs_exactly_one_method(app: Quart) -> None:
    resp = await app.test_client().post("/v1/auth/tokens", json={})
    assert resp.status_code == 400


async def test_refused_tokens_are_401_never_500(app: Quart, member: dict[str, Any]) -> None:
    token = member["token"]
    head, payload, sig = token.split(".")
    other = Ed25519PrivateKey.generate()
    kid, _key = signing_key(app)
    wrong_sig = issue(
        other,
        kid,
        issuer="skerry",
        user_id="u",
        user_name="n",
        project_id="p",
        roles=["member"],
        ttl_s=60,
    )[0]
    alg_none = (
        b64url(json.dumps({"alg": "none", "kid": kid, "typ": "JWT"}).encode()) + "." + payload + "."
    )
    hs256 = jwt.api_jws.PyJWS().encode(
        json.dumps(jwt.decode(token, options={"verify_signature": False})).encode(),
        "a-shared-secret-long-enough-for-hs256!!",
        algorithm="HS256",
        headers={"kid": kid},
    )
    cases = {
        "abc": "malformed",
        "a.b.c": "malformed",
        token[:-12]: None,  # truncated: undecodable or a bad signature
        head + "." + payload: "malformed",
        head + "." + payload + "." + sig[::-1]: None,
        wrong_sig: "bad_signature",
        alg_none: "bad_algorithm",
        hs256: "bad_algorithm",
        forge(app, member, now=time.time() - 7200): "expired",
        forge(app, member, now=time.time() + 3600): "not_yet_valid",
        forge(app, member, issuer="someone-else"): "wrong_issuer",
        forge(app, member, user_id="ghost"): "user_disabled",
        forge(app, member, roles=["admin"]): "no_role",
        "x" * 5000: "malformed",
        "é.é.é": None,
    }
    for bad, reason in cases.items():
        await refused(app, bad, reason)
    for header in ("Bearer", "Basic abc", "Bearer a b", ""):
        resp = await app.test_client().get("/v1/servers", headers={"Authorization": header})
        assert resp.status_code == 401, header


async def test_revoked_token(app: Quart, member: dict[str, Any]) -> None:
    alice = client_with(app, member["token"])
    second = await login(app, "alice", PASSWORD, "p1")
    assert (await alice.delete(f"/v1/auth/tokens/{member['token_id']}")).status_code == 204
    await refused(app, member["token"], "revoked")
    # Only that token: the other one still works, and is refused for others' tokens.
    other = client_with(app, second["token"])
    assert (await other.get("/v1/servers")).status_code == 200
    resp = await other.delete("/v1/auth/tokens/0123456789abcdef")
    assert resp.status_code == 403
    # The revocation travels to the sites.
    _gen, doc = orchestrator.latest_document(store_of(app), "edge-a")
    assert member["token_id"] in doc["identity"]["revoked_tokens"]


async def test_admin_revokes_any_token_and_user_revokes_own(
    app: Quart, admin: TokenClient, member: dict[str, Any]
) -> None:
    resp = await admin.delete(f"/v1/auth/tokens/{member['token_id']}")
    assert resp.status_code == 204
    await refused(app, member["token"], "revoked")
    fresh = await login(app, "alice", PASSWORD, "p1")
    alice = client_with(app, fresh["token"])
    assert (await alice.post(f"/v1/users/{member['user']['id']}/revoke-tokens")).status_code == 204
    await refused(app, fresh["token"], "revoked")
    again = await login(app, "alice", PASSWORD, "p1")
    assert (await client_with(app, again["token"]).get("/v1/servers")).status_code == 200


async def test_disabling_user_or_project_revokes(
    app: Quart, admin: TokenClient, member: dict[str, Any]
) -> None:
    uid, pid = member["user"]["id"], member["project"]["id"]
    await ok(await admin.patch(f"/v1/users/{uid}", json={"enabled": False}))
    await refused(app, member["token"], "user_disabled")
    resp = await app.test_client().post(
        "/v1/auth/tokens",
        json={"password": {"user": "alice", "password": PASSWORD, "project": "p1"}},
    )
    assert resp.status_code == 401
    await ok(await admin.patch(f"/v1/users/{uid}", json={"enabled": True}))
    await refused(app, member["token"], "revoked")  # stays revoked once re-enabled
    fresh = await login(app, "alice", PASSWORD, "p1")
    assert (await client_with(app, fresh["token"]).get("/v1/servers")).status_code == 200

    await ok(await admin.patch(f"/v1/projects/{pid}", json={"enabled": False}))
    await refused(app, fresh["token"], "project_disabled")
    await ok(await admin.patch(f"/v1/projects/{pid}", json={"enabled": True}))
    await refused(app, fresh["token"], "revoked")
    # The admin project cannot be disabled; an admin cannot disable themselves.
    admin_pid = store_of(app).one("SELECT id FROM projects WHERE name = 'admin'")["id"]
    resp = await admin.patch(f"/v1/projects/{admin_pid}", json={"enabled": False})
    assert resp.status_code == 409


async def test_losing_the_role_removes_it_from_the_token(
    app: Quart, admin: TokenClient, member: dict[str, Any]
) -> None:
    uid, pid = member["user"]["id"], member["project"]["id"]
    assert (await admin.put(f"/v1/projects/{pid}/users/{uid}/roles/reader")).status_code == 204
    assert (await admin.delete(f"/v1/projects/{pid}/users/{uid}/roles/member")).status_code == 204
    await refused(app, member["token"], "no_role")  # token says member, user is reader now
    resp = await admin.put(f"/v1/projects/{pid}/users/{uid}/roles/emperor")
    assert resp.status_code == 400


async def test_app_credentials(app: Quart, admin: TokenClient, member: dict[str, Any]) -> None:
    alice = client_with(app, member["token"])
    uid = member["user"]["id"]
    base = f"/v1/users/{uid}/application_credentials"
    # Only a subset of the roles the owner holds in the token's project.
    for roles in (["admin"], ["reader"], []):
        resp = await alice.post(base, json={"name": "bad", "roles": roles})
        assert resp.status_code == 403, roles
    # Admins cannot mint credentials for others (the secret belongs to its owner).
    assert (await admin.post(base, json={"name": "x"})).status_code == 403

    rw = await ok(await alice.post(base, json={"name": "rw"}), 201)
    listed = await ok(await alice.get(base))
    assert rw["secret"] not in json.dumps(listed) and "secret" not in json.dumps(listed)
    body = {"application_credential": {"id": rw["id"], "secret": rw["secret"]}}
    issued = await ok(await app.test_client().post("/v1/auth/tokens", json=body), 201)
    assert issued["roles"] == ["member"] and issued["application_credential"] == rw["id"]
    robot = client_with(app, issued["token"])
    server = {"name": "vm1", "site": "edge-a", "flavor": FLAVOR, "image": "tiny"}
    await ok(await robot.post("/v1/servers", json=server), 202)
    # A credential cannot make another credential.
    assert (await robot.post(base, json={"name": "child"})).status_code == 403
    # A wrong secret is refused; deleting the credential refuses its tokens at central.
    body["application_credential"]["secret"] = "wrong"
    assert (await app.test_client().post("/v1/auth/tokens", json=body)).status_code == 401
    assert (await alice.delete(f"{base}/{rw['id']}")).status_code == 204
    await refused(app, issued["token"], "revoked")


async def test_app_credential_roles_limit_the_token(
    app: Quart, admin: TokenClient, member: dict[str, Any]
) -> None:
    uid, pid = member["user"]["id"], member["project"]["id"]
    assert (await admin.put(f"/v1/projects/{pid}/users/{uid}/roles/reader")).status_code == 204
    alice = client_with(app, (await login(app, "alice", PASSWORD, "p1"))["token"])
    base = f"/v1/users/{uid}/application_credentials"
    cred = await ok(await alice.post(base, json={"name": "ro", "roles": ["reader"]}), 201)
    body = {"application_credential": {"id": cred["id"], "secret": cred["secret"]}}
    issued = await ok(await app.test_client().post("/v1/auth/tokens", json=body), 201)
    assert issued["roles"] == ["reader"]
    robot = client_with(app, issued["token"])
    assert (await robot.get("/v1/servers")).status_code == 200
    server = {"name": "vm1", "site": "edge-a", "flavor": FLAVOR, "image": "tiny"}
    assert (await robot.post("/v1/servers", json=server)).status_code == 403


async def test_app_credential_expires(app: Quart, member: dict[str, Any]) -> None:
    alice = client_with(app, member["token"])
    base = f"/v1/users/{member['user']['id']}/application_credentials"
    resp = await alice.post(base, json={"name": "past", "expires_at": time.time() - 1})
    assert resp.status_code == 400
    expires = time.time() + 1.5
    cred = await ok(await alice.post(base, json={"name": "short", "expires_at": expires}), 201)
    body = {"application_credential": {"id": cred["id"], "secret": cred["secret"]}}
    issued = await ok(await app.test_client().post("/v1/auth/tokens", json=body), 201)
    assert issued["expires_at"] <= expires + 0.001  # never outlives the credential
    await asyncio.sleep(max(0.0, expires - time.time()) + 0.2)
    await refused(app, issued["token"], "expired")
    assert (await app.test_client().post("/v1/auth/tokens", json=body)).status_code == 401


async def test_key_rotation_and_retirement(
    app: Quart, admin: TokenClient, member: dict[str, Any]
) -> None:
    old_kid = jwt.get_unverified_header(member["token"])["kid"]
    new = await ok(await admin.post("/v1/auth/keys/rotate"), 201)
    assert new["kid"] != old_kid and new["state"] == "active"
    fresh = await login(app, "alice", PASSWORD, "p1")
    assert jwt.get_unverified_header(fresh["token"])["kid"] == new["kid"]
    # Old tokens stay valid while their key is active; sites get both keys.
    assert (await client_with(app, member["token"]).get("/v1/servers")).status_code == 200
    _gen, doc = orchestrator.latest_document(store_of(app), "edge-a")
    assert set(doc["identity"]["keys"]) == {old_kid, new["kid"]}

    retired = await ok(await admin.post(f"/v1/auth/keys/{old_kid}/retire"))
    await refused(app, admin.token or "", "unknown_key")  # the admin's token too
    admin = client_with(app, (await login(app, "admin", ADMIN_PASSWORD, "admin"))["token"])
    assert retired["state"] == "retired"
    await refused(app, member["token"], "unknown_key")
    assert (await client_with(app, fresh["token"]).get("/v1/servers")).status_code == 200
    _gen, doc = orchestrator.latest_document(store_of(app), "edge-a")
    assert set(doc["identity"]["keys"]) == {new["kid"]}
    # The last active key stays; unknown keys are 404.
    assert (await admin.post(f"/v1/auth/keys/{new['kid']}/retire")).status_code == 409
    assert (await admin.post("/v1/auth/keys/nope/retire")).status_code == 404
    listed = await ok(await admin.get("/v1/auth/keys"))
    assert "private" not in json.dumps(listed)


async def test_identity_changes_publish_to_every_site(app: Quart, admin: TokenClient) -> None:
    for name in ("edge-a", "edge-b"):
        await ok(await admin.post("/v1/sites", json={"name": name}), 201)
    store = store_of(app)
    before = {s: orchestrator.latest_document(store, s)[0] for s in ("edge-a", "edge-b")}
    project = await make_project(admin, "p9")
    after = {s: orchestrator.latest_document(store, s) for s in ("edge-a", "edge-b")}
    for site, (gen, doc) in after.items():
        assert gen == before[site] + 1
        ident = doc["identity"]
        assert ident["projects"][project["id"]] == {"name": "p9", "enabled": True}
        assert ident["admin_project"] and ident["issuer"] == "skerry"
        assert "password" not in json.dumps(ident) and "private" not in json.dumps(ident)
    # The hub holds what it will push.
    hub = app.extensions["skerry"].hub
    assert hub.peers["edge-a"].generation == after["edge-a"][0]


async def test_admin_password_never_in_answers(app: Quart, admin: TokenClient) -> None:
    users = await ok(await admin.get("/v1/users"))
    assert ADMIN_PASSWORD not in json.dumps(users)
    assert "password_hash" not in json.dumps(users)
