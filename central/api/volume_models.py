"""Request and response bodies of /v1/volumes and their snapshots.

No body here ever carries a volume's key: it lives in central's store and in
the site's desired document only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from central.api.models import NAME, SERVER_NAME, Strict

ID = r"^[A-Za-z0-9_-]{1,64}$"
MAX_SIZE_GB = 4096

VolumeStatus = Literal["BUILD", "AVAILABLE", "IN_USE", "ERROR", "DELETING"]


class VolumeCreate(Strict):
    name: str = Field(pattern=SERVER_NAME)
    site: str = Field(pattern=NAME, description="The one site the volume lives at.")
    size_gb: int = Field(ge=1, le=MAX_SIZE_GB)
    encrypted: bool | None = Field(
        default=None,
        description="LUKS-encrypted with a key central makes (default false; from a "
        "snapshot: the snapshot's, and its key).",
    )
    image_id: str | None = Field(
        default=None, pattern=ID, description="An active image the volume starts with."
    )
    snapshot_id: str | None = Field(
        default=None, pattern=ID, description="A snapshot at the same site the volume copies."
    )


class VolumeExtend(Strict):
    size_gb: int = Field(ge=1, le=MAX_SIZE_GB, description="The new size; volumes only grow.")


class VolumeAttach(Strict):
    server_id: str = Field(pattern=ID, description="A server of the volume's project and site.")


class SnapshotCreate(Strict):
    name: str = Field(pattern=SERVER_NAME)


class Volume(BaseModel):
    id: str
    name: str
    site: str
    project_id: str
    size_gb: int
    encrypted: bool
    image_id: str | None
    snapshot_id: str | None
    server_id: str | None  # attached to (desired)
    boot: bool  # the root disk of server_id
    status: VolumeStatus
    reason: str
    attached_to: str | None  # as the site reports it
    site_size_gb: int | None  # as the site reports it
    created_at: float
    updated_at: float


class VolumeList(BaseModel):
    volumes: list[Volume]


class Snapshot(BaseModel):
    id: str
    name: str
    volume_id: str
    site: str
    project_id: str
    size_gb: int
    encrypted: bool
    status: Literal["BUILD", "AVAILABLE", "ERROR", "DELETING"]
    reason: str
    created_at: float
    updated_at: float


class SnapshotList(BaseModel):
    snapshots: list[Snapshot]
