"""Request and response bodies of /v1/networks (with subnets) and /v1/ports."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from central.api.models import NAME, SERVER_NAME, Strict

PHYSNET = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"


class NetworkCreate(Strict):
    name: str = Field(pattern=SERVER_NAME)
    site: str = Field(pattern=NAME, description="The one site the network lives at.")
    kind: Literal["tenant", "provider"] = "tenant"
    segmentation: Literal["vxlan", "vlan", "flat"] = Field(
        default="vxlan",
        description="tenant: vxlan (VNI given by central) or vlan; provider: vlan or flat.",
    )
    segmentation_id: int | None = Field(
        default=None, ge=1, le=4094, description="The VLAN id (vlan only)."
    )
    physnet: str | None = Field(
        default=None,
        pattern=PHYSNET,
        description="Physical network: required for provider networks, optional for tenant vlan.",
    )
    mtu: int | None = Field(
        default=None, ge=68, le=9000, description="Default 1450 for vxlan, 1500 otherwise."
    )


class Pool(Strict):
    start: str
    end: str


class SubnetView(BaseModel):
    id: str
    network_id: str
    cidr: str
    gateway: str
    allocation_pools: list[Pool]
    ip_version: int
    created_at: float


class SubnetCreate(Strict):
    cidr: str = Field(max_length=64, description="e.g. 10.0.0.0/24 (no host bits).")
    gateway: str | None = Field(
        default=None, max_length=64, description="Default: the first host address."
    )
    allocation_pools: list[Pool] | None = Field(
        default=None, max_length=32, description="Default: every host address but the gateway."
    )


class Network(BaseModel):
    id: str
    name: str
    project_id: str
    site: str
    kind: Literal["tenant", "provider"]
    segmentation: Literal["vxlan", "vlan", "flat"]
    segmentation_id: int | None
    physnet: str | None
    mtu: int
    subnets: list[SubnetView]
    status: Literal["BUILD", "ACTIVE", "ERROR"]  # BUILD until the site reports the network
    reason: str
    created_at: float


class NetworkList(BaseModel):
    networks: list[Network]


class SubnetList(BaseModel):
    subnets: list[SubnetView]


class FixedIp(Strict):
    subnet_id: str | None = None
    ip_address: str | None = Field(default=None, max_length=64)


class PortCreate(Strict):
    network_id: str
    name: str = Field(default="", pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,62})?$")
    mac_address: str | None = Field(
        default=None, max_length=32, description="Unicast MAC; default: fa:16:3e:xx:xx:xx."
    )
    fixed_ips: list[FixedIp] | None = Field(
        default=None,
        max_length=16,
        description="Default: one address from every subnet of the network; [] for none.",
    )
    vnic_type: Literal["normal", "direct"] = Field(
        default="normal",
        description="direct: an SR-IOV VF (networks with a physnet the site has VFs on).",
    )
    server_id: str | None = Field(default=None, description="Attach to this server now.")


class PortAttach(Strict):
    server_id: str


class FixedIpView(BaseModel):
    subnet_id: str
    ip_address: str


class Port(BaseModel):
    id: str
    name: str
    project_id: str
    network_id: str
    site: str
    mac_address: str
    fixed_ips: list[FixedIpView]
    vnic_type: Literal["normal", "direct"]
    server_id: str | None
    numa_node: int | None  # bound direct ports: host NUMA node of the VF (central's choice)
    status: Literal["BUILD", "ACTIVE", "DOWN", "ERROR"]  # BUILD until the site reports the port
    reason: str
    binding: dict[str, Any] | None  # as the site reports it: tap or VF
    created_at: float


class PortList(BaseModel):
    ports: list[Port]
