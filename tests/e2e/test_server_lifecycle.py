"""A server's life through the API with real daemons and a real TCG guest."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from central.client import ApiFailure
from central.localcluster import LocalCluster, wait_for
from tests.e2e.support import add_site, destroy_domain, domains

pytestmark = pytest.mark.e2e


def console_file(cluster: LocalCluster, site: str, server_id: str) -> Path:
    return cluster.workdir / site / "console" / f"{server_id}.log"


def marker_in_file(path: Path, name: str) -> bool:
    return path.exists() and f"SKERRY-GUEST-UP hostname={name}" in path.read_text(errors="replace")


def test_create_stop_start_delete(cluster: LocalCluster, sites: list[str]) -> None:
    site = sites[0]
    add_site(cluster, site)
    server = cluster.create_server(site, "life-1")
    assert server["status"] == "BUILD"
    cluster.wait_server(server["id"], "ACTIVE")
    cluster.wait_marker(server["id"])
    dom = f"skerry-{site}-{server['id']}"
    assert domains(site) == {dom: True}

    cluster.client.post(f"/v1/servers/{server['id']}/stop")
    cluster.wait_server(server["id"], "SHUTOFF", timeout=30)
    assert domains(site) == {dom: False}

    cluster.client.post(f"/v1/servers/{server['id']}/start")
    cluster.wait_server(server["id"], "ACTIVE", timeout=30)
    # QEMU empties the console file on start: the marker again means a fresh boot.
    wait_for(
        lambda: marker_in_file(console_file(cluster, site, server["id"]), "life-1"),
        60,
        "marker after restart",
    )

    cluster.client.delete(f"/v1/servers/{server['id']}")

    def gone() -> bool:
        try:
            cluster.server(server["id"])
        except ApiFailure as exc:
            return exc.status == 404
        return False

    wait_for(gone, 30, "server record gone")
    assert domains(site) == {}
    assert not (cluster.workdir / site / "disks" / f"{server['id']}.qcow2").exists()


def test_central_killed_sites_run_on(cluster: LocalCluster, sites: list[str]) -> None:
    a, b = sites
    for site in sites:
        add_site(cluster, site)
    servers = {site: cluster.create_server(site, f"srv-{site[-1]}") for site in sites}
    for server in servers.values():
        cluster.wait_server(server["id"], "ACTIVE")
        cluster.wait_marker(server["id"])
    before = {site: cluster.site(site)["desired_generation"] for site in sites}

    cluster.kill_central(signal.SIGKILL)
    # Guests keep running, and edged keeps reconciling with central gone:
    # a guest destroyed behind its back is started again.
    victim = f"skerry-{a}-{servers[a]['id']}"
    destroy_domain(victim)
    assert domains(a)[victim] is False
    wait_for(lambda: domains(a).get(victim), 30, "destroyed guest restarted by edged")
    wait_for(
        lambda: marker_in_file(console_file(cluster, a, servers[a]["id"]), "srv-a"),
        60,
        "restarted guest's marker",
    )
    assert all(domains(b).values())

    cluster.start_central()
    for site in sites:
        wait_for(lambda s=site: cluster.site(s)["state"] == "up", 30, f"{site} up again")
        assert cluster.site(site)["desired_generation"] == before[site]
    later = cluster.create_server(b, "after-restart")
    cluster.wait_server(later["id"], "ACTIVE")
    site_b = cluster.site(b)
    assert site_b["desired_generation"] == before[b] + 1
    wait_for(lambda: cluster.site(b)["acked_generation"] == before[b] + 1, 15, "ack of new gen")


def test_site_away_gets_newest_document_once(cluster: LocalCluster, sites: list[str]) -> None:
    site = sites[0]
    add_site(cluster, site)
    wait_for(lambda: cluster.site(site)["acked_generation"] == 1, 30, "first document acked")
    cluster.kill_edge(site, signal.SIGKILL)
    wait_for(lambda: cluster.site(site)["state"] == "down", 15, "site marked down")

    first = cluster.create_server(site, "away-1", power="stopped")
    cluster.client.post(f"/v1/servers/{first['id']}/start")
    cluster.create_server(site, "away-2", power="stopped")
    newest = cluster.site(site)["desired_generation"]
    assert cluster.site(site)["acked_generation"] == newest - 3

    cluster.start_edge(site)
    wait_for(lambda: cluster.site(site)["acked_generation"] == newest, 30, "newest acked")
    wait_for(lambda: cluster.site(site)["health"].get("held_generation") == newest, 30, "status")
    messages = cluster.site(site)["health"]["link"]["messages"]
    assert messages.get("received_desired") == 1, messages
    assert messages.get("desired_accepted") == 1, messages
