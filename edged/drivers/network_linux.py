"""Linux networking through netlink (pyroute2): bridges, VXLAN and VLAN links, taps.

Per network one bridge ``sk-b-<net id 8>``; a tenant VXLAN network adds
``sk-v-<vni>`` (learning, UDP 4789, local address ``tunnel_local_ip``), a VLAN
network the sub-interface ``<uplink>.<vid>`` of its physnet's uplink, a flat
network the uplink itself (borrowed, never tagged or deleted). A ``normal``
port is a tap ``sk-t-<port id 8>`` on the bridge. Every created link carries
the ownership tag (see :mod:`edged.drivers.network`) in IFLA_IFALIAS.

Each operation opens its own short-lived ``IPRoute`` (in ``network_namespace``
when set) and treats "already there" / "already gone" as success.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from edged.drivers.network import (
    Capabilities,
    NetworkDriver,
    NetworkError,
    NetworkSpec,
    Observed,
    ObservedNetwork,
    ObservedPort,
    PortBinding,
    PortSpec,
    alias,
    bridge_name,
    parse_alias,
    tap_mac,
    tap_name,
    vxlan_name,
)

log = logging.getLogger(__name__)

VXLAN_PORT = 4789
IFNAMSIZ = 15


@dataclass(frozen=True)
class _Link:
    index: int
    name: str
    alias: str
    master: int | None
    kind: str
    mtu: int
    mac: str


def _link(msg: Any) -> _Link:
    return _Link(
        index=msg["index"],
        name=msg.get("ifname") or "",
        alias=msg.get("ifalias") or "",
        master=msg.get("master"),
        kind=msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or "",
        mtu=msg.get("mtu") or 0,
        mac=msg.get("address") or "",
    )


class LinuxNetwork(NetworkDriver):
    """The :class:`NetworkDriver` of a Linux host (or one network namespace of it)."""

    def __init__(
        self,
        site: str,
        *,
        namespace: str = "",
        tunnel_local_ip: str = "",
        physnet_uplinks: dict[str, str] | None = None,
    ) -> None:
        self.site = site
        self.namespace = namespace
        self.tunnel_local_ip = tunnel_local_ip
        self.physnet_uplinks = dict(physnet_uplinks or {})
        self._caps: Capabilities | None = None

    # -- plumbing -------------------------------------------------------------------

    def _ipr(self) -> IPRoute:
        # flags=0: a missing namespace is an error, never silently created.
        return IPRoute(netns=self.namespace, flags=0) if self.namespace else IPRoute()

    @contextlib.contextmanager
    def _errors(self, resource: str) -> Iterator[None]:
        """Translate netlink and OS errors into temporary NetworkErrors, once."""
        try:
            yield
        except NetworkError:
            raise
        except (NetlinkError, OSError) as exc:
            raise NetworkError(resource, f"netlink: {exc}") from exc

    def _links(self, ip: IPRoute) -> list[_Link]:
        return [_link(msg) for msg in ip.get_links()]

    def _owned(self, link: _Link) -> tuple[str, str] | None:
        """``(kind, id)`` of a link carrying this site's tag, else None."""
        parsed = parse_alias(link.alias)
        if parsed is None or parsed[0] != self.site:
            return None
        return parsed[1], parsed[2]

    def _named(self, ip: IPRoute, name: str, kind: str, resource_id: str) -> _Link | None:
        """The link called ``name`` if it carries our tag for ``(kind, id)``.

        Names follow from ids, so this asks the kernel for one link instead of
        listing (and decoding) every link in the namespace per call.
        """
        for index in ip.link_lookup(ifname=name):
            link = _link(ip.link("get", index=index)[0])
            if self._owned(link) == (kind, resource_id):
                return link
        return None

    def _find(self, links: list[_Link], kind: str, resource_id: str) -> _Link | None:
        for link in links:
            if self._owned(link) == (kind, resource_id):
                return link
        return None

    def _ensure_link(
        self,
        ip: IPRoute,
        resource: str,
        name: str,
        kind: str,
        tag: str,
        created: list[int],
        **add: Any,
    ) -> int:
        """Index of link ``name`` tagged ``tag``, creating and tagging it if missing."""
        if len(name) > IFNAMSIZ:
            raise NetworkError(resource, f"link name {name!r} is longer than 15", permanent=True)
        found = ip.link_lookup(ifname=name)
        if found:
            link = _link(ip.link("get", index=found[0])[0])
            if link.alias == tag:
                return link.index
            if not link.alias and link.kind == kind and name.startswith("sk-"):
                # Our name and kind but no tag: a create that crashed before tagging.
                log.warning("adopting untagged link %s for %s", name, resource)
                ip.link("set", index=link.index, ifalias=tag)
                return link.index
            owner = f"owner tag {link.alias!r}" if link.alias else "no owner tag"
            raise NetworkError(
                resource, f"link {name} exists and is not ours ({owner})", permanent=True
            )
        try:
            ip.link("add", ifname=name, kind=kind, **add)
        except NetlinkError as exc:
            if exc.code == errno.EOPNOTSUPP:
                raise NetworkError(
                    resource, f"kernel does not support {kind} links", permanent=True
                ) from exc
            raise
        index = ip.link_lookup(ifname=name)[0]
        created.append(index)
        # The kernel ignores IFLA_IFALIAS on RTM_NEWLINK, so tag right after.
        ip.link("set", index=index, ifalias=tag)
        return index

    def _undo(self, ip: IPRoute, resource: str, created: list[int]) -> None:
        for index in reversed(created):
            try:
                ip.link("del", index=index)
            except NetlinkError as exc:
                log.warning("cleanup of link %d for %s failed: %s", index, resource, exc)

    @staticmethod
    def _delete(ip: IPRoute, index: int) -> None:
        try:
            ip.link("del", index=index)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise

    # -- capabilities ---------------------------------------------------------------

    def probe(self) -> Capabilities:
        if self._caps is None:
            with self._errors("probe"), self._ipr() as ip:
                vxlan, vxlan_reason = self._try_probe(ip, "vxlan")
                vlan, vlan_reason = self._try_probe(ip, "vlan")
            self._caps = Capabilities(vxlan, vlan, vxlan_reason, vlan_reason)
            log.info("network capabilities: %s", self._caps)
        return self._caps

    @staticmethod
    def _try_probe(ip: IPRoute, kind: str) -> tuple[bool, str]:
        """Create and remove a throwaway link of ``kind``; (works?, reason if not)."""
        stem = f"skp{os.getpid() % 100000}"
        parent, peer, probe = f"{stem}a", f"{stem}b", f"{stem}{kind[:2]}"
        try:
            if kind == "vxlan":
                ip.link("add", ifname=probe, kind="vxlan", vxlan_id=1, vxlan_port=VXLAN_PORT)
            else:
                ip.link("add", ifname=parent, kind="veth", peer=peer)
                (index,) = ip.link_lookup(ifname=parent)
                ip.link("add", ifname=probe, kind="vlan", link=index, vlan_id=1)
            return True, ""
        except NetlinkError as exc:
            if kind == "vlan" and exc.code == errno.EOPNOTSUPP:
                return False, "kernel has no 802.1Q VLAN support (module 8021q missing)"
            return False, f"cannot create a {kind} link: {exc}"
        finally:
            for name in (probe, parent):
                for index in ip.link_lookup(ifname=name):
                    with contextlib.suppress(NetlinkError):
                        ip.link("del", index=index)

    # -- networks -------------------------------------------------------------------

    def ensure_network(self, spec: NetworkSpec) -> None:
        resource = f"network {spec.id}"
        problem = spec.check()
        if problem:
            raise NetworkError(resource, problem, permanent=True)
        if spec.segmentation == "vlan" and not self.probe().vlan:
            raise NetworkError(resource, self.probe().vlan_reason, permanent=True)
        if spec.segmentation == "vxlan" and not self.tunnel_local_ip:
            raise NetworkError(
                resource, "vxlan needs 'tunnel_local_ip' in the site config", permanent=True
            )
        created: list[int] = []
        with self._errors(resource), self._ipr() as ip:
            try:
                self._make_network(ip, resource, spec, created)
            except BaseException:
                self._undo(ip, resource, created)
                raise
        if created:
            log.info("network %s ensured (%d links created)", spec.id, len(created))

    def _make_network(
        self, ip: IPRoute, resource: str, spec: NetworkSpec, created: list[int]
    ) -> None:
        uplink: int | None = None
        if spec.segmentation in ("vlan", "flat"):
            uplink = self._uplink(ip, resource, spec.physnet or "")
        bridge = self._ensure_link(
            ip, resource, bridge_name(spec.id), "bridge", alias(self.site, "net", spec.id), created
        )
        ip.link("set", index=bridge, mtu=spec.mtu)
        segment: int | None = None
        if spec.segmentation == "vxlan":
            vni = spec.segmentation_id or 0
            segment = self._ensure_link(
                ip,
                resource,
                vxlan_name(vni),
                "vxlan",
                alias(self.site, "vxlan", spec.id),
                created,
                vxlan_id=vni,
                vxlan_local=self.tunnel_local_ip,
                vxlan_learning=1,
                vxlan_port=VXLAN_PORT,
            )
        elif spec.segmentation == "vlan":
            assert uplink is not None
            uplink_name = _link(ip.link("get", index=uplink)[0]).name
            segment = self._ensure_link(
                ip,
                resource,
                f"{uplink_name}.{spec.segmentation_id}",
                "vlan",
                alias(self.site, "vlan", spec.id),
                created,
                link=uplink,
                vlan_id=spec.segmentation_id,
            )
        else:  # flat: the uplink itself, borrowed
            assert uplink is not None
            master = _link(ip.link("get", index=uplink)[0]).master
            if master not in (None, 0, bridge):
                raise NetworkError(
                    resource, f"uplink of {spec.physnet} is in another bridge", permanent=True
                )
            ip.link("set", index=uplink, master=bridge)
        if segment is not None:
            ip.link("set", index=segment, mtu=spec.mtu, master=bridge, state="up")
        ip.link("set", index=bridge, state="up")

    def _uplink(self, ip: IPRoute, resource: str, physnet: str) -> int:
        name = self.physnet_uplinks.get(physnet)
        if name is None:
            known = ", ".join(sorted(self.physnet_uplinks)) or "none"
            raise NetworkError(
                resource,
                f"physnet {physnet!r} has no uplink in 'physnet_uplinks' (known: {known})",
                permanent=True,
            )
        found = ip.link_lookup(ifname=name)
        if not found:
            raise NetworkError(resource, f"uplink {name} of {physnet} does not exist")
        return found[0]

    def delete_network(self, network_id: str) -> None:
        resource = f"network {network_id}"
        with self._errors(resource), self._ipr() as ip:
            links = self._links(ip)
            bridge = self._find(links, "net", network_id)
            doomed = []
            for link in links:
                owned = self._owned(link)
                if owned is None:
                    continue
                kind, rid = owned
                segment = kind in ("vxlan", "vlan") and rid == network_id
                port = kind == "port" and bridge is not None and link.master == bridge.index
                if segment or port:
                    doomed.append(link)
            if bridge is not None:
                doomed.append(bridge)
            for link in doomed:
                self._delete(ip, link.index)
        if doomed:
            log.info("network %s deleted (%s)", network_id, " ".join(x.name for x in doomed))

    # -- ports ----------------------------------------------------------------------

    def ensure_port(self, spec: PortSpec) -> PortBinding:
        resource = f"port {spec.id}"
        if spec.vnic_type != "normal":
            raise NetworkError(
                resource, f"vnic_type {spec.vnic_type} is not a bridge port", permanent=True
            )
        try:
            mac = tap_mac(spec.mac)
        except ValueError as exc:
            raise NetworkError(resource, str(exc), permanent=True) from exc
        created: list[int] = []
        with self._errors(resource), self._ipr() as ip:
            bridge = self._named(ip, bridge_name(spec.network_id), "net", spec.network_id)
            if bridge is None:
                raise NetworkError(resource, f"network {spec.network_id} does not exist")
            name = tap_name(spec.id)
            try:
                tap = self._ensure_tap(ip, resource, name, spec.id, created)
                ip.link("set", index=tap, address=mac, mtu=bridge.mtu)
                ip.link("set", index=tap, master=bridge.index, state="up")
            except BaseException:
                self._undo(ip, resource, created)
                raise
        return PortBinding(spec.id, bridge.name, name, mac, bridge.mtu)

    def _ensure_tap(
        self, ip: IPRoute, resource: str, name: str, port_id: str, created: list[int]
    ) -> int:
        # pyroute2 creates with kind "tuntap"; the kernel reports the kind as "tun".
        tag = alias(self.site, "port", port_id)
        for index in ip.link_lookup(ifname=name):
            link = _link(ip.link("get", index=index)[0])
            if link.kind == "tun" and not link.alias:
                log.warning("adopting untagged tap %s for %s", name, resource)
                ip.link("set", index=link.index, ifalias=tag)
                return link.index
        return self._ensure_link(ip, resource, name, "tuntap", tag, created, mode="tap")

    def delete_port(self, port_id: str) -> None:
        with self._errors(f"port {port_id}"), self._ipr() as ip:
            tap = self._named(ip, tap_name(port_id), "port", port_id)
            if tap is not None:
                self._delete(ip, tap.index)
                log.info("port %s deleted (%s)", port_id, tap.name)

    # -- observation ----------------------------------------------------------------

    def list_owned(self) -> Observed:
        with self._errors("list"), self._ipr() as ip:
            links = self._links(ip)
        by_index = {link.index: link for link in links}
        networks: dict[str, ObservedNetwork] = {}
        ports: dict[str, ObservedPort] = {}
        segments: dict[str, list[str]] = {}
        for link in links:
            owned = self._owned(link)
            if owned is None:
                continue
            kind, rid = owned
            if kind in ("vxlan", "vlan"):
                segments.setdefault(rid, []).append(link.name)
            elif kind == "port":
                master = by_index.get(link.master or -1)
                net = self._owned(master) if master is not None else None
                network_id = net[1] if net is not None and net[0] == "net" else None
                ports[rid] = ObservedPort(rid, link.name, network_id, link.mac)
        for link in links:
            owned = self._owned(link)
            if owned is not None and owned[0] == "net":
                rid = owned[1]
                networks[rid] = ObservedNetwork(
                    rid, link.name, link.mtu, tuple(sorted(segments.get(rid, [])))
                )
        return Observed(networks, ports)
