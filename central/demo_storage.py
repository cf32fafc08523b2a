"""The storage act of ``skerry demo``: a central image, an encrypted volume, a bucket.

At one site: the tiny guest's disk image is uploaded to central and a server
boots from it (the site pulls, verifies and caches it); an encrypted volume is
made and hot-plugged into the running guest, which prints the new disk on its
console; a bucket replicated to central gets objects written at the site's
local API, and they appear at central. Then everything is removed again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from central.cli import table
from central.cli_volume import VOLUME_COLUMNS, volume_rows
from central.localcluster import REPO, LocalCluster, wait_for

DISK_IMAGE = REPO / "images" / "build" / "tiny-disk" / "tiny.qcow2"
BUCKET = "demo-telemetry"
OBJECTS = {f"cells/{n:02d}.json": f'{{"cell": {n}, "rsrp": -{90 + n}}}'.encode() for n in range(3)}
IMAGE_COLUMNS = ("id", "name", "disk_format", "size", "sha256", "status")
BUCKET_COLUMNS = ("name", "sites", "objects", "bytes")


def deploy(cluster: LocalCluster, site: str, say: Callable[[str], None]) -> dict[str, Any]:
    """Upload the disk image, ask for a server booting from it, a volume and a bucket."""
    api = cluster.client
    image = cluster.upload_image("tiny-disk", DISK_IMAGE, "qcow2")
    say(f"image tiny-disk uploaded to central (sha256 {image['sha256'][:12]}…)")
    server = cluster.create_server(site, f"disk-{site[-1]}1", image=image["id"])
    volume = api.post(
        "/v1/volumes", {"name": f"data-{site[-1]}", "site": site, "size_gb": 1, "encrypted": True}
    )
    bucket = api.put(f"/v1/buckets/{BUCKET}", {"sites": [site], "replicate_to_central": True})
    return {"site": site, "image": image, "server": server, "volume": volume, "bucket": bucket}


def show(cluster: LocalCluster, made: dict[str, Any], say: Callable[[str], None]) -> None:
    """Wait for the image-booted guest, hot-plug the volume, write objects, see them at central."""
    api, site = cluster.client, made["site"]
    server, volume = made["server"], made["volume"]
    cluster.wait_server(server["id"], "ACTIVE", timeout=180)
    cluster.wait_marker(server["id"], timeout=120)
    say(f"server {server['name']} booted from central image tiny-disk out of {site}'s cache")
    wait_for(lambda: _status(api, volume["id"]) == "AVAILABLE", 60, "volume AVAILABLE")
    api.post(f"/v1/volumes/{volume['id']}/attach", {"server_id": server["id"]})
    serial = f"serial={volume['id'][:20]}"
    wait_for(
        lambda: any(
            "SKERRY-DISK added" in line and serial in line
            for line in cluster.server(server["id"])["console"].splitlines()
        ),
        90,
        "the guest sees the hot-plugged volume",
    )
    say(f"encrypted volume {volume['name']} hot-plugged: the guest sees a new virtio disk")

    local = cluster.local_api(site, api.token)
    wait_for(
        lambda: BUCKET in [b["name"] for b in local.get("/v1/buckets")["buckets"]],
        60,
        f"bucket {BUCKET} at {site}",
    )
    for key, data in OBJECTS.items():
        local.put_bytes(f"/v1/buckets/{BUCKET}/objects/{key}", data)
    say(f"{len(OBJECTS)} objects written at {site}'s local API into bucket {BUCKET}")
    wanted = {key: hashlib.sha256(data).hexdigest() for key, data in OBJECTS.items()}
    wait_for(lambda: _etags(api) == wanted, 90, f"objects of {BUCKET} replicated to central")
    say(f"bucket {BUCKET}: all {len(OBJECTS)} objects replicated to central, same ETags")

    print()
    images = api.get("/v1/images")["images"]
    print(
        table([{**i, "id": i["id"][:8], "sha256": i["sha256"][:12]} for i in images], IMAGE_COLUMNS)
    )
    print()
    print(table(volume_rows(api.get("/v1/volumes")["volumes"]), VOLUME_COLUMNS))
    print()
    buckets = api.get("/v1/buckets")["buckets"]
    print(table([_bucket_row(b) for b in buckets], BUCKET_COLUMNS))


def clean(cluster: LocalCluster, made: dict[str, Any]) -> None:
    """Detach and delete the volume once its server is gone; empty and drop the bucket."""
    api = cluster.client
    wait_for(
        lambda: not any(v["server_id"] for v in api.get("/v1/volumes")["volumes"]),
        60,
        "volume free once its server is gone",
    )
    api.delete(f"/v1/volumes/{made['volume']['id']}")
    for key in OBJECTS:
        api.delete(f"/v1/buckets/{BUCKET}/objects/{key}")
    api.delete(f"/v1/buckets/{BUCKET}")
    wait_for(lambda: not api.get("/v1/volumes")["volumes"], 60, "volume deleted at the site")
    api.delete(f"/v1/images/{made['image']['id']}")


def _status(api: Any, volume_id: str) -> str:
    return api.get(f"/v1/volumes/{volume_id}")["status"]


def _etags(api: Any) -> dict[str, str]:
    listed = api.get(f"/v1/buckets/{BUCKET}")["objects"]
    return {o["key"]: o["etag"] for o in listed}


def _bucket_row(bucket: dict[str, Any]) -> dict[str, Any]:
    return {**bucket, "sites": ",".join(bucket["policy"]["sites"])}
