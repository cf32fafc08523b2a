"""Checks of the object-store keys both programs' configs share."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

from edged.objects.stores import BACKENDS

POOL = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


class ObjectSettings(Protocol):
    object_backend: str
    object_max_bytes: int
    rados_conf: Path | None
    rados_pool: str
    rados_user: str


def object_settings_problem(config: ObjectSettings) -> str | None:
    """What is wrong with the object keys, naming the key, or None."""
    if config.object_backend not in BACKENDS:
        return (
            f"key 'object_backend' must be {' or '.join(BACKENDS)}, got {config.object_backend!r}"
        )
    if config.object_max_bytes < 1:
        return "key 'object_max_bytes' must be >= 1"
    if config.object_backend != "rados":
        return None
    if config.rados_conf is None:
        return "key 'rados_conf' is required with object_backend: rados (a ceph.conf path)"
    if not POOL.match(config.rados_pool):
        return (
            "key 'rados_pool' is required with object_backend: rados "
            f"(letters, digits, '.', '_', '-'), got {config.rados_pool!r}"
        )
    if not POOL.match(config.rados_user):
        return f"key 'rados_user' must be a Ceph client name, got {config.rados_user!r}"
    return None
