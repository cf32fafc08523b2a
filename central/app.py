"""The central application: Quart app factory wiring the API, the store and the hub."""

from __future__ import annotations

import logging
import os
import re
import time
import uuid

import zmq.asyncio
from quart import Quart, g, request
from quart_schema import QuartSchema

from central.api import (
    audit,
    auth,
    buckets,
    errors,
    fleet,
    identity,
    images,
    networks,
    policy,
    ports,
    servers,
    site_keys,
    sites,
    vnf_packages,
    vnflcm,
    volumes,
)
from central.api.services import Services
from central.config import CentralConfig
from central.hub import Hub
from central.image_feed import ImageFeed
from central.lcm.engine import LcmEngine
from central.replication import CentralReplication
from central.store import Store
from edged.objects import http as object_http

log = logging.getLogger("central.api")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def create_app(config: CentralConfig) -> Quart:
    """Build central's app; the hub runs while the app serves."""
    app = Quart("central")
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    # Image uploads stream to disk past that limit, bounded by image_max_bytes instead.
    app.request_class = images.UploadRequest
    # Object uploads too, bounded by object_max_bytes.
    app.request_class = object_http.request_class(app.request_class)
    # VNF package uploads too, bounded by vnf_package_max_bytes.
    app.request_class = vnf_packages.request_class(app.request_class)
    QuartSchema(
        app,
        info={"title": "Skerry central API", "version": "1"},
        swagger_ui_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
        security_schemes=policy.SECURITY_SCHEMES,
        security=policy.SECURITY,
    )
    errors.register(app)
    blueprints = (sites.bp, site_keys.bp, servers.bp, networks.bp, ports.bp, fleet.bp)
    blueprints += (images.bp, images.keys_bp, volumes.bp, vnf_packages.bp, vnflcm.bp)
    identity_bps = (auth.bp, identity.projects_bp, identity.users_bp, audit.bp)
    for bp in (*blueprints, *identity_bps):
        app.register_blueprint(bp)

    store = Store(config.state_dir / "central.db")
    ctx = zmq.asyncio.Context()
    hub = Hub(config, store, ctx)
    app.extensions["skerry"] = Services(config=config, store=store, hub=hub)
    lcm = LcmEngine(app.extensions["skerry"])
    app.extensions["skerry.lcm"] = lcm
    feed = ImageFeed(config.image_endpoint, config.image_path, hub)
    app.extensions["skerry.image_feed"] = feed
    objects = buckets.install(
        app, config, store, hub, on_corrupt=lambda b, k: replication.on_corrupt(b, k)
    )
    replication = CentralReplication(config, store, hub, objects)
    app.extensions["skerry.replication"] = replication

    @app.before_request
    async def _request_id() -> None:
        given = request.headers.get("X-Request-Id", "")
        g.request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex[:16]
        g.started = time.monotonic()

    @app.after_request
    async def _log(response):  # type: ignore[no-untyped-def]
        response.headers["X-Request-Id"] = g.get("request_id", "-")
        elapsed = (time.monotonic() - g.get("started", time.monotonic())) * 1000
        log.info(
            "%s %s -> %d (%.1f ms)", request.method, request.path, response.status_code, elapsed
        )
        return response

    # After the request-id hook: authentication and the audit need the request id.
    policy.install(app, config, store, hub, os.environ)

    @app.while_serving
    async def _hub():  # type: ignore[no-untyped-def]
        # Whatever started is stopped again, also when a later part cannot start
        # (a port in use): no socket outlives the app, so no context hangs in term().
        try:
            await hub.start()
            # After the hub: its ZAP handler admits the site keys on both sockets.
            await feed.start()
            await replication.start()
            await lcm.start()
            yield
        finally:
            await lcm.stop()
            await replication.stop()
            await feed.stop()
            await hub.stop()
            ctx.destroy(linger=0)
            store.close()
            objects.close()

    return app
