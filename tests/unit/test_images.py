"""/v1/images: streamed uploads checked with the real qemu-img, signatures, scoping."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from quart import Quart

from tests.unit.identity_support import (
    PASSWORD,
    TokenClient,
    admin_client,
    client_with,
    login,
    make_app,
    make_project,
    make_user,
    ok,
)

CHUNK = 64 * 1024


def qemu_img(tmp_path: Path, name: str, fmt: str, size: str = "1M", *extra: str) -> bytes:
    path = tmp_path / name
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, *extra, str(path), size], check=True)
    return path.read_bytes()


def raw_image(size: int = 3 * CHUNK + 123) -> bytes:
    return bytes(i * 7 % 251 for i in range(size))


def store_dir(app: Quart) -> Path:
    return app.extensions["skerry"].config.image_path


def leftovers(app: Quart) -> list[str]:
    path = store_dir(app)
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


async def upload(
    client: TokenClient,
    image_id: str,
    data: bytes,
    *,
    length: int | None = None,
    chunk: int = CHUNK,
) -> tuple[int, Any]:
    """PUT the file in chunks, as a streaming client does; ``length`` sets Content-Length."""
    headers = {"X-Auth-Token": client.token or "", "Content-Type": "application/octet-stream"}
    if length is not None:
        headers["Content-Length"] = str(length)
    async with client.request(f"/v1/images/{image_id}/file", method="PUT", headers=headers) as conn:
        for start in range(0, len(data), chunk):
            await conn.send(data[start : start + chunk])
        await conn.send_complete()
    resp = await conn.as_response()
    return resp.status_code, await resp.get_json()


async def create(client: TokenClient, **body: Any) -> dict[str, Any]:
    body.setdefault("name", "img")
    body.setdefault("disk_format", "raw")
    return await ok(await client.post("/v1/images", json=body), 201)


class Signer:
    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()

    @property
    def public(self) -> str:
        raw = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return base64.b64encode(raw).decode()

    def sign(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        return base64.b64encode(self.key.sign(digest.encode("ascii"))).decode()


async def register(admin: TokenClient, signer: Signer, name: str = "release") -> str:
    body = {"name": name, "public_key": signer.public}
    return (await ok(await admin.post("/v1/image-signing-keys", json=body), 201))["id"]


def problem_field(body: Any) -> str:
    return body["error"]["details"]["fields"][0]["field"]


# -- good uploads ---------------------------------------------------------------------


async def test_qcow2_streamed_upload_and_download(
    app: Quart, admin: TokenClient, tmp_path: Path
) -> None:
    data = qemu_img(tmp_path, "disk.qcow2", "qcow2", "64M")
    image = await create(admin, name="cirros", disk_format="qcow2")
    assert image["status"] == "queued" and image["size"] is None
    status, body = await upload(admin, image["id"], data, chunk=4096)
    assert status == 200, body
    digest = hashlib.sha256(data).hexdigest()
    assert body["status"] == "active"
    assert (body["size"], body["sha256"], body["virtual_size"]) == (len(data), digest, 64 << 20)
    assert body["signed"] is False
    assert leftovers(app) == [image["id"]]

    resp = await admin.get(f"/v1/images/{image['id']}/file")
    assert resp.status_code == 200
    assert await resp.get_data() == data
    assert resp.headers["X-Image-Sha256"] == digest
    assert resp.headers["ETag"] == f'"{digest}"'
    again = await admin.get(f"/v1/images/{image['id']}/file", headers={"Range": "bytes=10-19"})
    assert again.status_code == 206 and await again.get_data() == data[10:20]


async def test_raw_upload_with_length_and_declared_sha256(app: Quart, admin: TokenClient) -> None:
    data = raw_image()
    digest = hashlib.sha256(data).hexdigest()
    image = await create(admin, sha256=digest.upper())
    status, body = await upload(admin, image["id"], data, length=len(data))
    assert status == 200, body
    assert (body["sha256"], body["size"]) == (digest, len(data))
    assert body["virtual_size"] == -(-len(data) // 512) * 512  # qemu-img counts whole sectors
    shown = await ok(await admin.get(f"/v1/images/{image['id']}"))
    assert shown == body
    # The file comes once.
    status, body = await upload(admin, image["id"], data)
    assert status == 409, body


async def test_good_signature_marks_the_image_signed(app: Quart, admin: TokenClient) -> None:
    signer = Signer()
    key_id = await register(admin, signer)
    data = raw_image()
    image = await create(admin, signature=signer.sign(data), signing_key_id=key_id)
    status, body = await upload(admin, image["id"], data)
    assert status == 200, body
    assert body["signed"] is True and body["signing_key_id"] == key_id
    # Without a key id, any registered key that verifies will do.
    other = Signer()
    await register(admin, other, "other")
    image = await create(admin, name="img2", signature=other.sign(data))
    status, body = await upload(admin, image["id"], data)
    assert status == 200, body
    assert body["signed"] is True and body["signing_key_id"] != key_id


# -- refusals leave nothing -----------------------------------------------------------


async def refused_upload(
    app: Quart, client: TokenClient, create_body: dict[str, Any], data: bytes, **kwargs: Any
) -> str:
    image = await create(client, **create_body)
    status, body = await upload(client, image["id"], data, **kwargs)
    assert status == 400, body
    assert body["error"]["code"] == "invalid_request"
    assert leftovers(app) == [], "a refused upload left a file"
    shown = await ok(await client.get(f"/v1/images/{image['id']}"))
    assert shown["status"] == "queued" and shown["size"] is None and shown["sha256"] is None
    await ok(await client.delete(f"/v1/images/{image['id']}"), 204)
    return problem_field(body)


async def test_sha256_mismatch(app: Quart, admin: TokenClient) -> None:
    wrong = hashlib.sha256(b"something else").hexdigest()
    assert await refused_upload(app, admin, {"sha256": wrong}, raw_image()) == "sha256"


@pytest.mark.parametrize("delta", [1, -1, 5000])
async def test_content_length_lies(app: Quart, admin: TokenClient, delta: int) -> None:
    data = raw_image()
    field = await refused_upload(app, admin, {}, data, length=len(data) + delta)
    assert field == "size"


async def test_wrong_and_unknown_formats(app: Quart, admin: TokenClient, tmp_path: Path) -> None:
    qcow2 = qemu_img(tmp_path, "a.qcow2", "qcow2")
    vmdk = qemu_img(tmp_path, "a.vmdk", "vmdk")
    assert await refused_upload(app, admin, {"disk_format": "raw"}, qcow2) == "disk_format"
    assert await refused_upload(app, admin, {"disk_format": "qcow2"}, raw_image()) == "disk_format"
    assert await refused_upload(app, admin, {"disk_format": "qcow2"}, vmdk) == "disk_format"
    resp = await admin.post("/v1/images", json={"name": "x", "disk_format": "vmdk"})
    assert resp.status_code == 400


async def test_qcow2_with_backing_file(app: Quart, admin: TokenClient, tmp_path: Path) -> None:
    qemu_img(tmp_path, "base.qcow2", "qcow2")
    data = qemu_img(
        tmp_path, "child.qcow2", "qcow2", "1M", "-b", str(tmp_path / "base.qcow2"), "-F", "qcow2"
    )
    assert await refused_upload(app, admin, {"disk_format": "qcow2"}, data) == "disk_format"


async def test_bad_signature_and_unknown_key(app: Quart, admin: TokenClient) -> None:
    signer, stranger = Signer(), Signer()
    key_id = await register(admin, signer)
    data = raw_image()
    bad = {"signature": stranger.sign(data), "signing_key_id": key_id}
    assert await refused_upload(app, admin, bad, data) == "signature"
    over_other_bytes = {"signature": signer.sign(data + b"x")}
    assert await refused_upload(app, admin, over_other_bytes, data) == "signature"
    unknown = {"signature": signer.sign(data), "signing_key_id": "no-such-key"}
    assert await refused_upload(app, admin, unknown, data) == "signing_key_id"
    resp = await admin.post(
        "/v1/images", json={"name": "x", "disk_format": "raw", "signature": "not base64!"}
    )
    assert resp.status_code == 400
    assert problem_field(await resp.get_json()) == "signature"


@pytest.fixture
async def small_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Quart]:
    app = make_app(tmp_path, monkeypatch, image_max_bytes=100_000)
    async with app.test_app():
        yield app


async def test_oversize_upload_is_413(small_app: Quart) -> None:
    admin = await admin_client(small_app)
    image = await create(admin)
    for length in (None, 200_000):  # discovered while streaming, or told up front
        status, body = await upload(admin, image["id"], raw_image(200_000), length=length)
        assert status == 413, body
        assert problem_field(body) == "size"
        assert leftovers(small_app) == []
    status, body = await upload(admin, image["id"], raw_image(90_000))
    assert status == 200, body


@pytest.fixture
async def signed_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Quart]:
    app = make_app(tmp_path, monkeypatch, require_signed_images=True)
    async with app.test_app():
        yield app


async def test_require_signed_images(signed_only: Quart) -> None:
    admin = await admin_client(signed_only)
    data = raw_image()
    assert await refused_upload(signed_only, admin, {}, data) == "signature"
    signer = Signer()
    key_id = await register(admin, signer)
    image = await create(admin, signature=signer.sign(data), signing_key_id=key_id)
    status, body = await upload(admin, image["id"], data)
    assert status == 200 and body["signed"] is True, body


# -- keys and scoping -----------------------------------------------------------------


async def test_signing_keys_crud(app: Quart, admin: TokenClient) -> None:
    signer = Signer()
    key_id = await register(admin, signer)
    resp = await admin.post(
        "/v1/image-signing-keys", json={"name": "release", "public_key": signer.public}
    )
    assert resp.status_code == 409
    short = base64.b64encode(b"x" * 31).decode()
    resp = await admin.post("/v1/image-signing-keys", json={"name": "k", "public_key": short})
    assert resp.status_code == 400
    listed = await ok(await admin.get("/v1/image-signing-keys"))
    assert [k["id"] for k in listed["keys"]] == [key_id]
    await ok(await admin.delete(f"/v1/image-signing-keys/{key_id}"), 204)
    assert (await admin.delete(f"/v1/image-signing-keys/{key_id}")).status_code == 404


async def member(app: Quart, admin: TokenClient, project: str) -> TokenClient:
    proj = await make_project(admin, project)
    await make_user(admin, f"{project}-user", proj["id"], "member")
    issued = await login(app, f"{project}-user", PASSWORD, project)
    return client_with(app, issued["token"])


async def test_project_scoping_and_public_images(app: Quart, admin: TokenClient) -> None:
    alice, bob = await member(app, admin, "alpha"), await member(app, admin, "beta")
    data = raw_image()
    private = await create(alice, name="mine")
    status, _ = await upload(alice, private["id"], data)
    assert status == 200
    resp = await alice.post(
        "/v1/images", json={"name": "p", "disk_format": "raw", "visibility": "public"}
    )
    assert resp.status_code == 403
    public = await create(admin, name="shared", visibility="public")
    assert (await upload(admin, public["id"], data))[0] == 200

    for path in (f"/v1/images/{private['id']}", f"/v1/images/{private['id']}/file"):
        assert (await bob.get(path)).status_code == 404
    assert (await bob.delete(f"/v1/images/{private['id']}")).status_code == 404
    assert (await upload(bob, private["id"], data))[0] == 404
    listed = await ok(await bob.get("/v1/images"))
    assert [i["id"] for i in listed["images"]] == [public["id"]]
    resp = await bob.get(f"/v1/images/{public['id']}/file")
    assert resp.status_code == 200 and await resp.get_data() == data
    assert (await bob.delete(f"/v1/images/{public['id']}")).status_code == 403

    listed = await ok(await admin.get("/v1/images"))
    assert {i["id"] for i in listed["images"]} == {private["id"], public["id"]}
    await ok(await alice.delete(f"/v1/images/{private['id']}"), 204)
    assert leftovers(app) == [public["id"]]
    assert (await alice.get(f"/v1/images/{private['id']}")).status_code == 404


async def test_uploads_and_deletes_are_audited(app: Quart, admin: TokenClient) -> None:
    image = await create(admin)
    await upload(admin, image["id"], raw_image())
    await ok(await admin.delete(f"/v1/images/{image['id']}"), 204)
    audit = await ok(await admin.get("/v1/audit"))
    actions = [e["action"] for e in audit["events"]]
    assert "POST /v1/images" in actions
    assert "PUT /v1/images/{image_id}/file" in actions
    assert "DELETE /v1/images/{image_id}" in actions


async def test_upload_larger_than_the_api_body_limit(app: Quart, admin: TokenClient) -> None:
    # The app caps JSON bodies at 1 MiB; image uploads are bounded by image_max_bytes only.
    data = os.urandom(3 * 1024 * 1024 + 5)
    image = await create(admin)
    status, body = await upload(admin, image["id"], data, length=len(data), chunk=1 << 20)
    assert status == 200, body
    resp = await admin.get(f"/v1/images/{image['id']}/file")
    assert await resp.get_data() == data
    queued = await create(admin, name="later")
    assert (await admin.get(f"/v1/images/{queued['id']}/file")).status_code == 409


# -- servers booting from central images, and the site's desired document ---------------


async def test_servers_reference_images_and_documents_carry_them(
    app: Quart, admin: TokenClient
) -> None:
    from central import orchestrator

    store = app.extensions["skerry"].store
    await ok(await admin.post("/v1/sites", json={"name": "edge-a"}), 201)
    alice, bob = await member(app, admin, "alpha"), await member(app, admin, "beta")
    signer = Signer()
    key_id = await register(admin, signer)
    data = raw_image()
    image = await create(alice, name="disk", signature=signer.sign(data), signing_key_id=key_id)
    queued = await create(alice, name="later")
    assert (await upload(alice, image["id"], data))[0] == 200

    def server(name: str, image_ref: str) -> dict[str, Any]:
        flavor = {"vcpus": 1, "ram_mb": 128, "disk_gb": 1}
        return {"name": name, "site": "edge-a", "image": image_ref, "flavor": flavor}

    by_name = await ok(await alice.post("/v1/servers", json=server("s1", "disk")), 202)
    assert by_name["image"] == image["id"]
    by_id = await ok(await alice.post("/v1/servers", json=server("s2", image["id"])), 202)
    assert by_id["image"] == image["id"]
    resp = await alice.post("/v1/servers", json=server("s3", queued["id"]))
    assert resp.status_code == 409 and "no file yet" in (await resp.get_json())["error"]["message"]
    # Another project's private image is not seen: the name stays a site-local kernel image.
    kernel = await ok(await bob.post("/v1/servers", json=server("s4", "disk")), 202)
    assert kernel["image"] == "disk"

    _, doc = orchestrator.latest_document(store, "edge-a")
    assert doc["images"] == [
        {
            "id": image["id"],
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "format": "raw",
            "signature": signer.sign(data),
            "signing_key_id": key_id,
        }
    ]
    assert doc["image_signing_keys"] == [{"id": key_id, "public_key": signer.public}]
    assert doc["settings"]["require_signed_images"] is False

    resp = await alice.delete(f"/v1/images/{image['id']}")
    assert resp.status_code == 409
    assert image["id"] in leftovers(app)
    await ok(await admin.put("/v1/settings", json={"require_signed_images": True}))
    _, doc = orchestrator.latest_document(store, "edge-a")
    assert doc["settings"]["require_signed_images"] is True
