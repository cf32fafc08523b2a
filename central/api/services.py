"""What the API blueprints reach through the app: the store, the hub, the config."""

from __future__ import annotations

from dataclasses import dataclass

from quart import current_app

from central.config import CentralConfig
from central.hub import Hub
from central.store import Store


@dataclass
class Services:
    config: CentralConfig
    store: Store
    hub: Hub


def services() -> Services:
    return current_app.extensions["skerry"]
