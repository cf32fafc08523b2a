"""The network driver contract: what edged needs from the host's networking.

One interface, implemented by :mod:`edged.drivers.network_linux` (Linux
bridges, VXLAN and VLAN links, taps through netlink). Networks become one
bridge each; ports of ``vnic_type`` ``normal`` become a tap on that bridge
which the server's domain XML names. ``direct`` ports (SR-IOV VFs) are
allocated from :mod:`edged.drivers.sriov` and never reach this driver's
bridges.

Every method is idempotent: the reconciler may call it again after a crash at
any point, so "already done" is success, never an error.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Literal

NetworkKind = Literal["tenant", "provider"]
Segmentation = Literal["vxlan", "vlan", "flat"]
VnicType = Literal["normal", "direct"]

ALIAS_PREFIX = "skerry"


class NetworkError(Exception):
    """A network operation failed; the message names the network or port and the cause.

    ``permanent`` errors (no 802.1Q in the kernel, an unknown physnet, a name
    taken by a link this site does not own) are reported and not retried until
    the desired state changes; temporary ones are retried on the next reconcile.
    """

    def __init__(self, resource: str, message: str, *, permanent: bool = False) -> None:
        super().__init__(f"{resource}: {message}")
        self.resource = resource
        self.reason = message
        self.permanent = permanent


@dataclass(frozen=True)
class NetworkSpec:
    """One network as the desired-state document describes it."""

    id: str
    kind: NetworkKind = "tenant"
    segmentation: Segmentation = "vxlan"
    segmentation_id: int | None = None
    physnet: str | None = None
    mtu: int = 1450

    @property
    def vlan(self) -> int | None:
        """The VLAN id its frames carry on the physnet (VLAN networks), else None."""
        return self.segmentation_id if self.segmentation == "vlan" else None

    def check(self) -> str | None:
        """A problem with the values, or None."""
        if not self.id:
            return "network id is empty"
        if self.segmentation == "vxlan":
            if self.kind != "tenant":
                return "vxlan segmentation is for tenant networks only"
            if self.segmentation_id is None or not 1 <= self.segmentation_id <= 0xFFFFFF:
                return f"vxlan needs a VNI 1..16777215, got {self.segmentation_id!r}"
        elif self.segmentation == "vlan":
            if self.segmentation_id is None or not 1 <= self.segmentation_id <= 4094:
                return f"vlan needs a VLAN id 1..4094, got {self.segmentation_id!r}"
            if not self.physnet:
                return "vlan segmentation needs a physnet"
        elif self.segmentation == "flat":
            if not self.physnet:
                return "flat segmentation needs a physnet"
        else:
            return f"unknown segmentation {self.segmentation!r}"
        if not 576 <= self.mtu <= 9216:
            return f"mtu must be 576..9216, got {self.mtu}"
        return None


@dataclass(frozen=True)
class PortSpec:
    """One port (a server's NIC) as the desired-state document describes it."""

    id: str
    network_id: str
    mac: str
    vnic_type: VnicType = "normal"
    server_id: str | None = None
    # ``direct`` ports bound to a server: the host NUMA node of its VF (central's choice).
    numa_node: int | None = None
    # "10.0.0.5/24" for each fixed IP: what the guest is told at boot.
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class PortBinding:
    """What the server's domain XML needs to attach a ``normal`` port."""

    port_id: str
    bridge: str
    tap: str
    mac: str
    mtu: int


@dataclass(frozen=True)
class ObservedNetwork:
    """A network this site owns, as the kernel shows it."""

    id: str
    bridge: str
    mtu: int
    segment_links: tuple[str, ...] = ()


@dataclass(frozen=True)
class ObservedPort:
    """A port this site owns, as the kernel shows it."""

    id: str
    tap: str
    network_id: str | None
    mac: str


@dataclass(frozen=True)
class Observed:
    """Everything this site owns on the host, by id."""

    networks: dict[str, ObservedNetwork]
    ports: dict[str, ObservedPort]


@dataclass(frozen=True)
class Capabilities:
    """What the host's kernel can do; a missing feature comes with the reason."""

    vxlan: bool
    vlan: bool
    vxlan_reason: str = ""
    vlan_reason: str = ""


def short_id(resource_id: str) -> str:
    """The part of an id used in link names (IFNAMSIZ leaves 15 characters)."""
    return resource_id.replace("-", "")[:8]


def bridge_name(network_id: str) -> str:
    return f"sk-b-{short_id(network_id)}"


def vxlan_name(vni: int) -> str:
    return f"sk-v-{vni}"


def tap_name(port_id: str) -> str:
    return f"sk-t-{short_id(port_id)}"


def tap_mac(guest_mac: str) -> str:
    """The host side of a guest MAC: first octet 0xfe, as libvirt and Nova do."""
    parts = guest_mac.lower().split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"not a MAC address: {guest_mac!r}")
    int("".join(parts), 16)  # raises ValueError on non-hex
    return ":".join(["fe", *parts[1:]])


def alias(site: str, kind: str, resource_id: str) -> str:
    """The ownership tag stored in IFLA_IFALIAS of every link a site creates."""
    return f"{ALIAS_PREFIX}:{site}:{kind}:{resource_id}"


def parse_alias(value: str | None) -> tuple[str, str, str] | None:
    """``(site, kind, id)`` of an ownership tag, or None for any other alias."""
    if not value:
        return None
    parts = value.split(":", 3)
    if len(parts) != 4 or parts[0] != ALIAS_PREFIX or not all(parts[1:]):
        return None
    return parts[1], parts[2], parts[3]


class NetworkDriver(abc.ABC):
    """Creates and removes this site's networks and ``normal`` ports.

    Contract shared by every implementation:

    * Every link a driver creates carries the ownership tag
      ``skerry:<site>:<kind>:<id>`` (kind ``net`` for bridges, ``vxlan``,
      ``vlan``, ``port``). A driver never changes or deletes a link without
      its own site's tag; such links are invisible to :meth:`list_owned`.
      Links it only borrows (a flat network's uplink) are enslaved, never
      tagged, and are released, not deleted, with the network.
    * ``ensure_network`` makes the network's bridge (with the spec's MTU) and
      its segment link, and brings them up. It succeeds when they already
      exist, and removes whatever it created in this call if it fails. A name
      held by a link this site does not own is a permanent :class:`NetworkError`.
    * ``ensure_port`` (``normal`` ports only) makes the port's tap with the
      host-side MAC, enslaves it to the network's bridge and brings it up; the
      network must exist (a temporary error otherwise). It succeeds when the
      tap already exists and re-enslaves it if needed.
    * ``delete_network`` removes the bridge and every owned link on it (its
      segment link and its ports' taps); ``delete_port`` removes the tap. Both
      succeed when the target is already gone.
    * ``probe`` says which segmentations the kernel supports; a network that
      needs a missing one is a permanent error naming the missing feature.
    * Errors are :class:`NetworkError`; netlink exceptions never escape.
    """

    @abc.abstractmethod
    def probe(self) -> Capabilities:
        """What this host's kernel supports (VXLAN, 802.1Q VLAN)."""

    @abc.abstractmethod
    def list_owned(self) -> Observed:
        """Networks and ports this site owns."""

    @abc.abstractmethod
    def ensure_network(self, spec: NetworkSpec) -> None:
        """Make the network's bridge and segment link exist and be up."""

    @abc.abstractmethod
    def delete_network(self, network_id: str) -> None:
        """Remove the network's bridge and every owned link on it."""

    @abc.abstractmethod
    def ensure_port(self, spec: PortSpec) -> PortBinding:
        """Make the port's tap exist on its network's bridge; what the domain needs."""

    @abc.abstractmethod
    def delete_port(self, port_id: str) -> None:
        """Remove the port's tap."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


def parse_physnet_uplinks(text: str) -> dict[str, str]:
    """``"physnet1=eth1,physnet2=eth2"`` -> ``{"physnet1": "eth1", ...}``."""
    result: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        physnet, sep, uplink = (s.strip() for s in item.partition("="))
        if not sep or not physnet or not uplink:
            raise ValueError(f"physnet_uplinks: expected 'physnet=interface', got {item!r}")
        if physnet in result:
            raise ValueError(f"physnet_uplinks: physnet {physnet!r} given twice")
        result[physnet] = uplink
    return result
