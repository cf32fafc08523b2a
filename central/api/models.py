"""Request and response bodies of the /v1 API (validated, and the OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from central.zap import PublicKey

NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"
SERVER_NAME = r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$"
IMAGE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class Strict(BaseModel):
    """Unknown fields are refused, so a typo never silently means a default."""

    model_config = ConfigDict(extra="forbid")


class SiteCreate(Strict):
    name: str = Field(pattern=NAME, description="Site name (a-z, 0-9, '-'), its ZeroMQ identity.")
    public_key: PublicKey | None = Field(
        default=None, description="The site's CURVE public key (Z85); enroll it now."
    )


class Site(BaseModel):
    name: str
    state: Literal["up", "down"]
    last_seen: float | None
    desired_generation: int
    acked_generation: int
    observed_generation: int
    inventory: dict[str, Any]
    health: dict[str, Any]
    created_at: float
    public_key: str | None = None  # enrolled CURVE public key (Z85); None: cannot connect


class SiteList(BaseModel):
    sites: list[Site]


class Flavor(Strict):
    vcpus: int = Field(ge=1, le=64)
    ram_mb: int = Field(ge=64, le=262144)
    disk_gb: int = Field(ge=1, le=4096)


class ServerCreate(Strict):
    name: str = Field(pattern=SERVER_NAME, description="Guest hostname.")
    site: str = Field(pattern=NAME, description="Site the server runs at.")
    flavor: Flavor
    image: str = Field(pattern=IMAGE, description="Image name in the site's image directory.")
    power: Literal["running", "stopped"] = "running"
    ports: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="Ids of the project's free ports at the site, attached to the new server.",
    )


class Server(BaseModel):
    id: str
    name: str
    site: str
    project_id: str | None = None  # the project of the token that created it
    flavor: Flavor
    image: str
    power: Literal["running", "stopped"]
    status: Literal["BUILD", "ACTIVE", "SHUTOFF", "ERROR", "DELETING"]
    reason: str
    console: str
    created_at: float
    updated_at: float


class ServerList(BaseModel):
    servers: list[Server]


class Settings(Strict):
    reconcile_interval_s: float | None = Field(default=None, gt=0, le=3600)
    stop_grace_s: float | None = Field(default=None, ge=0, le=600)


class SettingsView(BaseModel):
    reconcile_interval_s: float
    stop_grace_s: float


class HubStats(BaseModel):
    messages: dict[str, int]
    dropped: dict[str, int]
    dropped_total: int
    sites_connected: int
    refused: dict[str, int] = {}  # CURVE handshakes refused by the ZAP handler, by reason
    refused_total: int = 0
    public_key: str  # the hub's CURVE server public key (Z85)


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any]


class Error(BaseModel):
    error: ErrorBody
