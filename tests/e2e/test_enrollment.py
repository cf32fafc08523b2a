"""Enrollment with real daemons: only enrolled keys get in, each only for its own site.

(1) an edged with an unenrolled key never gets a message through; (2) site A's
key cannot report for site B; (3) revoking a key cuts a running site off and
enrolling a new one brings it back.
"""

from __future__ import annotations

import time

import pytest
import zmq

from central import zap
from central.client import ApiFailure
from central.localcluster import LocalCluster, wait_for
from edged import wire
from tests.e2e.support import add_site

pytestmark = pytest.mark.e2e


def hub(cluster: LocalCluster) -> dict:
    return cluster.client.get("/v1/hub")


def curve_dealer(ctx: zmq.Context, cluster: LocalCluster, routing_id: str, pair: zap.KeyPair):
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, routing_id.encode())
    sock.setsockopt(zmq.CURVE_SERVERKEY, cluster.central_public_key.encode())
    sock.setsockopt(zmq.CURVE_PUBLICKEY, pair.public.encode())
    sock.setsockopt(zmq.CURVE_SECRETKEY, pair.secret.encode())
    sock.setsockopt(zmq.HANDSHAKE_IVL, 5000)
    sock.connect(cluster.hub_endpoint)
    return sock


def test_unenrolled_key_never_gets_through(cluster: LocalCluster, sites: list[str]) -> None:
    site, other = sites
    # Registered without a key, and registered with someone else's key.
    cluster.client.post("/v1/sites", {"name": site})
    cluster.client.post("/v1/sites", {"name": other, "public_key": zap.new_keypair().public})
    cluster.start_edge(site)  # its key pair is made locally, never enrolled
    cluster.start_edge(other)
    wait_for(lambda: hub(cluster)["refused"].get("unenrolled_key", 0) >= 2, 30, "ZAP refusals")
    time.sleep(2)
    stats = hub(cluster)
    assert not any(k.startswith("received_") for k in stats["messages"]), stats["messages"]
    assert stats["dropped_total"] == 0, "nothing unauthenticated may reach the hub's handler"
    for name in sites:
        s = cluster.site(name)
        assert (s["state"], s["acked_generation"], s["last_seen"]) == ("down", 0, None)
        assert cluster.edges[name].poll() is None, f"edged {name} died"
    log = (cluster.workdir / "central.log").read_text()
    mine = cluster.site_keys(site).public
    lines = [line for line in log.splitlines() if "not enrolled" in line]
    assert any(mine[:8] in line and "WARNING" in line for line in lines), lines[-5:]
    assert mine not in log, "the whole key was logged"
    # Enrolling the key it already holds lets the very same edged in.
    cluster.enroll(site)
    wait_for(lambda: cluster.site(site)["acked_generation"] >= 1, 30, "enrolled site acks")
    assert cluster.site(site)["state"] == "up"
    assert cluster.site(other)["state"] == "down"


def test_a_key_cannot_report_for_another_site(cluster: LocalCluster, sites: list[str]) -> None:
    a, b = sites
    cluster.enroll(a)
    cluster.enroll(b)  # registered and enrolled, no edged running
    before = cluster.site(b)
    keys_a = cluster.site_keys(a)
    ctx = zmq.Context()
    try:
        as_b = curve_dealer(ctx, cluster, b, keys_a)  # A's key, B's routing id
        body_b = curve_dealer(ctx, cluster, a, keys_a)  # A's routing id, B in the body
        forged = wire.Encoder(b)
        for sock in (as_b, body_b):
            gen = before["desired_generation"]
            sock.send_multipart(forged.encode(wire.HELLO, last_generation=gen))
            sock.send_multipart(forged.encode(wire.ACK, generation=gen))
            sock.send_multipart(
                forged.encode(
                    wire.STATUS,
                    observed_generation=gen,
                    resources={"servers": {}},
                    health={"forged": True},
                    inventory={"cpus": 999},
                )
            )
        wait_for(lambda: hub(cluster)["dropped"].get("wrong_site") == 6, 30, "wrong_site drops")
        assert not as_b.poll(500) and not body_b.poll(10), "central answered a forged identity"
        # Positive control: the same key speaking for its own site is accepted.
        mine = curve_dealer(ctx, cluster, a, keys_a)
        mine.send_multipart(wire.Encoder(a).encode(wire.HEARTBEAT, generation=0))
        wait_for(lambda: cluster.site(a)["state"] == "up", 15, "site A up")
    finally:
        ctx.destroy(linger=0)
    after = cluster.site(b)
    for field in ("state", "last_seen", "acked_generation", "observed_generation", "health"):
        assert after[field] == before[field], field
    assert after["inventory"] == before["inventory"]
    log = (cluster.workdir / "central.log").read_text()
    assert "WARNING" in log and "(wrong_site)" in log


def test_revoke_cuts_off_then_new_key_restores(cluster: LocalCluster, sites: list[str]) -> None:
    site = sites[0]
    add_site(cluster, site)

    def in_sync() -> bool:
        s = cluster.site(site)
        return s["state"] == "up" and s["acked_generation"] == s["desired_generation"]

    wait_for(in_sync, 30, "site up and acked")
    old_key = cluster.site(site)["public_key"]
    assert old_key == cluster.site_keys(site).public
    gone = cluster.client.delete(f"/v1/sites/{site}/key")
    assert gone["public_key"] is None
    wait_for(lambda: hub(cluster)["dropped"].get("revoked_key", 0) >= 2, 15, "heartbeats dropped")
    wait_for(lambda: cluster.site(site)["state"] == "down", 15, "revoked site down")
    # A change made now never reaches it.
    acked = cluster.site(site)["acked_generation"]
    cluster.create_server(site, "after-revoke", power="stopped")
    desired = cluster.site(site)["desired_generation"]
    assert desired > acked
    time.sleep(3)
    assert cluster.site(site)["acked_generation"] == acked
    assert cluster.site(site)["state"] == "down"
    # A fresh key pair, enrolled, and edged restarted with it: the site is back.
    cluster.kill_edge(site)
    new = cluster.new_site_keys(site)
    assert new.public != old_key
    assert cluster.enroll(site)["public_key"] == new.public
    cluster.start_edge(site)
    wait_for(lambda: cluster.site(site)["acked_generation"] == desired, 30, "change acked")
    assert cluster.site(site)["state"] == "up"


def test_key_api_validation(cluster: LocalCluster, sites: list[str]) -> None:
    a, b = sites
    cluster.enroll(a)
    cluster.client.post("/v1/sites", {"name": b})
    for bad in ("short", "~" * 40, "#" * 40):
        with pytest.raises(ApiFailure) as err:
            cluster.client.call("PUT", f"/v1/sites/{b}/key", {"public_key": bad})
        assert err.value.status == 400 and "public_key" in err.value.message
    with pytest.raises(ApiFailure) as err:
        cluster.client.post("/v1/sites", {"name": "e2e-badkey", "public_key": "#" * 40})
    assert err.value.status == 400 and "public_key" in err.value.message
    taken = cluster.site(a)["public_key"]
    with pytest.raises(ApiFailure) as err:
        cluster.client.call("PUT", f"/v1/sites/{b}/key", {"public_key": taken})
    assert err.value.status == 409
    with pytest.raises(ApiFailure) as err:
        cluster.client.call("PUT", "/v1/sites/nope/key", {"public_key": taken})
    assert err.value.status == 404
    spec = cluster.client.get("/openapi.json")
    assert "/v1/sites/{name}/key" in spec["paths"]
