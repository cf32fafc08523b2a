"""What the API blueprints reach through the app: the store, the hub, the config."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from quart import current_app

from central import orchestrator
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


@contextlib.contextmanager
def site_change(site: str) -> Iterator[Store]:
    """One change to ``site``'s resources: the block's writes and the site's next
    desired document commit together (or not at all); then the hub gets the document."""
    with change_at(services(), site) as store:
        yield store


@contextlib.contextmanager
def change_at(svc: Services, site: str) -> Iterator[Store]:
    """:func:`site_change` with the services given (for work outside a request)."""
    with svc.store.transaction():
        yield svc.store
        published = orchestrator.publish(svc.store, site, svc.config.keep_generations)
    svc.hub.published(site, *published)


@contextlib.contextmanager
def fleet_change() -> Iterator[Store]:
    """A change that concerns every site (fleet settings, identity): the block's
    writes and every site's next document commit together; then the hub gets them."""
    svc = services()
    with svc.store.transaction():
        yield svc.store
        published = orchestrator.publish_all(svc.store, svc.config.keep_generations)
    for site, (generation, document) in published.items():
        svc.hub.published(site, generation, document)
