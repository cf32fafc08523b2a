"""Block volumes end to end: real central + edged, qemu-img, libvirtd and TCG guests.

An encrypted volume is hot-plugged into a running guest through central's API; the
guest sees a new virtio disk with the volume's serial and writes a known plaintext
onto it (its ``stamp`` metadata). After the detach the volume's file at the site
holds none of that plaintext, while the same file decrypted with its key does. Then:
409 while attached, extend, snapshot and a volume copied from it, a server booted from
that copy (the guest sees it as vda), and the key nowhere but where it must be.
"""

from __future__ import annotations

import base64
import sqlite3
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from central.client import ApiFailure
from central.localcluster import LocalCluster, wait_for
from tests.e2e.support import URI, add_site

pytestmark = pytest.mark.e2e


def console(cluster: LocalCluster, site: str, server_id: str) -> str:
    path = cluster.workdir / site / "console" / f"{server_id}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def wait_console(cluster: LocalCluster, site: str, server_id: str, *parts: str) -> str:
    """The console line holding every one of ``parts``, once the guest printed it."""

    def check() -> str | None:
        for line in console(cluster, site, server_id).splitlines():
            if all(p in line for p in parts):
                return line
        return None

    return wait_for(check, 90, f"console line with {parts}", interval=0.5)


def wait_volume(cluster: LocalCluster, volume_id: str, **want: Any) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        vol = cluster.client.get(f"/v1/volumes/{volume_id}")
        if vol["status"] == "ERROR" and want.get("status") != "ERROR":
            raise AssertionError(f"volume {volume_id} in ERROR: {vol['reason']}")
        return vol if all(vol[k] == v for k, v in want.items()) else None

    return wait_for(check, 90, f"volume {volume_id} {want}", interval=0.5)


def decrypted(volume_file: Path, key_file: Path, out: Path) -> bytes:
    """The volume's guest-visible bytes, decrypted with its key (the site's key file)."""
    subprocess.run(
        ["qemu-img", "convert", "--object", f"secret,id=s,file={key_file},format=raw",
         "--image-opts", f"driver=qcow2,file.filename={volume_file},encrypt.key-secret=s",
         "-O", "raw", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    return out.read_bytes()


def gone(cluster: LocalCluster, path: str) -> bool:
    try:
        cluster.client.get(path)
    except ApiFailure as exc:
        return exc.status == 404
    return False


def purge_secrets(workdir: Path) -> None:
    """Undefine libvirt secrets of volumes under ``workdir`` that a failed run left."""
    import libvirt

    conn = libvirt.open(URI)
    try:
        for secret in conn.listAllSecrets():
            if str(workdir) in (secret.usageID() or ""):
                secret.undefine()
    finally:
        conn.close()


def test_encrypted_volume_through_a_guest(
    cluster: LocalCluster, sites: list[str], tmp_path: Path
) -> None:
    site = sites[0]
    add_site(cluster, site, volume_luks_iter_time_ms=10)
    try:
        _scenario(cluster, site, tmp_path)
    finally:
        purge_secrets(cluster.workdir)


def _scenario(cluster: LocalCluster, site: str, tmp_path: Path) -> None:
    api = cluster.client
    plaintext = f"SKERRY-PLAIN-{uuid.uuid4().hex}"
    server = cluster.create_server(site, "vol-guest", metadata={"stamp": plaintext})
    vol = api.post("/v1/volumes", {"name": "data", "site": site, "size_gb": 1, "encrypted": True})
    cluster.wait_server(server["id"], "ACTIVE")
    cluster.wait_marker(server["id"])
    wait_volume(cluster, vol["id"], status="AVAILABLE")

    # Hot-plug: the guest sees vdb with the volume's serial, and writes its stamp on it.
    attached = api.post(f"/v1/volumes/{vol['id']}/attach", {"server_id": server["id"]})
    assert attached["server_id"] == server["id"]
    serial = vol["id"][:20]
    wait_console(cluster, site, server["id"], "SKERRY-DISK added", "dev=vdb", f"serial={serial}")
    wait_console(cluster, site, server["id"], "SKERRY-DISK stamped", "dev=vdb")
    wait_volume(cluster, vol["id"], status="IN_USE", attached_to=server["id"])
    with pytest.raises(ApiFailure) as refused:
        api.delete(f"/v1/volumes/{vol['id']}")
    assert refused.value.status == 409

    api.post(f"/v1/volumes/{vol['id']}/detach")
    wait_console(cluster, site, server["id"], "SKERRY-DISK removed", "dev=vdb")
    wait_volume(cluster, vol["id"], status="AVAILABLE", attached_to=None)

    # The file at the site holds no plaintext; decrypted with its key it does.
    volumes = cluster.workdir / site / "volumes"
    volume_file, key_file = volumes / f"{vol['id']}.qcow2", volumes / "keys" / f"{vol['id']}.key"
    assert plaintext.encode() not in volume_file.read_bytes()
    assert plaintext.encode() in decrypted(volume_file, key_file, tmp_path / "vol.raw")

    # Grow, snapshot, copy the snapshot, boot a second guest from the copy.
    api.post(f"/v1/volumes/{vol['id']}/extend", {"size_gb": 2})
    wait_volume(cluster, vol["id"], status="AVAILABLE", size_gb=2, site_size_gb=2)
    snap = api.post(f"/v1/volumes/{vol['id']}/snapshots", {"name": "snap"})
    wait_for(
        lambda: api.get(f"/v1/volumes/{vol['id']}/snapshots/{snap['id']}")["status"] == "AVAILABLE",
        90,
        "snapshot available",
    )
    copy = api.post(
        "/v1/volumes", {"name": "copy", "site": site, "size_gb": 2, "snapshot_id": snap["id"]}
    )
    assert copy["encrypted"] is True
    wait_volume(cluster, copy["id"], status="AVAILABLE", site_size_gb=2)
    copy_file = volumes / f"{copy['id']}.qcow2"
    assert plaintext.encode() not in copy_file.read_bytes()
    copy_key = volumes / "keys" / f"{copy['id']}.key"
    assert plaintext.encode() in decrypted(copy_file, copy_key, tmp_path / "copy.raw")

    booted = cluster.create_server(site, "vol-boot", boot_volume_id=copy["id"])
    assert booted["boot_volume_id"] == copy["id"]
    cluster.wait_server(booted["id"], "ACTIVE")
    wait_console(cluster, site, booted["id"], "SKERRY-DISK present", "dev=vda",
                 f"serial={copy['id'][:20]}")  # fmt: skip
    wait_volume(cluster, copy["id"], status="IN_USE", attached_to=booted["id"], boot=True)
    with pytest.raises(ApiFailure) as refused:
        api.post(f"/v1/volumes/{copy['id']}/detach")
    assert refused.value.status == 409

    # The key: in central's store and the site's key file (and sealed to the site in its
    # documents), nowhere it could leak.
    key = _stored_key(cluster, vol["id"])
    assert base64.b64decode(key) and key_file.read_bytes() == key.encode()
    _assert_key_nowhere(cluster, site, key, [vol["id"], copy["id"]])

    # Deleting the server frees its root volume; then everything goes.
    api.delete(f"/v1/servers/{booted['id']}")
    wait_volume(cluster, copy["id"], status="AVAILABLE", server_id=None, boot=False)
    api.delete(f"/v1/volumes/{vol['id']}/snapshots/{snap['id']}")
    for volume_id in (copy["id"], vol["id"]):
        wait_for(
            lambda v=volume_id: api.delete(f"/v1/volumes/{v}")["status"] == "DELETING",
            30,
            "volume delete accepted (its snapshot gone first)",
            interval=0.5,
        )
        wait_for(lambda v=volume_id: gone(cluster, f"/v1/volumes/{v}"), 60, "volume gone")
    assert sorted(p.name for p in volumes.iterdir() if p.is_file()) == []
    assert sorted((volumes / "keys").iterdir()) == []


def _stored_key(cluster: LocalCluster, volume_id: str) -> str:
    db = sqlite3.connect(cluster.workdir / "central" / "central.db")
    try:
        (key,) = db.execute("SELECT key FROM volumes WHERE id = ?", (volume_id,)).fetchone()
    finally:
        db.close()
    return key


def _assert_key_nowhere(cluster: LocalCluster, site: str, key: str, volume_ids: list[str]) -> None:
    raw = base64.b64decode(key)
    api = cluster.client
    responses = [repr(api.get("/v1/volumes")), repr(api.get("/v1/audit"))]
    responses += [repr(api.get(f"/v1/volumes/{v}")) for v in volume_ids]
    logs = [(cluster.workdir / f"{name}.log").read_bytes() for name in ("central", site)]
    audit = [p.read_bytes() for p in (cluster.workdir / "central").rglob("*.jsonl")]
    # The documents central stored and the one the site holds carry it sealed only.
    docs = []
    for db_file, table in ((cluster.workdir / "central" / "central.db", "desired_docs"),
                           (cluster.workdir / site / "edged.db", None)):  # fmt: skip
        db = sqlite3.connect(db_file)
        try:
            tables = [table] if table else [r[0] for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")]  # fmt: skip
            docs += [repr(db.execute(f"SELECT * FROM [{t}]").fetchall()).encode() for t in tables]
        finally:
            db.close()
    assert len(docs) >= 2
    for hay in [r.encode() for r in responses] + logs + audit + docs:
        assert key.encode() not in hay and raw not in hay and raw.hex().encode() not in hay
