"""Tokens at the sites: validated offline, revocations pushed, with real daemons."""

from __future__ import annotations

import signal
import time

import pytest

from central.client import ApiFailure, Client
from central.localcluster import LocalCluster, wait_for
from tests.e2e.support import add_site, domains

pytestmark = pytest.mark.e2e

PASSWORD = "e2e-member-password"


def member(cluster: LocalCluster, project: str, user: str) -> tuple[Client, dict]:
    """A project with a member user; returns the member's logged-in client and user."""
    prj = cluster.client.post("/v1/projects", {"name": project})
    usr = cluster.client.post("/v1/users", {"name": user, "password": PASSWORD})
    cluster.client.put(f"/v1/projects/{prj['id']}/users/{usr['id']}/roles/member")
    client = Client(cluster.client.base_url)
    client.login(user, PASSWORD, project)
    return client, usr


def in_sync(cluster: LocalCluster, site: str) -> bool:
    s = cluster.site(site)
    return s["state"] == "up" and s["acked_generation"] == s["desired_generation"]


def refused(local: Client) -> bool:
    try:
        local.get("/v1/servers")
    except ApiFailure as exc:
        return exc.status == 401
    return False


def test_site_validates_tokens_with_central_killed(cluster: LocalCluster, sites: list[str]) -> None:
    site = sites[0]
    add_site(cluster, site)
    alice, _ = member(cluster, "proj-a", "alice")
    bob, _ = member(cluster, "proj-b", "bob")
    server = alice.post(
        "/v1/servers",
        {
            "name": "offline-1",
            "site": site,
            "image": "tiny",
            "flavor": {"vcpus": 1, "ram_mb": 128, "disk_gb": 1},
            "power": "stopped",
        },
    )
    cluster.wait_server(server["id"], "SHUTOFF")
    wait_for(lambda: in_sync(cluster, site), 30, "site holds the identity snapshot")

    cluster.kill_central(signal.SIGKILL)
    local_alice = cluster.local_api(site, alice.token)
    local_bob = cluster.local_api(site, bob.token)
    listed = local_alice.get("/v1/servers")["servers"]
    assert [s["id"] for s in listed] == [server["id"]]
    # Another project sees nothing of it, and cannot act on it.
    assert local_bob.get("/v1/servers")["servers"] == []
    with pytest.raises(ApiFailure) as err:
        local_bob.post(f"/v1/servers/{server['id']}/start")
    assert err.value.status == 404
    # Garbage and forged tokens get 401, never 500.
    for bad in ("garbage", alice.token[:-4] + "AAAA", alice.token + "x"):
        with pytest.raises(ApiFailure) as err:
            cluster.local_api(site, bad).get("/v1/servers")
        assert err.value.status == 401
    # The member acts on its server at the site while central is dead.
    local_alice.post(f"/v1/servers/{server['id']}/start")
    dom = f"skerry-{site}-{server['id']}"
    wait_for(lambda: domains(site).get(dom), 30, "guest started through the local API")

    # No token, password or secret key in any log or audit file of this run.
    secrets = {
        "alice's token": alice.token,
        "bob's token": bob.token,
        "a user password": PASSWORD,
        "the admin password": cluster.admin_password,
        "the site's CURVE secret": cluster.site_keys(site).secret,
    }
    written = [p for p in cluster.workdir.rglob("*") if p.suffix in (".log", ".jsonl")]
    assert any(p.name == "local-audit.jsonl" for p in written), written
    for path in written:
        text = path.read_text(errors="replace")
        for what, value in secrets.items():
            assert value not in text, f"{what} found in {path}"


def test_revocation_reaches_a_connected_site_within_5s(
    cluster: LocalCluster, sites: list[str]
) -> None:
    site = sites[0]
    add_site(cluster, site)
    alice, user = member(cluster, "proj-r", "carol")
    wait_for(lambda: in_sync(cluster, site), 30, "site in sync")
    local = cluster.local_api(site, alice.token)
    assert local.get("/v1/servers")["servers"] == []

    started = time.monotonic()
    cluster.client.post(f"/v1/users/{user['id']}/revoke-tokens")
    wait_for(lambda: refused(local), 5, "revoked token refused at the site")
    print(f"revocation effective at the site after {time.monotonic() - started:.2f}s")


def test_revocation_reaches_a_returning_site_on_reconnect(
    cluster: LocalCluster, sites: list[str]
) -> None:
    site = sites[0]
    add_site(cluster, site)
    alice, user = member(cluster, "proj-w", "dave")
    wait_for(lambda: in_sync(cluster, site), 30, "site in sync")
    cluster.kill_edge(site, signal.SIGKILL)
    wait_for(lambda: cluster.site(site)["state"] == "down", 15, "site down")

    cluster.client.post(f"/v1/users/{user['id']}/revoke-tokens")
    cluster.start_edge(site)
    wait_for(lambda: in_sync(cluster, site), 30, "site back and in sync")
    assert refused(cluster.local_api(site, alice.token))
