"""Object replication with real daemons: site → central through an outage, repair, peers."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from central.client import ApiFailure, Client
from central.localcluster import LocalCluster, free_port, wait_for
from tests.e2e.support import add_site
from tests.e2e.test_identity_sites import PASSWORD, in_sync, member
from tests.e2e.test_objects_sites import raw

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
# Small (inline in the offer), mid-sized (streamed) and > 1 MiB (several chunks).
SIZES = [0, 1, 700, 4096, 65_536, 200_000, 300_000, 900_000, int(1.5 * MIB), 3 * MIB + 17]


def etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read a running daemon's object index (WAL: readers do not block it)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def listing(client: Client, bucket: str) -> dict[str, str]:
    """Live keys -> etag of ``bucket`` through the object API (all pages)."""
    found: dict[str, str] = {}
    marker = ""
    while True:
        page = client.get(f"/v1/buckets/{bucket}?limit=1000&marker={marker}")
        found.update({o["key"]: o["etag"] for o in page["objects"]})
        marker = page.get("next_marker") or ""
        if not marker:
            return found


def same_content(base: str, token: str, expected: dict[str, bytes]) -> bool:
    for key, data in expected.items():
        status, _headers, body = raw("GET", f"{base}/{key}", token)
        if status != 200 or body != data:
            return False
    return True


def holds_exactly(client: Client, base: str, bucket: str, expected: dict[str, bytes]) -> bool:
    try:
        listed = listing(client, bucket)
    except ApiFailure:
        return False
    if listed != {k: etag(v) for k, v in expected.items()}:
        return False
    return same_content(base, client.token or "", expected)


def stream(view: dict[str, Any], **match: str) -> dict[str, Any] | None:
    for entry in view["bucket"]["replication"]:
        if all(entry.get(k) == v for k, v in match.items()):
            return entry
    return None


def put(base: str, token: str, key: str, data: bytes) -> None:
    status, headers, body = raw("PUT", f"{base}/{key}", token, data)
    assert status == 201, body
    assert headers["ETag"] == f'"{etag(data)}"'


def test_site_replicates_to_central_through_an_outage_and_repairs(
    cluster: LocalCluster, sites: list[str]
) -> None:
    site = sites[0]
    add_site(cluster, site, scrub_interval_s=1.0, replication_backoff_max_s=2.0)
    alice, _ = member(cluster, "proj-r", "alice")
    alice.put("/v1/buckets/repl", {"sites": [site], "replicate_to_central": True})
    wait_for(lambda: in_sync(cluster, site), 30, "site holds the bucket")
    local = cluster.local_api(site, alice.token)
    wait_for(
        lambda: [b["name"] for b in local.get("/v1/buckets")["buckets"]] == ["repl"],
        30,
        "the site made the bucket of its document",
    )
    token = alice.token or ""
    site_base = f"http://127.0.0.1:{cluster.local_api_ports[site]}/v1/buckets/repl/objects"
    central_base = f"{cluster.client.base_url}/v1/buckets/repl/objects"

    expected: dict[str, bytes] = {}
    for i in range(30):
        data = os.urandom(SIZES[i % len(SIZES)])
        expected[f"first/{i:02d}.bin"] = data
        put(site_base, token, f"first/{i:02d}.bin", data)

    # central goes away (mid-transfer, quite likely); the site keeps serving and writing.
    cluster.kill_central(signal.SIGKILL)
    for i in range(10):
        data = os.urandom(SIZES[(i * 3) % len(SIZES)])
        expected[f"outage/{i:02d}.bin"] = data
        put(site_base, token, f"outage/{i:02d}.bin", data)
    for i in (0, 8, 9, 18):  # overwrite, with sizes that differ from the first version
        data = os.urandom(SIZES[(i + 5) % len(SIZES)])
        expected[f"first/{i:02d}.bin"] = data
        put(site_base, token, f"first/{i:02d}.bin", data)
    for key in ("first/01.bin", "first/09.bin", "first/19.bin", "outage/03.bin"):
        assert raw("DELETE", f"{site_base}/{key}", token)[0] == 204
        del expected[key]
    assert listing(local, "repl") == {k: etag(v) for k, v in expected.items()}

    restarted = time.time()
    cluster.central_overrides["scrub_interval_s"] = 1.0  # so central's own repair shows below
    cluster.start_central()
    alice.login("alice", PASSWORD, "proj-r")
    token = alice.token or ""
    wait_for(
        lambda: holds_exactly(alice, central_base, "repl", expected),
        240,
        "central holds exactly the site's live objects, byte for byte",
        interval=1.0,
    )

    def caught_up() -> dict[str, Any] | None:
        entry = stream(alice.get("/v1/buckets/repl"), site=site, target="central")
        fresh = entry and entry["reported_at"] and entry["reported_at"] > restarted
        return entry if fresh and entry["pending"] == 0 else None

    entry = wait_for(caught_up, 120, "central's bucket view: the site has nothing pending")
    assert entry["last_ok"] and entry["lag_s"] == 0
    assert entry["last_error"] is None or entry["last_ok"] >= (entry.get("last_error_at") or 0)
    site_view = local.get("/v1/buckets/repl")
    assert stream(site_view, target="central")["pending"] == 0

    # Everything again from the start (cursor reset): central applies nothing twice.
    central_index = cluster.workdir / "central" / "objects" / "index.db"
    seq_before = query(central_index, "SELECT value FROM counters WHERE name = 'seq'")
    rows_before = query(central_index, "SELECT key, hlc, etag FROM versions ORDER BY key")
    cluster.kill_edge(site, signal.SIGKILL)
    (cluster.workdir / site / "replication.db").unlink()
    for leftover in (cluster.workdir / site).glob("replication.db-*"):
        leftover.unlink()
    cluster.start_edge(site, scrub_interval_s=1.0, replication_backoff_max_s=2.0)

    def resent() -> bool:
        entry = stream(cluster.local_api(site, token).get("/v1/buckets/repl"), target="central")
        return bool(entry and entry["pending"] == 0 and entry["sent"] >= len(expected))

    wait_for(resent, 240, "the site re-offered every object to central", interval=1.0)
    assert query(central_index, "SELECT value FROM counters WHERE name = 'seq'") == seq_before
    assert query(central_index, "SELECT key, hlc, etag FROM versions ORDER BY key") == rows_before
    assert holds_exactly(alice, central_base, "repl", expected)

    # Corruption at the site: one flipped byte is found and repaired from central's copy.
    key = "first/05.bin"  # 200 000 bytes: one chunk, so a read is refused whole
    site_dir = cluster.workdir / site / "objects"
    [(blob_id,)] = query(
        site_dir / "index.db", "SELECT blob_id FROM versions WHERE key = ?", (key,)
    )
    blob = site_dir / "blobs" / blob_id[:2] / blob_id
    blob.chmod(0o600)
    with blob.open("r+b") as f:
        f.seek(1234)
        byte = f.read(1)
        f.seek(1234)
        f.write(bytes([byte[0] ^ 0xFF]))
    status, _headers, body = raw("GET", f"{site_base}/{key}", token)
    # Refused as corrupt, unless scrub already found it and central's copy replaced it.
    assert (status == 503 and b"object_corrupt" in body) or (status, body) == (
        200,
        expected[key],
    )

    def repaired() -> bool:
        health = cluster.site(site)["health"]["replication"]["scrub"]
        status, _headers, body = raw("GET", f"{site_base}/{key}", token)
        return health.get("repaired", 0) >= 1 and (status, body) == (200, expected[key])

    wait_for(repaired, 120, "the corrupt object repaired from central's copy", interval=1.0)

    # Corruption at central: its scrub finds the flipped byte and central fetches the good
    # copy back from the site, through the site's own sender link.
    key = "first/07.bin"
    central_dir = cluster.workdir / "central" / "objects"
    [(blob_id,)] = query(central_index, "SELECT blob_id FROM versions WHERE key = ?", (key,))
    blob = central_dir / "blobs" / blob_id[:2] / blob_id
    blob.chmod(0o600)
    with blob.open("r+b") as f:
        f.seek(len(expected[key]) // 2)
        byte = f.read(1)
        f.seek(len(expected[key]) // 2)
        f.write(bytes([byte[0] ^ 0xFF]))

    def central_repaired() -> bool:
        scrub = cluster.client.get("/v1/hub")["replication"]["scrub"]
        status, _headers, body = raw("GET", f"{central_base}/{key}", token)
        return scrub.get("repaired", 0) >= 1 and (status, body) == (200, expected[key])

    wait_for(central_repaired, 120, "central's corrupt copy repaired from the site", interval=1.0)
    links = cluster.client.get("/v1/hub")["replication"]["site_links"]
    assert site in links["connected"]
    assert links["messages"].get("sent_fetch", 0) >= 1


def test_peer_sites_replicate_to_each_other(cluster: LocalCluster, sites: list[str]) -> None:
    a, b = sites
    for site in sites:
        bind = f"tcp://127.0.0.1:{free_port()}"
        add_site(cluster, site, replication_bind=bind, replication_backoff_max_s=2.0)
    alice, _ = member(cluster, "proj-p", "alice")
    alice.put(
        "/v1/buckets/shared",
        {"sites": [a, b], "replicate_to_central": False, "peers": True},
    )
    token = alice.token or ""
    clients = {s: cluster.local_api(s, token) for s in sites}
    bases = {
        s: f"http://127.0.0.1:{cluster.local_api_ports[s]}/v1/buckets/shared/objects" for s in sites
    }
    for site in sites:
        wait_for(
            lambda site=site: (
                "shared" in [b["name"] for b in clients[site].get("/v1/buckets")["buckets"]]
            ),
            60,
            f"{site} made the bucket",
        )

    expected: dict[str, bytes] = {}
    for i, size in enumerate(SIZES[:8]):
        expected[f"from-a/{i}"] = os.urandom(size)
        put(bases[a], token, f"from-a/{i}", expected[f"from-a/{i}"])
    expected["from-b/big"] = os.urandom(int(1.5 * MIB))
    put(bases[b], token, "from-b/big", expected["from-b/big"])

    for site in sites:
        wait_for(
            lambda site=site: holds_exactly(clients[site], bases[site], "shared", expected),
            180,
            f"{site} holds both sites' objects",
            interval=1.0,
        )

    # A delete at A reaches B; B's older copy never brings it back to A.
    assert raw("DELETE", f"{bases[a]}/from-a/3", token)[0] == 204
    del expected["from-a/3"]
    for site in sites:
        wait_for(
            lambda site=site: holds_exactly(clients[site], bases[site], "shared", expected),
            120,
            f"{site} without the deleted key",
            interval=1.0,
        )

    def peers_caught_up() -> bool:
        view = alice.get("/v1/buckets/shared")
        entries = [stream(view, site=s, target=t) for s, t in ((a, b), (b, a))]
        return all(e and e["pending"] == 0 and e["last_ok"] for e in entries)

    wait_for(peers_caught_up, 120, "central's bucket view: both peer streams caught up")
    assert stream(alice.get("/v1/buckets/shared"), site=a, target="central") is None
