"""Pure reconcile logic for a site's networks and ports. No side effects here.

Like :mod:`edged.reconcile` for servers, the plan is computed against what the
kernel shows now (owned links, see :mod:`edged.drivers.network`) and what the
site's VF claims hold, so running it again after a crash converges: exactly the
desired bridges, segment links and taps, and one configured VF per bound
``direct`` port.

A ``normal`` port has its tap as long as the port is in the document (a server
attached to it opens the tap); a ``direct`` port gets a VF only while it is
bound to a server of the document (a VF is a scarce device, and its NUMA node
follows the server).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from edged.drivers.network import NetworkSpec, Observed, PortSpec, tap_mac

log = logging.getLogger(__name__)

NetActionKind = Literal[
    "delete_port", "release_vf", "delete_network", "ensure_network", "ensure_port", "bind_vf"
]
# Removals first (ports before their networks), then creations (networks before ports).
ORDER: dict[str, int] = {
    "delete_port": 0,
    "release_vf": 0,
    "delete_network": 1,
    "ensure_network": 2,
    "ensure_port": 3,
    "bind_vf": 3,
}


@dataclass(frozen=True)
class NetAction:
    kind: NetActionKind
    id: str
    network: NetworkSpec | None = None
    port: PortSpec | None = None

    @property
    def key(self) -> str:
        """The resource the action is about: ``network:<id>`` or ``port:<id>``."""
        return f"{'network' if 'network' in self.kind else 'port'}:{self.id}"


@dataclass(frozen=True)
class VfClaim:
    """A VF held by a ``direct`` port; ``configured`` once its MAC/VLAN are set."""

    port_id: str
    pci: str
    configured: bool


@dataclass(frozen=True)
class NetDesired:
    """The networks and ports a document asks for, by id."""

    networks: dict[str, NetworkSpec]
    ports: dict[str, PortSpec]
    # Entries of the document that could not be read (what was wrong with each).
    problems: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.networks and not self.ports


def fingerprint(spec: NetworkSpec | PortSpec) -> str:
    """Identifies one version of a spec: a permanent failure holds for that version only."""
    return hashlib.sha256(repr(spec).encode()).hexdigest()[:16]


def _addresses(port: Mapping[str, Any], network: Mapping[str, Any] | None) -> tuple[str, ...]:
    """``ip/prefix`` of each fixed IP whose subnet is on the port's network."""
    if network is None:
        return ()
    prefixes = {}
    for subnet in network.get("subnets") or []:
        try:
            prefixes[subnet["id"]] = ipaddress.ip_network(subnet["cidr"]).prefixlen
        except (KeyError, TypeError, ValueError):
            continue
    return tuple(
        f"{ip['ip_address']}/{prefixes[ip['subnet_id']]}"
        for ip in port.get("fixed_ips") or []
        if ip.get("subnet_id") in prefixes and ip.get("ip_address")
    )


def _network(n: Mapping[str, Any]) -> NetworkSpec:
    return NetworkSpec(
        id=str(n["id"]),
        kind=n.get("kind", "tenant"),
        segmentation=n.get("segmentation", "vxlan"),
        segmentation_id=n.get("segmentation_id"),
        physnet=n.get("physnet") or None,
        mtu=int(n.get("mtu") or 1500),
    )


def _port(p: Mapping[str, Any], network: Mapping[str, Any] | None) -> PortSpec:
    numa = p.get("numa_node")
    return PortSpec(
        id=str(p["id"]),
        network_id=str(p["network_id"]),
        mac=str(p["mac"]),
        vnic_type=p.get("vnic_type", "normal"),
        server_id=p.get("server_id"),
        numa_node=None if numa is None else int(numa),
        addresses=_addresses(p, network),
    )


def desired_from_document(document: Mapping[str, Any] | None) -> NetDesired:
    """The networks and ports of a desired-state document.

    An entry that cannot be read is left out and named in ``problems``; the
    plan then removes nothing (the entry might be one of the links it would
    remove), while everything readable is still made.
    """
    doc = document or {}
    raw_networks: dict[str, Mapping[str, Any]] = {}
    networks: dict[str, NetworkSpec] = {}
    problems: list[str] = []
    for n in doc.get("networks") or []:
        try:
            spec = _network(n)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            problems.append(f"network entry {str(n)[:200]!r}: {exc!r}")
            continue
        networks[spec.id], raw_networks[spec.id] = spec, n
    ports: dict[str, PortSpec] = {}
    for p in doc.get("ports") or []:
        try:
            port = _port(p, raw_networks.get(str(p.get("network_id"))))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            problems.append(f"port entry {str(p)[:200]!r}: {exc!r}")
            continue
        ports[port.id] = port
    for problem in problems:
        log.error("unreadable in the desired document, nothing is removed: %s", problem)
    return NetDesired(networks, ports, tuple(problems))


def _network_ok(spec: NetworkSpec, observed: Observed) -> bool:
    have = observed.networks.get(spec.id)
    if have is None or have.mtu != spec.mtu:
        return False
    return spec.segmentation == "flat" or bool(have.segment_links)


def _tap_ok(spec: PortSpec, observed: Observed) -> bool:
    have = observed.ports.get(spec.id)
    if have is None or have.network_id != spec.network_id:
        return False
    try:
        return have.mac.lower() == tap_mac(spec.mac)
    except ValueError:
        return False


def plan_network(
    desired: NetDesired,
    observed: Observed,
    claims: Mapping[str, VfClaim],
    servers: Collection[str],
    failed: Mapping[str, str] | None = None,
) -> list[NetAction]:
    """Actions that take the kernel's links and the VF claims to ``desired``.

    ``servers`` are the ids of the document's servers (a ``direct`` port needs
    one to be bound); ``failed`` maps a resource key (``network:<id>``,
    ``port:<id>``) to the fingerprint of the spec whose action failed
    permanently, which is not retried until the spec changes.
    """
    failed = failed or {}
    actions: list[NetAction] = []
    taps = {pid: p for pid, p in desired.ports.items() if p.vnic_type == "normal"}
    bound = {
        pid: p
        for pid, p in desired.ports.items()
        if p.vnic_type == "direct" and p.server_id is not None and p.server_id in servers
    }
    for port_id, have in sorted(observed.ports.items()):
        spec = taps.get(port_id)
        if spec is None or (have.network_id is not None and have.network_id != spec.network_id):
            actions.append(NetAction("delete_port", port_id))
    for port_id in sorted(set(claims) - set(bound)):
        actions.append(NetAction("release_vf", port_id))
    for network_id in sorted(set(observed.networks) - set(desired.networks)):
        actions.append(NetAction("delete_network", network_id))
    for network_id, spec in sorted(desired.networks.items()):
        if not _network_ok(spec, observed) and failed.get(f"network:{network_id}") != fingerprint(
            spec
        ):
            actions.append(NetAction("ensure_network", network_id, network=spec))
    for port_id, spec in sorted(taps.items()):
        if spec.network_id not in desired.networks:
            continue  # a document never does this; nothing to plug into
        if not _tap_ok(spec, observed) and failed.get(f"port:{port_id}") != fingerprint(spec):
            actions.append(NetAction("ensure_port", port_id, port=spec))
    for port_id, spec in sorted(bound.items()):
        claim = claims.get(port_id)
        if (claim is None or not claim.configured) and failed.get(f"port:{port_id}") != fingerprint(
            spec
        ):
            actions.append(NetAction("bind_vf", port_id, port=spec))
    if desired.problems:  # never remove on the word of a document we could not read
        actions = [a for a in actions if a.kind in ("ensure_network", "ensure_port", "bind_vf")]
    actions.sort(key=lambda a: ORDER[a.kind])
    return actions
