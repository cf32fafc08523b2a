"""edged SIGKILLed at random points of a reconcile: no duplicate, no orphan, afterwards."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from central.localcluster import LocalCluster, wait_for
from tests.e2e.support import add_site, domains

pytestmark = pytest.mark.e2e

SERVERS = 10
KILLS = 20
FLAVOR = {"vcpus": 1, "ram_mb": 96, "disk_gb": 1}


def desired_servers(cluster: LocalCluster, site: str) -> list[dict]:
    return [
        s
        for s in cluster.client.get("/v1/servers")["servers"]
        if s["site"] == site and s["status"] != "DELETING"
    ]


def churn(cluster: LocalCluster, site: str, rng: random.Random, round_no: int) -> None:
    """Change the desired state: replace one server, flip one's power."""
    current = desired_servers(cluster, site)
    if current:
        victim = rng.choice(current)
        cluster.client.delete(f"/v1/servers/{victim['id']}")
    cluster.create_server(site, f"crash-{round_no}", flavor=FLAVOR)
    current = desired_servers(cluster, site)
    flip = rng.choice(current)
    action = "stop" if flip["power"] == "running" else "start"
    cluster.client.post(f"/v1/servers/{flip['id']}/{action}")


def test_sigkill_during_reconcile_leaves_exactly_the_desired_domains(
    cluster: LocalCluster, sites: list[str]
) -> None:
    site = sites[0]
    seed = int(os.environ.get("SKERRY_CRASH_SEED", time.time()))
    print(f"crash test seed: {seed} (set SKERRY_CRASH_SEED to replay)")
    rng = random.Random(seed)
    add_site(cluster, site, reconcile_interval_s=1.0)
    for i in range(SERVERS):
        cluster.create_server(site, f"crash-init-{i}", flavor=FLAVOR)

    for round_no in range(KILLS):
        # Let it run long enough to be somewhere inside a pass, then kill it hard.
        time.sleep(rng.uniform(0.3, 2.5))
        cluster.kill_edge(site, signal.SIGKILL)
        churn(cluster, site, rng, round_no)
        cluster.start_edge(site, reconcile_interval_s=1.0)

    def converged() -> bool:
        s = cluster.site(site)
        if not (s["acked_generation"] == s["observed_generation"] == s["desired_generation"]):
            return False
        servers = cluster.client.get("/v1/servers")["servers"]
        mine = [x for x in servers if x["site"] == site]
        return all(x["status"] in ("ACTIVE", "SHUTOFF") for x in mine)

    wait_for(converged, 180, "site converged after the crashes")
    want = desired_servers(cluster, site)
    assert len(want) == SERVERS
    have = domains(site)
    assert set(have) == {f"skerry-{site}-{s['id']}" for s in want}, "orphan or missing domain"
    for server in want:
        assert have[f"skerry-{site}-{server['id']}"] == (server["power"] == "running")
    disks = {p.stem for p in (cluster.workdir / site / "disks").iterdir()}
    assert disks == {s["id"] for s in want}, "orphan or missing disk"
