"""Shared pieces for tests of the compute driver and the reconciler (fixtures: conftest.py)."""

from __future__ import annotations

from edged.drivers.compute import ServerSpec

SITE = "site-a"


def spec(server_id: str = "s1", **kw: object) -> ServerSpec:
    """A small server spec; keyword arguments override its fields."""
    fields: dict = {
        "id": server_id,
        "name": f"vm-{server_id}",
        "vcpus": 1,
        "ram_mb": 128,
        "disk_gb": 1,
        "image": "tiny",
    }
    fields.update(kw)
    return ServerSpec(**fields)
