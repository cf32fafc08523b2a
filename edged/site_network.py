"""The side-effect half of reconciling a site's networks: runs :func:`plan_network` actions.

:class:`SiteNetwork` ties the network driver (bridges, segment links, taps),
the SR-IOV inventory and VF configurator (``direct`` ports) and the VF claims
in :class:`~edged.state.LocalState` together. It also answers what a server's
domain needs for each port (:meth:`SiteNetwork.nic_for`) and what the site
reports: per-network and per-port state, SR-IOV counts, capabilities.

The network driver (pyroute2, ~13 MB) is loaded on first need: when the site
config names networking keys or a document holds networks or ports. A site
that runs servers only never pays for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edged.drivers.compute import Nic
from edged.drivers.network import (
    NetworkDriver,
    NetworkError,
    Observed,
    PortSpec,
    bridge_name,
    tap_name,
)
from edged.drivers.sriov import (
    PhysicalFunction,
    SriovError,
    SriovInventory,
    VirtualFunction,
    allocate_vf,
)
from edged.reconcile_net import NetAction, NetDesired, VfClaim, fingerprint, plan_network
from edged.state import LocalState

if TYPE_CHECKING:  # the VF configurators load pyroute2: only sites with SR-IOV do
    from edged.drivers.sriov_vf import VfConfigurator

log = logging.getLogger(__name__)

EMPTY = Observed({}, {})
PENDING, CONFIGURED = "pending", "configured"


@dataclass
class SiteNetwork:
    """Networks, ports and VFs of one site."""

    state: LocalState
    make_driver: Callable[[], NetworkDriver]
    sriov: SriovInventory | None = None
    vf_config: VfConfigurator | None = None
    # physnet -> uplink (site config), reported to central as physnets.
    uplinks: dict[str, str] = field(default_factory=dict)
    # Load the driver at once (the site config names networking keys).
    eager: bool = False
    # resource key -> (spec fingerprint, reason) of a permanent failure.
    failed: dict[str, tuple[str, str]] = field(default_factory=dict)
    # resource key -> reason of the last temporary failure (retried next pass).
    transient: dict[str, str] = field(default_factory=dict)
    observed: Observed = EMPTY
    # VF claims by port id as of the end of the last pass (only a pass changes them).
    vf_claims: dict[str, VfClaim] = field(default_factory=dict)
    _driver: NetworkDriver | None = None

    # -- plumbing -------------------------------------------------------------------

    def driver(self) -> NetworkDriver:
        if self._driver is None:
            self._driver = self.make_driver()
        return self._driver

    def active(self, desired: NetDesired) -> bool:
        """Whether this pass needs the network driver at all."""
        return self._driver is not None or self.eager or not desired.empty

    def _read_claims(self) -> dict[str, VfClaim]:
        """VF claims by port id, from the site's state."""
        return {
            owner: VfClaim(owner, pci, detail == CONFIGURED)
            for pci, (owner, detail) in self.state.claims("vf").items()
        }

    # -- a pass ---------------------------------------------------------------------

    def reconcile(
        self, desired: NetDesired, servers: Collection[str], counters: Any
    ) -> list[NetAction]:
        """Observe, plan and apply; failures are recorded per resource, never raised."""
        self.transient = {}
        fingerprints = {f"network:{k}": fingerprint(v) for k, v in desired.networks.items()}
        fingerprints |= {f"port:{k}": fingerprint(v) for k, v in desired.ports.items()}
        self.failed = {k: v for k, v in self.failed.items() if fingerprints.get(k) == v[0]}
        self.vf_claims = self._read_claims()
        if not self.active(desired):
            self.observed = EMPTY
            return []
        try:
            self.observed = self.driver().list_owned()
        except NetworkError as exc:
            log.warning("network observation failed: %s", exc)
            counters["network_errors"] += 1
            self.transient = {k: exc.reason for k in fingerprints}
            return []
        failed = {k: v[0] for k, v in self.failed.items()}
        actions = plan_network(desired, self.observed, self.vf_claims, servers, failed)
        for action in actions:
            self._apply(action, desired, counters)
        if actions:
            self.vf_claims = self._read_claims()
            try:
                self.observed = self.driver().list_owned()
            except NetworkError as exc:
                log.warning("network observation failed: %s", exc)
        return actions

    def _apply(self, action: NetAction, desired: NetDesired, counters: Any) -> None:
        try:
            if action.kind == "delete_port":
                self.driver().delete_port(action.id)
            elif action.kind == "delete_network":
                self.driver().delete_network(action.id)
            elif action.kind == "ensure_network":
                assert action.network is not None
                self.driver().ensure_network(action.network)
            elif action.kind == "ensure_port":
                assert action.port is not None
                self.driver().ensure_port(action.port)
            elif action.kind == "bind_vf":
                assert action.port is not None
                self._bind_vf(action.port, desired)
            elif action.kind == "release_vf":
                self._release_vf(action.id)
            counters[f"action_{action.kind}"] += 1
        except (NetworkError, SriovError) as exc:
            counters["action_errors"] += 1
            reason = exc.reason if isinstance(exc, NetworkError) else str(exc)
            permanent = isinstance(exc, NetworkError) and exc.permanent
            log.warning("%s %s failed: %s", action.kind, action.id, reason)
            spec = action.network or action.port
            if permanent and spec is not None:
                self.failed[action.key] = (fingerprint(spec), reason)
            else:
                self.transient[action.key] = reason

    # -- VFs ------------------------------------------------------------------------

    @staticmethod
    def _find(
        pfs: dict[str, tuple[PhysicalFunction, ...]], pci: str
    ) -> tuple[PhysicalFunction, VirtualFunction] | None:
        for pf in (pf for functions in pfs.values() for pf in functions):
            for vf in pf.vfs:
                if vf.pci == pci:
                    return pf, vf
        return None

    def _bind_vf(self, port: PortSpec, desired: NetDesired) -> None:
        resource = f"port {port.id}"
        if self.sriov is None or self.vf_config is None:
            raise NetworkError(resource, "this site has no SR-IOV physnets", permanent=True)
        network = desired.networks.get(port.network_id)
        if network is None or not network.physnet:
            raise NetworkError(resource, "a direct port needs a network with a physnet", True)
        pfs = self.sriov.scan()
        held = self.vf_claims.get(port.id)
        if held is not None:
            found = self._find(pfs, held.pci)
            if found is None:
                raise SriovError(f"port {port.id}: its VF {held.pci} is gone from the inventory")
        else:
            taken = [claim.pci for claim in self.vf_claims.values()]
            strict = port.numa_node is not None
            vf = allocate_vf(pfs, network.physnet, port.numa_node, taken, strict=strict)
            found = self._find(pfs, vf.pci)
            assert found is not None
            # Claimed before it is configured: a crash in between leaves a claim to finish.
            self.state.claim("vf", {vf.pci: PENDING}, port.id)
            self.vf_claims[port.id] = VfClaim(port.id, vf.pci, False)
        pf, vf = found
        from edged.drivers.sriov_vf import VfSettings

        self.vf_config.configure(pf, vf, VfSettings(mac=port.mac, vlan=network.vlan))
        self.state.claim("vf", {vf.pci: CONFIGURED}, port.id)
        log.info(
            "port %s bound to VF %s (%s vf %d, NUMA node %d)",
            port.id,
            vf.pci,
            pf.name,
            vf.index,
            vf.numa_node,
        )

    def _release_vf(self, port_id: str) -> None:
        held = self.vf_claims.get(port_id)
        if held is not None and self.sriov is not None and self.vf_config is not None:
            found = self._find(self.sriov.scan(), held.pci)
            if found is not None:
                self.vf_config.reset(*found)
        self.state.release("vf", [port_id])
        log.info("port %s released its VF %s", port_id, held.pci if held else "(none)")

    # -- what servers and central need ----------------------------------------------

    def nic_for(self, port: PortSpec, desired: NetDesired) -> Nic | None:
        """The NIC a domain needs for ``port``, or None while it is not in place."""
        network = desired.networks.get(port.network_id)
        if network is None:
            return None
        if port.vnic_type == "normal":
            have = self.observed.ports.get(port.id)
            if have is None or have.network_id != port.network_id:
                return None
            return Nic(
                port.id, port.mac, "tap", tap=have.tap, mtu=network.mtu, addresses=port.addresses
            )
        claim = self.vf_claims.get(port.id)
        if claim is None or not claim.configured:
            return None
        return Nic(
            port.id,
            port.mac,
            "hostdev",
            pci=claim.pci,
            vlan=network.vlan,
            mtu=network.mtu,
            addresses=port.addresses,
        )

    def report(self, desired: NetDesired, running: Collection[str]) -> dict[str, Any]:
        """Per-network and per-port state for central (``running``: ids of running servers)."""
        networks: dict[str, Any] = {}
        for nid, spec in desired.networks.items():
            key = f"network:{nid}"
            if key in self.failed:
                networks[nid] = {"state": "error", "reason": self.failed[key][1]}
            elif nid in self.observed.networks and key not in self.transient:
                networks[nid] = {"state": "active", "reason": ""}
            elif key in self.transient:
                networks[nid] = {"state": "building", "reason": self.transient[key]}
            else:
                networks[nid] = {"state": "building", "reason": ""}
            networks[nid]["bridge"] = bridge_name(spec.id)
        ports: dict[str, Any] = {}
        claims = self.vf_claims
        vfs = self._vf_index(claims)
        for pid, port in desired.ports.items():
            key = f"port:{pid}"
            binding = self._binding(port, claims, vfs)
            up = port.server_id is not None and port.server_id in running
            if key in self.failed:
                entry = {"state": "error", "reason": self.failed[key][1]}
            elif binding is None:
                entry = {
                    "state": "building" if key in self.transient else "down",
                    "reason": self.transient.get(key, ""),
                }
            else:
                entry = {"state": "active" if up else "down", "reason": ""}
            entry["binding"] = binding or {}
            ports[pid] = entry
        return {"networks": networks, "ports": ports}

    def _vf_index(self, claims: dict[str, VfClaim]) -> dict[str, tuple[str, VirtualFunction]]:
        if not claims or self.sriov is None:
            return {}
        try:
            scan = self.sriov.scan()
        except SriovError:
            return {}
        return {vf.pci: (pf.name, vf) for pfs in scan.values() for pf in pfs for vf in pf.vfs}

    def _binding(
        self,
        port: PortSpec,
        claims: dict[str, VfClaim],
        vfs: dict[str, tuple[str, VirtualFunction]],
    ) -> dict[str, Any] | None:
        if port.vnic_type == "normal":
            have = self.observed.ports.get(port.id)
            if have is None:
                return None
            return {"kind": "tap", "tap": tap_name(port.id), "bridge": bridge_name(port.network_id)}
        claim = claims.get(port.id)
        if claim is None or not claim.configured:
            return None
        pf, vf = vfs.get(claim.pci, ("", None))
        return {
            "kind": "vf",
            "pci": claim.pci,
            "pf": pf,
            "vf": vf.index if vf else None,
            "numa_node": vf.numa_node if vf else None,
        }

    def inventory(self) -> dict[str, Any]:
        """SR-IOV counts, physnets and kernel capabilities for central."""
        section: dict[str, Any] = {}
        physnets: set[str] = set()
        if self.sriov is not None:
            try:
                counts = self.sriov.inventory(self.state.claims("vf"))
            except SriovError as exc:
                log.warning("SR-IOV inventory unreadable: %s", exc)
                counts = {}
            section["sriov"] = {
                physnet: {
                    str(node): {"total": c.total, "free": c.free} for node, c in nodes.items()
                }
                for physnet, nodes in counts.items()
            }
            physnets |= set(self.sriov.physnets)
        physnets |= set(self.uplinks)
        if self._driver is not None:
            try:
                caps = self._driver.probe()
                section["network"] = {
                    "vxlan": caps.vxlan,
                    "vlan": caps.vlan,
                    "vxlan_reason": caps.vxlan_reason,
                    "vlan_reason": caps.vlan_reason,
                }
            except NetworkError as exc:
                log.warning("network probe failed: %s", exc)
        section["physnets"] = sorted(physnets)
        return section

    def close(self) -> None:
        if self._driver is not None:
            self._driver.close()


def from_config(config: Any, state: LocalState) -> SiteNetwork:
    """The site's networking as its config (an ``EdgeConfig``) describes it."""
    from edged.drivers.network import parse_physnet_uplinks
    from edged.drivers.sriov import parse_physnets

    uplinks = parse_physnet_uplinks(config.physnet_uplinks)
    physnets = parse_physnets(config.sriov_physnets)

    def make_driver() -> NetworkDriver:
        from edged.drivers.network_linux import LinuxNetwork  # pyroute2: on first need

        return LinuxNetwork(
            config.site,
            namespace=config.network_namespace,
            tunnel_local_ip=config.tunnel_local_ip,
            physnet_uplinks=uplinks,
        )

    sriov = SriovInventory(config.sysfs_root, physnets) if physnets else None
    vf_config = None
    if physnets:
        from edged.drivers.sriov_vf import make_vf_configurator

        vf_config = make_vf_configurator(
            config.sriov_vf_config,
            sysfs_root=config.sysfs_root,
            namespace=config.network_namespace,
        )
    eager = bool(uplinks or physnets or config.tunnel_local_ip)
    return SiteNetwork(state, make_driver, sriov, vf_config, uplinks=uplinks, eager=eager)
