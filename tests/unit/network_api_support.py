"""Site inventories for API tests: written to ``sites.inventory`` the way the hub does."""

from __future__ import annotations

from typing import Any

from quart import Quart

from central.store import dumps
from tests.unit.identity_support import store_of

HUGE_2M, HUGE_1G = "2048", "1048576"


def numa_node(node: int, cpus: int = 4, pages_2m: int = 0, pages_1g: int = 0) -> dict[str, Any]:
    """One ``numa[]`` entry: ``cpus`` host CPUs numbered from ``node * cpus``."""
    return {
        "node": node,
        "cpus": list(range(node * cpus, (node + 1) * cpus)),
        "memory_mb": 16384,
        "hugepages": {
            HUGE_2M: {"total": pages_2m, "free": pages_2m},
            HUGE_1G: {"total": pages_1g, "free": pages_1g},
        },
    }


def inventory(
    nodes: list[dict[str, Any]] | None = None,
    vfs: dict[str, dict[int, int]] | None = None,
    physnets: list[str] | None = None,
    vlan: bool = True,
    vlan_reason: str = "",
) -> dict[str, Any]:
    """A site's inventory; ``vfs``: physnet -> node -> total VFs (all free at the site)."""
    vfs = {"fast": {0: 2, 1: 2}} if vfs is None else vfs
    return {
        "cpus": 8,
        "ram_mb": 32768,
        "disk_gb": 100,
        "hypervisor": "test",
        "numa": [numa_node(0), numa_node(1)] if nodes is None else nodes,
        "sriov": {
            p: {str(n): {"total": k, "free": k} for n, k in per_node.items()}
            for p, per_node in vfs.items()
        },
        "physnets": ["phys0", *vfs] if physnets is None else physnets,
        "network": {
            "vxlan": True,
            "vlan": vlan,
            "vxlan_reason": "",
            "vlan_reason": vlan_reason,
        },
    }


def report_inventory(app: Quart, site: str, inv: dict[str, Any]) -> None:
    """The site's inventory as if its last status message carried ``inv`` (as the hub writes it)."""
    store = store_of(app)
    with store.transaction():
        store.db.execute("UPDATE sites SET inventory = ? WHERE name = ?", (dumps(inv), site))
