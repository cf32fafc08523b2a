"""Request and response bodies of the /v1 API (validated, and the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from central.zap import PublicKey

NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"
SERVER_NAME = r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$"
IMAGE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# Server metadata reaches the guest as ``skerry.<key>=<value>`` on its kernel command line.
MetaKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
MetaValue = Annotated[str, StringConstraints(pattern=r"^[^\s\"'\\]{0,255}$")]
META_RESERVED = frozenset({"hostname", "ip"})  # set by edged itself
META_MAX_CHARS = 1024  # of "skerry.<key>=<value> " in all: the command line is short


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
    cpu_policy: Literal["shared", "dedicated"] = Field(
        default="shared", description="dedicated: each vCPU pinned to its own host CPU."
    )
    mem_page_size: Literal["small", "2MB", "1GB"] = Field(
        default="small", description="Hugepage-backed memory (whole pages per NUMA cell)."
    )
    numa_nodes: int = Field(
        default=1, ge=1, le=8, description="Guest NUMA cells (at most vcpus), split evenly."
    )


class ServerCreate(Strict):
    name: str = Field(pattern=SERVER_NAME, description="Guest hostname.")
    site: str = Field(pattern=NAME, description="Site the server runs at.")
    flavor: Flavor
    image: str = Field(
        pattern=IMAGE,
        description="A central image (id, or name of an active image the project sees), "
        "or else the name of a kernel-boot image in the site's image directory.",
    )
    power: Literal["running", "stopped"] = "running"
    ports: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="Ids of the project's free ports at the site, attached to the new server.",
    )
    metadata: dict[MetaKey, MetaValue] = Field(
        default_factory=dict,
        max_length=16,
        description="Read by the guest at boot (skerry.<key>=<value> on its kernel command "
        "line): keys A-Z a-z 0-9 _ -, values without whitespace, quotes or backslashes.",
    )
    boot_volume_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="A free volume of the project at the site: the server's root disk "
        "instead of a fresh one of flavor.disk_gb.",
    )

    @field_validator("metadata")
    @classmethod
    def _fits_the_command_line(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = sorted(META_RESERVED & set(value))
        if reserved:
            raise ValueError(f"key {reserved[0]!r} is set by the site itself")
        if sum(len(f"skerry.{k}={v} ") for k, v in value.items()) > META_MAX_CHARS:
            raise ValueError(f"metadata takes more than {META_MAX_CHARS} characters")
        return value


class Server(BaseModel):
    id: str
    name: str
    site: str
    project_id: str | None = None  # the project of the token that created it
    flavor: Flavor
    numa_placement: list[int]  # host NUMA node of each guest cell (central's choice); []: none
    metadata: dict[str, str]
    image: str
    boot_volume_id: str | None = None  # the volume that is its root disk
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
    require_signed_images: bool | None = Field(
        default=None, description="Every site refuses to boot a central image that is unsigned."
    )


class SettingsView(BaseModel):
    reconcile_interval_s: float
    stop_grace_s: float
    require_signed_images: bool = False


class HubStats(BaseModel):
    messages: dict[str, int]
    dropped: dict[str, int]
    dropped_total: int
    sites_connected: int
    refused: dict[str, int] = {}  # CURVE handshakes refused by the ZAP handler, by reason
    refused_total: int = 0
    public_key: str  # the hub's CURVE server public key (Z85)
    image_feed: dict[str, dict[str, int]] = {}  # the image feed's messages and dropped frames
    replication: dict[str, Any] = {}  # object replication: receiver, scrub/repair, site links


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any]


class Error(BaseModel):
    error: ErrorBody
