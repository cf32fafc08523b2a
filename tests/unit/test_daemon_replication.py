"""EdgeDaemon runs SiteReplication: started from the held document, follows new ones,
shows its lag in the status report and the local API, never fatal."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

from edged.config import EdgeConfig
from edged.curvekeys import new_keypair, write_key_file
from edged.daemon import EdgeDaemon
from edged.drivers.compute_libvirt import LibvirtCompute
from edged.drivers.libvirt_testnode import write_test_node
from edged.localapi import create_local_app
from edged.state import LocalState
from tests.unit.test_objects_localapi import SITE, auth, bucket_entry, document


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _daemon(tmp_path: Path, doc: dict[str, Any], with_keys: bool = True) -> EdgeDaemon:
    state = LocalState(tmp_path / "state")
    state.accept(1, doc)
    state.close()
    keys: dict[str, Any] = {}
    if with_keys:
        write_key_file(tmp_path / "site.key", new_keypair())
        keys = {
            "curve_secret_key_file": tmp_path / "site.key",
            "central_public_key": new_keypair().public,  # nobody listens there
        }
    driver = LibvirtCompute(SITE, write_test_node(tmp_path), tmp_path / "state", tmp_path)
    config = EdgeConfig(
        site=SITE,
        state_dir=tmp_path / "state",
        libvirt_uri=driver.uri,
        image_dir=tmp_path,
        local_api_port=0,
        central_replication_endpoint=f"tcp://127.0.0.1:{_free_port()}",
        replication_bind=f"tcp://127.0.0.1:{_free_port()}",
        **keys,
    )
    return EdgeDaemon(config, driver)


async def _close(daemon: EdgeDaemon) -> None:
    await daemon._stop_replication()
    daemon.ctx.term()
    daemon.state.close()
    daemon.objects.close()
    daemon.driver.close()


async def _until(check: Any, what: str) -> Any:
    for _ in range(300):
        result = check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def test_lag_is_reported_and_follows_documents(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path, document(bucket_entry("photos", peers=["site-b"])))
    try:
        daemon._start_replication()
        assert daemon.replication is not None and daemon.replication.receiver is not None
        await asyncio.to_thread(daemon._pass)  # makes the bucket; inventory advertises
        assert daemon.inventory["replication_advertise"] == daemon.config.replication_bind
        daemon.objects.put("photos", "a.jpg", [b"x" * 1000])
        rep = daemon.replication

        def pending() -> bool:
            return rep.status().get("photos", {}).get("central", {}).get("pending") == 1

        await _until(pending, "the change counted as pending toward central")
        report = daemon._bucket_report()
        peer = report["photos"]["replication"]["site-b"]
        assert peer["pending"] is None and "no replication_peers entry" in peer["last_error"]
        assert report["photos"]["replication"]["central"]["lag_seconds"] >= 0

        app = create_local_app(daemon.local_site())
        resp = await app.test_client().get("/v1/buckets/photos", headers=auth("alice"))
        view = (await resp.get_json())["bucket"]["replication"]
        assert [e["target"] for e in view] == ["central", "site-b"]
        assert view[0]["pending"] == 1 and view[0]["last_ok"] is None

        # A document without the bucket: its sender stops, its streams go.
        daemon.state.accept(2, document())
        daemon._replication_follow(document())
        assert rep.senders == {} and daemon._bucket_report() == {}
        health = json.loads(json.dumps(daemon.health(), allow_nan=False))  # as the wire sends it
        assert health["replication"]["running"] is True and "receiver" in health["replication"]
    finally:
        await _close(daemon)


async def test_without_keys_the_site_runs_on_without_replication(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path, document(bucket_entry("photos")), with_keys=False)
    try:
        daemon._start_replication()  # logged and counted, not raised
        assert daemon.replication is None
        daemon._replication_follow(document())
        assert daemon.health()["replication"] == {"running": False, "failures": 1}
        await asyncio.to_thread(daemon._pass)
        assert "replication_advertise" not in daemon.inventory
        assert [b.name for b in daemon.objects.buckets()] == ["photos"]
    finally:
        await _close(daemon)
