"""/v1/settings (fleet-wide settings sent to every site) and /v1/hub (channel counters)."""

from __future__ import annotations

import json

from quart import Blueprint, current_app
from quart_schema import validate_request, validate_response

from central import orchestrator
from central.api.models import HubStats, Settings, SettingsView
from central.api.policy import cloud_admin
from central.api.services import fleet_change, services

bp = Blueprint("fleet", __name__, url_prefix="/v1")


@bp.get("/settings")
@validate_response(SettingsView)
async def show_settings():  # type: ignore[no-untyped-def]
    """Settings every site receives in its desired state."""
    return orchestrator.settings(services().store)


@bp.put("/settings")
@cloud_admin
@validate_request(Settings)
@validate_response(SettingsView)
async def update_settings(data: Settings):  # type: ignore[no-untyped-def]
    """Change fleet-wide settings: every site gets a new desired generation."""
    changes = data.model_dump(exclude_none=True)
    with fleet_change() as store:
        store.db["settings"].upsert_all(
            [{"key": k, "value": json.dumps(v)} for k, v in changes.items()], pk="key"
        )
    return orchestrator.settings(store)


@bp.get("/hub")
@cloud_admin
@validate_response(HubStats)
async def hub_stats():  # type: ignore[no-untyped-def]
    """Control-channel counters: messages by type, dropped frames by reason; the same
    for the image feed and object replication (receiver, scrub and repair)."""
    feed = current_app.extensions.get("skerry.image_feed")
    replication = current_app.extensions.get("skerry.replication")
    return {
        **services().hub.stats(),
        "image_feed": feed.stats() if feed else {},
        "replication": replication.stats() if replication else {},
    }
