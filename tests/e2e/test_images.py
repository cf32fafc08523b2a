"""Central images at a site, with real daemons, real qemu-img and a real TCG guest:
pulled over CURVE into the site's cache, verified, booted, rebooted with central
dead; tampered bytes and forged signatures refused at the site with the reason."""

from __future__ import annotations

import base64
import hashlib
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from central.localcluster import REPO, LocalCluster, wait_for
from tests.e2e.support import add_site, domains
from tests.host import skip

pytestmark = pytest.mark.e2e

TINY_DISK = REPO / "images" / "build" / "tiny-disk" / "tiny.qcow2"


@pytest.fixture
def tiny_disk() -> Path:
    if not TINY_DISK.is_file():
        skip(f"{TINY_DISK} missing (run: bash images/build-tiny-disk.sh)")
    return TINY_DISK


def cache_dir(cluster: LocalCluster, site: str) -> Path:
    return cluster.workdir / site / "images"


def markers(cluster: LocalCluster, site: str, server: dict[str, Any]) -> int:
    path = cluster.workdir / site / "console" / f"{server['id']}.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return text.count(f"SKERRY-GUEST-UP hostname={server['name']}")


def wait_error(cluster: LocalCluster, server_id: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(
        lambda: (s := cluster.server(server_id))["status"] == "ERROR" and s,
        timeout,
        f"server {server_id} ERROR",
    )


def test_image_boots_from_the_cache_and_reboots_with_central_dead(
    cluster: LocalCluster, sites: list[str], tiny_disk: Path
) -> None:
    site = sites[0]
    add_site(cluster, site)
    image = cluster.upload_image("tiny-disk", tiny_disk, "qcow2")
    assert image["status"] == "active"
    # By name: central resolves it to the image id, which the server keeps.
    server = cluster.create_server(site, "img-1", image="tiny-disk")
    assert server["image"] == image["id"]
    cluster.wait_server(server["id"], "ACTIVE", timeout=120)
    # The hostname reaches the guest only on the config disk (no kernel command line).
    cluster.wait_marker(server["id"], timeout=120)

    cached = cache_dir(cluster, site) / image["id"]
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == image["sha256"]
    assert not list(cache_dir(cluster, site).glob("*.part"))

    cluster.kill_central(signal.SIGKILL)
    local = cluster.local_api(site, cluster.client.token)
    assert markers(cluster, site, server) == 1
    local.post(f"/v1/servers/{server['id']}/reboot")
    wait_for(lambda: markers(cluster, site, server) >= 2, 120, "second boot from the cache")
    assert domains(site) == {f"skerry-{site}-{server['id']}": True}
    assert cached.is_file()


def test_tampered_image_and_forged_signature_are_refused_at_the_site(
    cluster: LocalCluster, sites: list[str], tiny_disk: Path
) -> None:
    site = sites[0]
    add_site(cluster, site)
    store = cluster.workdir / "central" / "images"

    # Tampered: one byte of central's stored file changes after the upload.
    tampered = cluster.upload_image("tampered", tiny_disk, "qcow2")
    path = store / tampered["id"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    bad_bytes = cluster.create_server(site, "tampered-1", image=tampered["id"])

    # Forged: a signed image whose signature in central's database is replaced by a
    # well-formed signature over something else; the site checks it itself.
    signer = Ed25519PrivateKey.generate()
    public = signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key = cluster.client.post(
        "/v1/image-signing-keys",
        {"name": "release", "public_key": base64.b64encode(public).decode()},
    )
    sha = hashlib.sha256(tiny_disk.read_bytes()).hexdigest()
    signature = base64.b64encode(signer.sign(sha.encode())).decode()
    signed = cluster.upload_image(
        "signed", tiny_disk, "qcow2", signature=signature, signing_key_id=key["id"]
    )
    assert signed["signed"] is True
    forged = base64.b64encode(signer.sign(b"something else")).decode()
    db = sqlite3.connect(cluster.workdir / "central" / "central.db")
    with db:
        db.execute("UPDATE images SET signature = ? WHERE id = ?", (forged, signed["id"]))
    db.close()
    bad_signature = cluster.create_server(site, "forged-1", image=signed["id"])

    refused = wait_error(cluster, bad_bytes["id"], timeout=120)
    assert "sha256 mismatch" in refused["reason"], refused["reason"]
    assert f"expected {tampered['sha256']}" in refused["reason"]
    refused = wait_error(cluster, bad_signature["id"], timeout=120)
    assert "signature does not verify" in refused["reason"], refused["reason"]
    assert key["id"] in refused["reason"]

    cached = {p.name for p in cache_dir(cluster, site).iterdir()}
    assert not {n for n in cached if n.startswith(tampered["id"])}, cached
    assert not {n for n in cached if n.startswith(signed["id"])}, cached
    assert domains(site) == {}
    # The tampered bytes did cross the feed (and were refused at the site, not at central).
    assert cluster.client.get("/v1/hub")["image_feed"]["messages"]["chunks_sent"] >= 1
