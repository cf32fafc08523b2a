"""Request and response bodies of /v1/images and /v1/image-signing-keys."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from central.api.models import IMAGE, NAME, Strict
from central.images import ED25519_KEY_BYTES, ED25519_SIG_BYTES, ImageError, decode_b64

SHA256 = r"^[0-9a-fA-F]{64}$"


def _b64(value: str, length: int, field: str) -> str:
    try:
        decode_b64(value, length, field)
    except ImageError as exc:
        raise ValueError(exc.message) from None
    return value


class ImageCreate(Strict):
    name: str = Field(pattern=IMAGE, description="Image name, as servers refer to it.")
    disk_format: Literal["qcow2", "raw"] = Field(
        description="Format of the file to upload; checked with qemu-img, never trusted."
    )
    visibility: Literal["private", "public"] = Field(
        default="private", description="private: the project's own; public (cloud admin): all."
    )
    sha256: str | None = Field(
        default=None, pattern=SHA256, description="Expected hex sha256 of the file."
    )
    signature: str | None = Field(
        default=None, description="Base64 Ed25519 signature over the ASCII hex sha256."
    )
    signing_key_id: str | None = Field(
        default=None, description="Id of the registered key that made the signature."
    )

    @field_validator("sha256")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value is not None else None

    @field_validator("signature")
    @classmethod
    def _signature(cls, value: str | None) -> str | None:
        return _b64(value, ED25519_SIG_BYTES, "signature") if value is not None else None


class Image(BaseModel):
    id: str
    name: str
    project_id: str
    visibility: Literal["private", "public"]
    disk_format: Literal["qcow2", "raw"]
    status: Literal["queued", "active"]
    size: int | None
    sha256: str | None
    virtual_size: int | None
    signature: str | None
    signing_key_id: str | None
    signed: bool
    created_at: float
    updated_at: float


class ImageList(BaseModel):
    images: list[Image]


class SigningKeyCreate(Strict):
    name: str = Field(pattern=NAME, description="Key name (a-z, 0-9, '-').")
    public_key: str = Field(description="Base64 of the raw 32-byte Ed25519 public key.")

    @field_validator("public_key")
    @classmethod
    def _key(cls, value: str) -> str:
        return _b64(value, ED25519_KEY_BYTES, "public_key")


class SigningKey(BaseModel):
    id: str
    name: str
    public_key: str
    created_at: float


class SigningKeyList(BaseModel):
    keys: list[SigningKey]
