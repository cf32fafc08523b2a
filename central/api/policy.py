"""Who is calling and what they may do.

Every ``/v1`` request carries a token (``Authorization: Bearer`` or
``X-Auth-Token``) unless its route is marked :func:`public`; central checks it
with :func:`edged.tokens.verify` against its cached identity snapshot, as a
site would. Routes then say what they need: :func:`cloud_admin` (``admin`` on
the admin project) or :func:`writer` (``member`` or ``admin`` in the token's
project; ``reader`` only reads). Resources of another project are reported as
not found, so their existence does not leak. Every mutating call and every
refused authentication is audited after the response is made.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

from quart import Quart, Response, current_app, g, request

from central.api.errors import ApiError
from central.api.services import fleet_change
from central.audit import AuditEvent, AuditLog
from central.config import CentralConfig
from central.hub import Hub
from central.identity import bootstrap
from central.identity.service import IdentityService
from central.identity.snapshot import prune_revocations
from central.store import Store
from edged.tokens import Principal, TokenError

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
PUBLIC_ATTR = "skerry_public"
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "bearer_format": "JWT"},
    "x_auth_token": {"type": "apiKey", "name": "X-Auth-Token", "in_": "header"},
}
SECURITY = [{"bearer": []}, {"x_auth_token": []}]
_BEARER = re.compile(r"^Bearer +(\S+)$", re.IGNORECASE)
# The API's roots: Skerry's own, and the ETSI SOL 005 / SOL 003 ones (VNF packages, LCM).
API_ROOTS = ("/v1", "/vnfpkgm/v1", "/vnflcm/v1")


# -- what the routes use ------------------------------------------------------------------


def identity() -> IdentityService:
    return current_app.extensions["skerry.identity"]


def audit_log() -> AuditLog:
    return current_app.extensions["skerry.audit"]


def principal() -> Principal:
    return g.principal


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def public(func: F) -> F:
    """The route needs no token (only ``POST /v1/auth/tokens``)."""
    setattr(func, PUBLIC_ATTR, True)
    return func


def cloud_admin(func: F) -> F:
    """Only a cloud admin may call the route (checked before the body is read)."""

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not principal().is_cloud_admin:
            raise forbidden("this needs the admin role on the admin project")
        return await func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def writer(func: F) -> F:
    """Only ``member`` or ``admin`` may call the route; a ``reader`` gets 403."""

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not principal().can_write:
            raise forbidden("the reader role cannot change anything")
        return await func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def project_scope() -> str | None:
    """The project whose resources the caller sees; None for a cloud admin (all)."""
    who = principal()
    return None if who.is_cloud_admin else who.project_id


def set_audit_target(target: str) -> None:
    g.audit_target = target


@contextlib.contextmanager
def identity_change() -> Iterator[Store]:
    """One identity change: the block's writes and every site's next document
    commit together; then the snapshot is rebuilt and the hub gets the documents."""
    with fleet_change() as store:
        yield store
        prune_revocations(store)
    identity().refresh()


# -- the hooks ----------------------------------------------------------------------------


def _token() -> str | None:
    auth = request.headers.get("Authorization")
    if auth is not None:
        match = _BEARER.match(auth.strip())
        return match.group(1) if match else ""
    return request.headers.get("X-Auth-Token")


def _is_public() -> bool:
    view = current_app.view_functions.get(request.endpoint or "")
    return view is not None and bool(getattr(view, PUBLIC_ATTR, False))


async def _authenticate() -> None:
    path = request.path
    if not any(path == r or path.startswith(r + "/") for r in API_ROOTS) or _is_public():
        return
    token = _token()
    if not token:
        g.auth_failure = "missing"
        raise ApiError(
            401,
            "unauthorized",
            "a token is required (Authorization: Bearer <token> or X-Auth-Token)",
            reason="missing",
        )
    try:
        g.principal = identity().verify(token)
    except TokenError as exc:
        g.auth_failure = exc.reason
        raise ApiError(
            401, "unauthorized", f"token refused ({exc.reason}): {exc}", reason=exc.reason
        ) from None
    except Exception as exc:  # a token must never cause a 500; the token is not logged
        log.warning("token check failed unexpectedly: %s", type(exc).__name__)
        g.auth_failure = "malformed"
        raise ApiError(
            401,
            "unauthorized",
            "token refused (malformed): token cannot be read",
            reason="malformed",
        ) from None


def _action() -> str:
    rule = request.url_rule
    path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule) if rule else request.path
    return f"{request.method} {path}"


def _target() -> str:
    given = g.get("audit_target")
    if given:
        return str(given)
    return ",".join(f"{k}={v}" for k, v in sorted((request.view_args or {}).items()))


async def _audit(response: Response) -> Response:
    status = response.status_code
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="skerry"'
    if status == 429 and g.get("retry_after"):
        response.headers["Retry-After"] = str(g.retry_after)
    if request.method not in MUTATING and status not in (401, 429):
        return response
    who: Principal | None = g.get("principal")
    audit_log().record(
        AuditEvent(
            user=who.user_name if who else str(g.get("login_name", "")),
            project=who.project_id if who else "",
            action=_action(),
            target=_target(),
            result=str(status),
            request_id=str(g.get("request_id", "")),
            source=request.remote_addr or "",
        )
    )
    return response


def install(
    app: Quart, config: CentralConfig, store: Store, hub: Hub, environ: Mapping[str, str]
) -> None:
    """Identity, authentication and the audit for ``app``; bootstraps on first start."""
    audit = AuditLog(store, config.audit_path)
    app.extensions["skerry.audit"] = audit
    published = bootstrap.on_start(store, config.keep_generations, environ)
    app.extensions["skerry.identity"] = IdentityService(
        store, config.token_ttl_s, config.login_max_failures, config.login_window_s
    )
    for site, (generation, document) in published.items():
        hub.published(site, generation, document)
    app.before_request(_authenticate)
    app.after_request(_audit)
    _audit_hub_events(hub, audit)


def _audit_hub_events(hub: Hub, audit: AuditLog) -> None:
    """The hub's security events (refused or misattributed site messages) go to the audit."""
    previous = getattr(hub, "on_security_event", None)
    if previous is None:
        return

    def record(kind: str, site: str, detail: str) -> None:
        previous(kind, site, detail)
        audit.record(
            AuditEvent(
                user="",
                project="",
                action=f"HUB {kind}",
                target=f"site={site}: {detail}",
                result="dropped",
                request_id="",
                source="hub",
            )
        )

    hub.on_security_event = record
