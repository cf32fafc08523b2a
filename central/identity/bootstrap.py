"""First start: a signing key, and the first admin user when asked for one.

The password comes from ``SKERRY_BOOTSTRAP_ADMIN_PASSWORD`` (or stdin for
``skerry-central bootstrap``); there is no default password anywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from central import orchestrator
from central.identity import records, signing
from central.identity.snapshot import ADMIN_PROJECT
from central.store import Store

log = logging.getLogger(__name__)

PASSWORD_ENV = "SKERRY_BOOTSTRAP_ADMIN_PASSWORD"
USER_ENV = "SKERRY_BOOTSTRAP_ADMIN_USER"
DEFAULT_ADMIN = "admin"

Published = dict[str, tuple[int, dict[str, Any]]]


def ensure_signing_key(store: Store, keep: int) -> Published:
    """An active signing key exists afterwards; publishes when one was added."""
    with store.transaction():
        if signing.newest_active(store) is not None:
            return {}
        kid = signing.add_key(store)
        log.info("token signing key %s created", kid)
        return orchestrator.publish_all(store, keep)


def bootstrap_admin(store: Store, keep: int, user_name: str, password: str) -> Published:
    """Project ``admin`` and its first admin user; IdentityError once users exist."""
    with store.transaction():
        created = records.bootstrap(store, user_name, password)
        published = orchestrator.publish_all(store, keep)
    log.info("bootstrap: user %s is admin on project %s", created["name"], ADMIN_PROJECT)
    return published


def on_start(store: Store, keep: int, environ: Mapping[str, str]) -> Published:
    """What central does with identity at start; returns documents to hand the hub."""
    published = ensure_signing_key(store, keep)
    if records.user_count(store) > 0:
        return published
    password = environ.get(PASSWORD_ENV, "")
    if not password:
        log.warning(
            "no users exist, so nobody can log in: set %s (and optionally %s, default %r) "
            "when starting skerry-central, or run `skerry-central --config FILE bootstrap`",
            PASSWORD_ENV,
            USER_ENV,
            DEFAULT_ADMIN,
        )
        return published
    user = environ.get(USER_ENV, "") or DEFAULT_ADMIN
    try:
        published.update(bootstrap_admin(store, keep, user, password))
    except records.IdentityError as exc:
        log.error("bootstrap from %s refused: %s; nobody can log in", PASSWORD_ENV, exc.message)
    return published
