"""/v1/auth: tokens (log in, inspect, revoke) and the token-signing keys."""

from __future__ import annotations

import time

from quart import Blueprint, g
from quart_schema import security_scheme, validate_request, validate_response

from central.api.errors import ApiError, not_found
from central.api.identity_models import (
    SigningKeyList,
    SigningKeyView,
    TokenInfo,
    TokenIssued,
    TokenRequest,
)
from central.api.models import Error
from central.api.policy import (
    cloud_admin,
    forbidden,
    identity,
    identity_change,
    principal,
    public,
    set_audit_target,
)
from central.api.services import services
from central.identity import records, signing
from central.identity.service import AuthFailure, RateLimited

bp = Blueprint("auth", __name__, url_prefix="/v1/auth")


@bp.post("/tokens")
@public
@security_scheme([])
@validate_request(TokenRequest)
@validate_response(TokenIssued, 201)
@validate_response(Error, 401)
@validate_response(Error, 429)
async def issue_token(data: TokenRequest):  # type: ignore[no-untyped-def]
    """Log in with a password (user, project) or an application credential."""
    ident = identity()
    try:
        if data.password is not None:
            g.login_name = data.password.user
            issued = await ident.login_password(
                data.password.user, data.password.password, data.password.project
            )
        else:
            assert data.application_credential is not None
            g.login_name = f"appcred:{data.application_credential.id}"
            issued = await ident.login_app_credential(
                data.application_credential.id, data.application_credential.secret
            )
    except RateLimited as exc:
        g.retry_after = max(1, int(exc.retry_after + 0.999))
        raise ApiError(429, "too_many_requests", str(exc), retry_after=g.retry_after) from None
    except AuthFailure as exc:
        g.auth_failure = exc.reason
        raise ApiError(401, "unauthorized", str(exc), reason="invalid_credentials") from None
    g.login_name = issued.user["name"]
    set_audit_target(f"token_id={issued.claims['jti']}")
    return issued.view(), 201


@bp.get("/token")
@validate_response(TokenInfo)
async def show_token():  # type: ignore[no-untyped-def]
    """Who the presented token speaks for, with the roles it may use now."""
    who = principal()
    snap = identity().snapshot
    return {
        "token_id": who.token_id,
        "expires_at": who.expires_at,
        "user": {"id": who.user_id, "name": who.user_name},
        "project": {
            "id": who.project_id,
            "name": str(snap.projects.get(who.project_id, {}).get("name", "")),
        },
        "roles": sorted(who.roles),
        "is_cloud_admin": who.is_cloud_admin,
        "application_credential": who.app_credential,
    }


@bp.delete("/tokens/<token_id>")
@validate_response(Error, 403)
async def revoke_token(token_id: str):  # type: ignore[no-untyped-def]
    """Revoke a token by its id: your own, or any as cloud admin."""
    who = principal()
    if token_id == who.token_id:
        until = who.expires_at
    elif who.is_cloud_admin:
        # Unknown expiry: no token lives longer than the configured TTL.
        until = time.time() + services().config.token_ttl_s
    else:
        raise forbidden("only your own token, or any as cloud admin")
    with identity_change() as store:
        records.revoke_token(store, token_id, until)
    return "", 204


@bp.get("/keys")
@cloud_admin
@validate_response(SigningKeyList)
async def list_keys():  # type: ignore[no-untyped-def]
    """Token-signing keys (public parts): the newest active one signs, all active verify."""
    return {"keys": signing.list_keys(services().store)}


@bp.post("/keys/rotate")
@cloud_admin
@validate_response(SigningKeyView, 201)
async def rotate_key():  # type: ignore[no-untyped-def]
    """Add a signing key; new tokens use it, tokens of older active keys stay valid."""
    with identity_change() as store:
        kid = signing.add_key(store)
    set_audit_target(f"kid={kid}")
    return _key(kid), 201


@bp.post("/keys/<kid>/retire")
@cloud_admin
@validate_response(SigningKeyView)
@validate_response(Error, 404)
@validate_response(Error, 409)
async def retire_key(kid: str):  # type: ignore[no-untyped-def]
    """Retire a key: tokens it signed stop validating, here and at every site."""
    store = services().store
    row = store.one("SELECT state FROM signing_keys WHERE kid = ?", (kid,))
    if row is None:
        raise not_found("signing key", kid)
    if row["state"] == "active":
        active = store.one("SELECT count(*) AS n FROM signing_keys WHERE state = 'active'")
        if active is not None and active["n"] <= 1:
            raise ApiError(409, "conflict", "the last active key cannot be retired", kid=kid)
        with identity_change() as st:
            st.db["signing_keys"].update(kid, {"state": "retired"})
    return _key(kid)


def _key(kid: str) -> dict:
    return next(k for k in signing.list_keys(services().store) if k["kid"] == kid)
