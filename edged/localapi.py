"""The site's local API: the site's own operators, authorised offline, central or not.

A Quart app (:func:`create_local_app`) that edged serves with hypercorn inside
its own event loop on ``local_api_host:local_api_port``. Tokens (``Authorization:
Bearer`` or ``X-Auth-Token``) are validated against the identity snapshot of
the document held (:class:`~edged.identity.IdentityCache`); a project sees its
own servers, the cloud admin sees all, another project's server is 404, a
``reader`` cannot act (403), every token problem is 401.

``start``/``stop`` record a durable local power override (see
:func:`edged.reconcile.apply_overrides`) and wake the reconciler, which applies
it; ``reboot`` runs at once, serialised with the reconcile pass. Every mutation
attempt is audited as a JSON line in ``<state_dir>/local-audit.jsonl`` (never
the token).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quart import Quart, g, jsonify, request
from werkzeug.exceptions import HTTPException

from edged.drivers.compute import ComputeDriver, ComputeError
from edged.identity import IdentityCache
from edged.objects import http as object_http
from edged.objects.store import Bucket, ObjectStore
from edged.overrides import OverrideStore
from edged.reconcile import PowerOverride, apply_overrides, specs_from_document
from edged.state import LocalState
from edged.tokens import Principal, TokenError

log = logging.getLogger("edged.localapi")

ACTIONS = ("start", "stop", "reboot")
MAX_TOKEN_HEADER = 8192


@dataclass
class LocalSite:
    """What the local API needs from the daemon (passed in, never reached for)."""

    site: str
    state: LocalState
    identity: IdentityCache
    overrides: OverrideStore
    driver: ComputeDriver
    # Held around every use of the driver, by the reconcile pass too.
    driver_lock: asyncio.Lock
    audit_path: Path
    wake: Callable[[], None] = lambda: None
    central_reachable: Callable[[], bool] = lambda: False
    # The site's object store; None: no object routes.
    objects: ObjectStore | None = None
    # Per bucket, per target: the replication lag (SiteReplication.status()).
    replication: Callable[[], dict[str, dict[str, Any]]] = dict
    _audit_lock: threading.Lock = field(default_factory=threading.Lock)

    def audit(self, entry: dict[str, Any]) -> None:
        """Append one JSON line, fsynced: the operator's action is on record."""
        line = json.dumps(entry, separators=(",", ":"), sort_keys=True) + "\n"
        with self._audit_lock, self.audit_path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def local_lag(target: str, view: dict[str, Any]) -> dict[str, Any]:
    """One replication stream in the bucket view (the names central's bucket API uses)."""
    return {
        "target": target,
        "pending": view.get("pending"),
        "pending_more": view.get("pending_more", False),
        "lag_s": view.get("lag_seconds"),
        "last_ok": view.get("last_success"),
        "last_error": view.get("last_error"),
        "last_error_at": view.get("last_error_at"),
        "sent": view.get("sent", 0),
    }


class LocalApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def _error(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> Any:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return jsonify(body), status


def _token() -> str:
    auth = request.headers.get("Authorization")
    if auth is not None:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise TokenError("malformed", "Authorization must be 'Bearer <token>'")
        return value.strip()
    token = request.headers.get("X-Auth-Token")
    if token is None or not token.strip():
        raise TokenError("missing", "no token given (Authorization: Bearer or X-Auth-Token)")
    return token.strip()


Observed = tuple[int, dict[str, Any]]
Held = tuple[dict[str, Any], str, PowerOverride | None]


def _server_view(
    entry: dict[str, Any], power: str, override: PowerOverride | None, observed: Observed
) -> dict[str, Any]:
    generation, report = observed
    seen = report.get("servers", {}).get(entry["id"])
    return {
        "id": entry["id"],
        "name": entry.get("name", ""),
        "project_id": entry.get("project_id"),
        "flavor": {k: entry.get(k) for k in ("vcpus", "ram_mb", "disk_gb")},
        "image": entry.get("image"),
        "power": power,
        "document_power": entry.get("power", "running"),
        "override": None
        if override is None
        else {
            "power": override.power,
            "generation": override.generation,
            "made_at": override.made_at,
            "made_by": override.made_by,
        },
        "state": seen["state"] if seen else "pending",
        "reason": seen.get("reason", "") if seen else "",
        "observed_generation": generation,
    }


def _servers(site: LocalSite) -> tuple[int, Observed, list[Held]]:
    """Generation, last observation, [(entry, effective power, override in force)]."""
    generation, document = site.state.generation, site.state.document()
    observed = site.state.last_observation() or (0, {"servers": {}})
    entries = list((document or {}).get("servers", []))
    overrides = site.overrides.all()
    effective, stale = apply_overrides(specs_from_document(document), overrides, generation)
    power = {s.id: s.power for s in effective}
    live = {o.server_id: o for o in overrides if o.server_id not in stale}
    return generation, observed, [(e, power[e["id"]], live.get(e["id"])) for e in entries]


def _visible(principal: Principal, entry: dict[str, Any]) -> bool:
    return principal.is_cloud_admin or entry.get("project_id") == principal.project_id


def create_local_app(site: LocalSite) -> Quart:
    """The local API of one site."""
    app = Quart("edged.localapi")
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    # Object uploads stream past that limit, bounded by object_max_bytes instead.
    app.request_class = object_http.request_class(app.request_class)

    @app.before_request
    async def _start() -> None:
        g.request_id = uuid.uuid4().hex[:16]
        g.started = time.monotonic()

    @app.after_request
    async def _log(response):  # type: ignore[no-untyped-def]
        response.headers["X-Request-Id"] = g.get("request_id", "-")
        elapsed = (time.monotonic() - g.get("started", time.monotonic())) * 1000
        log.info(
            "[req=%s] %s %s -> %d (%.1f ms)",
            g.get("request_id", "-"),
            request.method,
            request.path,
            response.status_code,
            elapsed,
        )
        return response

    @app.errorhandler(TokenError)
    async def _unauthorized(exc: TokenError):  # type: ignore[no-untyped-def]
        log.info("[req=%s] token refused: %s", g.get("request_id", "-"), exc.reason)
        response, status = _error(401, "unauthorized", str(exc))
        response.headers["WWW-Authenticate"] = 'Bearer realm="skerry-site"'
        return response, status

    @app.errorhandler(LocalApiError)
    async def _api_error(exc: LocalApiError):  # type: ignore[no-untyped-def]
        return _error(exc.status, exc.code, exc.message, exc.details)

    @app.errorhandler(HTTPException)
    async def _http(exc: HTTPException):  # type: ignore[no-untyped-def]
        code = (exc.name or "error").lower().replace(" ", "_")
        return _error(exc.code or 500, code, exc.description or exc.name or "error")

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception):  # type: ignore[no-untyped-def]
        log.exception("[req=%s] unexpected error", g.get("request_id", "-"))
        return _error(500, "internal", "internal error")

    def principal() -> Principal:
        return site.identity.validate(_token())

    if site.objects is not None:

        async def audit_object(event: dict[str, Any]) -> None:
            await asyncio.to_thread(site.audit, {"time": time.time(), "site": site.site, **event})

        def replication_view(bucket: Bucket) -> dict[str, Any]:
            streams = site.replication().get(bucket.name, {})
            return {"replication": [local_lag(t, v) for t, v in sorted(streams.items())]}

        api = object_http.ObjectApi(
            site.objects, principal, audit_object, bucket_extra=replication_view
        )
        app.register_blueprint(object_http.object_blueprint(api))

    @app.get("/healthz")
    async def healthz():  # type: ignore[no-untyped-def]
        return jsonify(
            {
                "status": "ok",
                "site": site.site,
                "held_generation": site.state.generation,
                "central_reachable": bool(site.central_reachable()),
                "identity_generation": site.identity.generation,
            }
        )

    @app.get("/v1/servers")
    async def list_servers():  # type: ignore[no-untyped-def]
        who = principal()
        _, observed, servers = _servers(site)
        views = [_server_view(e, p, o, observed) for e, p, o in servers if _visible(who, e)]
        return jsonify({"servers": views})

    def find(who: Principal, server_id: str) -> tuple[int, Observed, Held]:
        generation, observed, servers = _servers(site)
        for held in servers:
            if held[0]["id"] == server_id and _visible(who, held[0]):
                return generation, observed, held
        # Another project's server looks exactly like one that does not exist.
        raise LocalApiError(
            404, "not_found", f"server {server_id!r} does not exist", kind="server", id=server_id
        )

    @app.get("/v1/servers/<server_id>")
    async def show_server(server_id: str):  # type: ignore[no-untyped-def]
        who = principal()
        _, observed, (entry, power, override) = find(who, server_id)
        view = _server_view(entry, power, override, observed)
        view["console"] = await asyncio.to_thread(site.driver.console_tail, server_id, 4096)
        return jsonify({"server": view})

    @app.post("/v1/servers/<server_id>/<action>")
    async def act(server_id: str, action: str):  # type: ignore[no-untyped-def]
        if action not in ACTIONS:
            raise LocalApiError(404, "not_found", f"no action {action!r}", action=action)
        who = principal()
        record = {
            "time": time.time(),
            "site": site.site,
            "request_id": g.request_id,
            "user": who.user_id,
            "user_name": who.user_name,
            "project": who.project_id,
            "action": action,
            "target": server_id,
        }
        try:
            status, body = await _act(who, server_id, action)
        except LocalApiError as exc:
            record["result"] = exc.code
            await asyncio.to_thread(site.audit, record)
            raise
        record["result"] = "ok" if status == 200 else "accepted"
        await asyncio.to_thread(site.audit, record)
        return jsonify(body), status

    async def _act(who: Principal, server_id: str, action: str) -> tuple[int, dict[str, Any]]:
        generation, observed, (entry, power, held) = find(who, server_id)
        if not who.can_write:
            raise LocalApiError(
                403, "forbidden", f"role {sorted(who.roles)} may not {action} servers"
            )
        if action == "reboot":
            if power != "running":
                raise LocalApiError(409, "conflict", f"server {server_id!r} is meant to be off")
            async with site.driver_lock:
                try:
                    await asyncio.to_thread(site.driver.reboot, server_id)
                except ComputeError as exc:
                    raise LocalApiError(409, "conflict", exc.reason, id=server_id) from None
            site.wake()
            return 200, {"server": _server_view(entry, power, held, observed)}
        wanted = "running" if action == "start" else "stopped"
        document_power = entry.get("power", "running")
        async with site.driver_lock:  # never write while a pass writes the same database
            if wanted == document_power:
                await asyncio.to_thread(site.overrides.drop, [server_id])
                override = None
            else:
                override = PowerOverride(
                    server_id=server_id,
                    power=wanted,  # type: ignore[arg-type]
                    generation=generation,
                    against=document_power,
                    made_at=time.time(),
                    made_by=who.user_id,
                )
                await asyncio.to_thread(site.overrides.set, override)
        log.info(
            "[req=%s] %s %s by %s: local power override %s",
            g.request_id,
            action,
            server_id,
            who.user_id,
            wanted if override else "cleared",
        )
        site.wake()
        return 202, {"server": _server_view(entry, wanted, override, observed)}

    return app
