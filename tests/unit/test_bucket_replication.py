"""central.bucket_replication: peers in documents, lag reports kept and shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from central import orchestrator
from central.bucket_replication import peer_section, peers_of, replication_view
from central.store import Store, now
from central.zap import new_keypair


@pytest.fixture
def store(tmp_path: Path) -> Store:
    st = Store(tmp_path / "central.db")
    with st.transaction():
        for name in ("a", "b", "c"):
            st.db["sites"].insert(
                {"name": name, "created_at": now(), "public_key": new_keypair().public}
            )
        st.db["projects"].insert({"id": "p1", "name": "p1", "created_at": now()})
        for name, sites, peers in (
            ("both", ["a", "b"], 1),
            ("solo", ["a"], 0),
            ("ac", ["a", "c"], 0),
        ):
            st.db["buckets"].insert(
                {
                    "name": name,
                    "project_id": "p1",
                    "sites": json.dumps(sites),
                    "replicate_to_central": 1,
                    "peers": peers,
                    "created_at": now(),
                }
            )
    return st


def report(store: Store, site: str, inventory: dict) -> None:
    with store.transaction():
        store.db["sites"].update(site, {"inventory": json.dumps(inventory)})


def test_peers_only_with_an_endpoint_and_a_key(store: Store) -> None:
    assert peers_of(store, "a") == ["b"]  # "ac" does not replicate among its sites
    assert peers_of(store, "c") == []
    assert peer_section(store, "a") == []  # b reported no endpoint yet
    report(store, "b", {"replication_advertise": "tcp://10.0.0.2:8720"})
    [entry] = peer_section(store, "a")
    key_b = store.one("SELECT public_key FROM sites WHERE name = 'b'")["public_key"]
    assert entry == {"site": "b", "endpoint": "tcp://10.0.0.2:8720", "public_key": key_b}
    doc = orchestrator.build_document(store, "a", 1)
    assert doc["replication_peers"] == [entry]
    report(store, "b", {"replication_advertise": "http://nope"})  # not a ZeroMQ endpoint
    assert peer_section(store, "a") == []
    report(store, "b", {"replication_advertise": "tcp://10.0.0.2:8720"})
    with store.transaction():
        store.db["sites"].update("b", {"public_key": None})  # revoked: left out
    assert peer_section(store, "a") == []


def test_lag_reports_are_kept_per_bucket_site_and_target(store: Store) -> None:
    policy = {"sites": ["a", "b"], "replicate_to_central": True, "peers": True}
    before = replication_view(store, "both", policy)
    assert {(e["site"], e["target"]) for e in before} == {
        ("a", "central"),
        ("a", "b"),
        ("b", "central"),
        ("b", "a"),
    }
    assert all(e["pending"] is None and e["last_error"] for e in before)
    why = {(e["site"], e["target"]): e["last_error"] for e in before}
    assert "no replication endpoint" in why[("a", "b")]

    resources = {
        "servers": {},
        "buckets": {
            "both": {
                "replication": {
                    "central": {
                        "pending": 3,
                        "pending_more": False,
                        "lag_seconds": 4.5,
                        "last_success": 100.0,
                        "last_error": "timeout: no answer",
                        "last_error_at": 90.0,
                    },
                    "b": {"pending": "lots", "lag_seconds": float("nan")},  # malformed
                }
            },
            "not-held": {"replication": {"central": {"pending": 1}}},
            "solo": "garbage",
        },
    }
    orchestrator.apply_status(store, "a", 1, resources)
    view = {(e["site"], e["target"]): e for e in replication_view(store, "both", policy)}
    central = view[("a", "central")]
    assert (central["pending"], central["lag_s"], central["last_ok"]) == (3, 4.5, 100.0)
    assert central["last_error"] == "timeout: no answer" and central["reported_at"]
    assert view[("a", "b")]["pending"] is None and view[("a", "b")]["lag_s"] is None
    assert store.query("SELECT * FROM bucket_replication WHERE bucket = 'not-held'") == []

    # The next report replaces the site's rows; a report without buckets keeps them.
    resources["buckets"]["both"]["replication"] = {"central": {"pending": 0, "lag_seconds": 0}}
    orchestrator.apply_status(store, "a", 2, resources)
    orchestrator.apply_status(store, "a", 3, {"servers": {}})
    view = {(e["site"], e["target"]): e for e in replication_view(store, "both", policy)}
    assert view[("a", "central")]["pending"] == 0
    assert view[("a", "b")]["pending"] is None
    assert "no replication endpoint" in view[("a", "b")]["last_error"]


def test_hub_republishes_peers_when_an_endpoint_is_reported(tmp_path: Path, store: Store) -> None:
    import zmq.asyncio

    from central.config import CentralConfig
    from central.hub import Hub, Peer

    ctx = zmq.asyncio.Context()
    hub = Hub(CentralConfig(state_dir=tmp_path), store, ctx)
    try:

        def status(site: str, inventory: dict) -> None:
            msg = {"observed_generation": 0, "resources": {}, "health": {}, "inventory": inventory}
            hub.peers[site] = Peer(status=msg, dirty=True)  # type: ignore[arg-type]
            hub._flush()

        def generation(site: str) -> int:
            return store.one("SELECT desired_generation FROM sites WHERE name = ?", (site,))[
                "desired_generation"
            ]

        status("b", {"numa": {}})  # no endpoint: nothing to tell a
        assert generation("a") == 0
        status("b", {"replication_advertise": "tcp://10.0.0.2:8720"})
        assert generation("a") == 1 and generation("c") == 0  # c shares no peer bucket
        assert hub.peers["a"].document["replication_peers"][0]["endpoint"] == "tcp://10.0.0.2:8720"
        status("b", {"replication_advertise": "tcp://10.0.0.2:8720"})  # unchanged: no new one
        assert generation("a") == 1
        status("b", {"replication_advertise": "tcp://10.0.0.9:8720"})  # moved
        assert generation("a") == 2
    finally:
        ctx.destroy(linger=0)
