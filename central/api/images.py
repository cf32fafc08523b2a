"""/v1/images and /v1/image-signing-keys: disk images kept at central, and trusted keys.

An image is created ``queued`` (name, format, visibility, optionally the
expected sha256 and an Ed25519 signature over it), then its file is uploaded
once with ``PUT /v1/images/{id}/file``: streamed to the image store, checked
(size, format by ``qemu-img``, sha256, signature; see :mod:`central.images`)
and only then kept, making the image ``active``. A refused upload answers 400
naming the field and leaves the image ``queued`` with no file. Images belong to
the project that created them; public ones (cloud admin) are seen by all, and
another project's private image is "not found". Signing keys are registered by
a cloud admin; every caller may list them (they are public keys).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from quart import Blueprint, Request, current_app, request, send_file
from quart_schema import validate_request, validate_response

from central.api.errors import conflict, not_found
from central.api.image_models import (
    Image,
    ImageCreate,
    ImageList,
    SigningKey,
    SigningKeyCreate,
    SigningKeyList,
)
from central.api.models import Error
from central.api.policy import (
    cloud_admin,
    forbidden,
    principal,
    project_scope,
    set_audit_target,
    writer,
)
from central.api.services import fleet_change, services
from central.images import ImageError, ImageStore, check_disk, disk_info, verifying_key
from central.store import now

bp = Blueprint("images", __name__, url_prefix="/v1/images")
keys_bp = Blueprint("image_signing_keys", __name__, url_prefix="/v1/image-signing-keys")
UPLOAD_PATH = re.compile(r"^/v1/images/[^/]+/file$")
STORE_KEY = "skerry.images"


class UploadRequest(Request):
    """Quart's request, without the app-wide body limit on image uploads: those are
    streamed to disk and bounded by ``image_max_bytes`` in :class:`ImageStore`."""

    def __init__(self, method: str, scheme: str, path: str, *args: Any, **kwargs: Any) -> None:
        if method == "PUT" and UPLOAD_PATH.match(path):
            kwargs["max_content_length"] = None
        super().__init__(method, scheme, path, *args, **kwargs)


def image_store() -> ImageStore:
    """The app's image store, made on first use from its config."""
    found = current_app.extensions.get(STORE_KEY)
    if found is None:
        config = services().config
        found = ImageStore(config.image_path, config.image_max_bytes)
        current_app.extensions[STORE_KEY] = found
    return found


def image_view(row: dict[str, Any]) -> dict[str, Any]:
    fields = {name: row[name] for name in Image.model_fields if name != "signed"}
    return {**fields, "signed": bool(row["signed"])}


def get_image(image_id: str) -> dict[str, Any]:
    """An image the caller may see (its project's, or public), or 404."""
    row = services().store.one("SELECT * FROM images WHERE id = ?", (image_id,))
    scope = project_scope()
    if row is None or (
        scope is not None and row["project_id"] != scope and row["visibility"] != "public"
    ):
        raise not_found("image", image_id)
    return row


def changeable_image(image_id: str) -> dict[str, Any]:
    """An image the caller may change: another project's public one only as cloud admin."""
    row = get_image(image_id)
    who = principal()
    if not who.is_cloud_admin and row["project_id"] != who.project_id:
        raise forbidden("only the owning project or a cloud admin may change a public image")
    return row


def _trusted_keys(row: dict[str, Any]) -> list[tuple[str, str]]:
    """The keys the image's signature may verify with (checked before any byte is read)."""
    if row["signature"] is None:
        if services().config.require_signed_images:
            raise ImageError("signature", "this cloud requires signed images; sign the sha256")
        return []
    store = services().store
    if row["signing_key_id"] is None:
        rows = store.query("SELECT id, public_key FROM image_signing_keys ORDER BY created_at")
    else:
        rows = store.query(
            "SELECT id, public_key FROM image_signing_keys WHERE id = ?", (row["signing_key_id"],)
        )
        if not rows:
            raise ImageError(
                "signing_key_id", f"signing key {row['signing_key_id']!r} is not registered"
            )
    if not rows:
        raise ImageError("signature", "no image-signing key is registered")
    return [(r["id"], r["public_key"]) for r in rows]


async def _receive(row: dict[str, Any], keys: list[tuple[str, str]]) -> None:
    """Stream, check and keep the file of a queued image; on failure nothing is left."""
    files = image_store()
    staged = await files.receive(request.body, request.content_length)
    try:
        info = await disk_info(staged.path)
        check_disk(info, row["disk_format"])
        if row["declared_sha256"] is not None and row["declared_sha256"] != staged.sha256:
            raise ImageError("sha256", f"the upload's sha256 is {staged.sha256}, not as declared")
        key_id = verifying_key(staged.sha256, row["signature"], keys) if keys else None
        files.keep(staged, row["id"])
    except BaseException:
        files.discard(staged.path)
        raise
    fields = {
        "status": "active",
        "size": staged.size,
        "sha256": staged.sha256,
        "virtual_size": info.virtual_size,
        "signed": int(key_id is not None),
        "signing_key_id": key_id or row["signing_key_id"],
        "updated_at": now(),
    }
    try:
        with services().store.transaction() as db:
            sets = ", ".join(f"{k} = :{k}" for k in fields)
            cur = db.conn.execute(
                f"UPDATE images SET {sets} WHERE id = :id AND status = 'queued'",
                {**fields, "id": row["id"]},
            )
            if cur.rowcount != 1:
                raise conflict(f"image {row['id']!r} was deleted or uploaded meanwhile")
    except BaseException:
        files.remove(row["id"])
        raise


@bp.post("")
@writer
@validate_request(ImageCreate)
@validate_response(Image, 201)
@validate_response(Error, 400)
@validate_response(Error, 403)
async def create_image(data: ImageCreate):  # type: ignore[no-untyped-def]
    """Record an image (``queued``); its file comes with ``PUT /v1/images/{id}/file``."""
    if data.visibility == "public" and not principal().is_cloud_admin:
        raise forbidden("only a cloud admin may create a public image")
    if data.signing_key_id is not None and data.signature is None:
        raise ImageError("signing_key_id", "a signing key id needs a signature")
    image_id = str(uuid.uuid4())
    stamp = now()
    with services().store.transaction() as db:
        db["images"].insert(
            {
                "id": image_id,
                "name": data.name,
                "project_id": principal().project_id,
                "visibility": data.visibility,
                "disk_format": data.disk_format,
                "status": "queued",
                "declared_sha256": data.sha256,
                "signature": data.signature,
                "signing_key_id": data.signing_key_id,
                "signed": 0,
                "created_at": stamp,
                "updated_at": stamp,
            }
        )
    set_audit_target(f"image_id={image_id}")
    return image_view(get_image(image_id)), 201


@bp.put("/<image_id>/file")
@writer
@validate_response(Image)
@validate_response(Error, 400)
@validate_response(Error, 404)
@validate_response(Error, 409)
@validate_response(Error, 413)
async def upload_image(image_id: str):  # type: ignore[no-untyped-def]
    """Upload the image's file (the raw bytes as the body, streamed); it becomes ``active``."""
    row = changeable_image(image_id)
    if row["status"] != "queued":
        raise conflict(f"image {image_id!r} already has its file", image_status=row["status"])
    keys = _trusted_keys(row)
    with image_store().upload_slot(image_id):
        await _receive(row, keys)
    return image_view(get_image(image_id))


@bp.get("")
@validate_response(ImageList)
async def list_images():  # type: ignore[no-untyped-def]
    """The images of the token's project and the public ones (all for a cloud admin)."""
    scope = project_scope()
    if scope is None:
        rows = services().store.query("SELECT * FROM images ORDER BY name, id")
    else:
        rows = services().store.query(
            "SELECT * FROM images WHERE project_id = ? OR visibility = 'public' ORDER BY name, id",
            (scope,),
        )
    return {"images": [image_view(r) for r in rows]}


@bp.get("/<image_id>")
@validate_response(Image)
@validate_response(Error, 404)
async def show_image(image_id: str):  # type: ignore[no-untyped-def]
    """One image."""
    return image_view(get_image(image_id))


@bp.get("/<image_id>/file")
@validate_response(Error, 404)
@validate_response(Error, 409)
async def download_image(image_id: str):  # type: ignore[no-untyped-def]
    """The image's bytes, streamed (Range requests supported); ETag is the sha256."""
    row = get_image(image_id)
    if row["status"] != "active":
        raise conflict(f"image {image_id!r} has no file yet", image_status=row["status"])
    response = await send_file(
        image_store().path(image_id), mimetype="application/octet-stream", add_etags=False
    )
    response.set_etag(row["sha256"])
    response.headers["X-Image-Sha256"] = row["sha256"]
    return await response.make_conditional(request, accept_ranges=True, complete_length=row["size"])


@bp.delete("/<image_id>")
@writer
@validate_response(Error, 404)
@validate_response(Error, 409)
async def delete_image(image_id: str):  # type: ignore[no-untyped-def]
    """Delete an image's record and its file; refused (409) while a server boots from it."""
    changeable_image(image_id)
    with services().store.transaction() as db:
        used = db.conn.execute("SELECT id FROM servers WHERE image = ? LIMIT 1", (image_id,))
        if used.fetchone() is not None:
            raise conflict(f"image {image_id!r} is used by a server", field="image")
        db.conn.execute("DELETE FROM images WHERE id = ?", (image_id,))
    image_store().remove(image_id)
    return "", 204


@keys_bp.post("")
@cloud_admin
@validate_request(SigningKeyCreate)
@validate_response(SigningKey, 201)
@validate_response(Error, 400)
@validate_response(Error, 409)
async def create_signing_key(data: SigningKeyCreate):  # type: ignore[no-untyped-def]
    """Register a trusted Ed25519 public key for image signatures."""
    store = services().store
    if store.one("SELECT id FROM image_signing_keys WHERE name = ?", (data.name,)):
        raise conflict(f"signing key {data.name!r} exists", field="name")
    key = {"id": str(uuid.uuid4()), "name": data.name, "public_key": data.public_key}
    key["created_at"] = now()
    with fleet_change() as changed:  # sites verify with the keys in their documents
        changed.db["image_signing_keys"].insert(key)
    set_audit_target(f"key_id={key['id']}")
    return key, 201


@keys_bp.get("")
@validate_response(SigningKeyList)
async def list_signing_keys():  # type: ignore[no-untyped-def]
    """The trusted image-signing keys (public keys; every caller may read them)."""
    rows = services().store.query("SELECT * FROM image_signing_keys ORDER BY name")
    return {"keys": rows}


@keys_bp.delete("/<key_id>")
@cloud_admin
@validate_response(Error, 404)
async def delete_signing_key(key_id: str):  # type: ignore[no-untyped-def]
    """Stop trusting a key (images it verified stay as they are)."""
    store = services().store
    if store.one("SELECT id FROM image_signing_keys WHERE id = ?", (key_id,)) is None:
        raise not_found("image signing key", key_id)
    with fleet_change() as changed:
        changed.conn.execute("DELETE FROM image_signing_keys WHERE id = ?", (key_id,))
    return "", 204
