"""Configuring the VF of a ``direct`` port: MAC, VLAN, spoof check and trust.

Two implementations, chosen by the ``sriov_vf_config`` key:

* :class:`NetlinkVfConfig` (``netlink``), the real one: ``RTM_SETLINK`` on the
  PF with ``IFLA_VFINFO_LIST`` (what ``ip link set <pf> vf <n> mac ... vlan ...``
  sends). The PF's driver applies it in the NIC's embedded switch.
* :class:`SimulatedVfConfig` (``simulated``), for machines without SR-IOV
  hardware (development, CI): a simulation, not a VF driver. The VF's netdev is
  the real veth the simulated bed (:mod:`edged.drivers.sriov_simbed`) made for
  it; its MAC is set and it is brought up through netlink, so frames from it
  carry the port's MAC. VLAN, spoof check and trust are only *recorded* in
  ``<VF device dir>/skerry-sim-vf.json`` (what the PF would list for that VF):
  nothing tags, filters or enforces them.
"""

from __future__ import annotations

import abc
import copy
import errno
import json
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from edged.drivers.sriov import VF_CONFIG_MODES, PhysicalFunction, SriovError, VirtualFunction

log = logging.getLogger(__name__)

MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
ZERO_MAC = "00:00:00:00:00:00"
SIM_RECORD = "skerry-sim-vf.json"


@dataclass(frozen=True)
class VfSettings:
    """What a VF is set to for a port: its MAC, VLAN (None: untagged), spoof check, trust."""

    mac: str
    vlan: int | None = None
    spoofchk: bool = True
    trust: bool = False

    def __post_init__(self) -> None:
        mac = self.mac.lower()
        if not MAC.match(mac):
            raise SriovError(f"VF settings: MAC must be six hex octets, got {self.mac!r}")
        if mac == ZERO_MAC or int(mac[:2], 16) & 1:
            raise SriovError(f"VF settings: MAC {self.mac} is not a unicast address")
        if self.vlan is not None and not 1 <= self.vlan <= 4094:
            raise SriovError(f"VF settings: VLAN must be 1..4094 or None, got {self.vlan}")
        object.__setattr__(self, "mac", mac)


def _rest(settings: VfSettings) -> tuple[int | None, bool, bool]:
    return settings.vlan, settings.spoofchk, settings.trust


def vf_attributes(
    index: int, mac: str, vlan: int | None, spoofchk: bool, trust: bool
) -> list[tuple[str, dict[str, Any]]]:
    """``(name, vf spec)`` per attribute, in the order they are set (MAC first).

    Each spec is what pyroute2's ``link("set", vf=...)`` takes: ``vf`` is the
    VF index, VLAN 0 removes the tag.
    """
    return [
        ("mac", {"vf": index, "mac": mac}),
        ("vlan", {"vf": index, "vlan": {"vlan": vlan or 0, "qos": 0}}),
        ("spoofchk", {"vf": index, "spoofchk": int(spoofchk)}),
        ("trust", {"vf": index, "trust": int(trust)}),
    ]


def _where(pf: PhysicalFunction, vf: VirtualFunction) -> str:
    return f"PF {pf.name} VF {vf.index}"


def _open(namespace: str) -> IPRoute:
    """A short-lived handle in ``namespace`` ('' = this one); never creates the namespace."""
    return IPRoute(netns=namespace, flags=0) if namespace else IPRoute()


def _lookup(ip: IPRoute, name: str, what: str, namespace: str) -> int:
    found = ip.link_lookup(ifname=name)
    if not found:
        raise SriovError(f"{what}: no link {name} in namespace {namespace or '(host)'}")
    return found[0]


class VfConfigurator(abc.ABC):
    """Sets up and clears the VF a ``direct`` port is bound to.

    Contract shared by every implementation:

    * ``configure`` sets the VF to ``settings``; configuring it again with the
      same settings succeeds and changes nothing.
    * ``reset`` clears what ``configure`` set (a zero or random MAC, no VLAN,
      spoof check on, trust off); resetting a reset VF succeeds.
    * Errors are :class:`SriovError` naming the PF, the VF index and the cause;
      netlink and OS exceptions never escape.
    """

    @abc.abstractmethod
    def configure(self, pf: PhysicalFunction, vf: VirtualFunction, settings: VfSettings) -> None:
        """Give the VF the port's MAC, VLAN, spoof check and trust."""

    @abc.abstractmethod
    def reset(self, pf: PhysicalFunction, vf: VirtualFunction) -> None:
        """Return the VF to its unconfigured state."""


class NetlinkVfConfig(VfConfigurator):
    """The real VF configuration: netlink requests on the PF in ``namespace``.

    ``reset`` sets the all-zero MAC, as ``ip link set <pf> vf <n> mac 00:...``
    does. A PF whose driver has no VF operations answers ``EOPNOTSUPP``.
    """

    def __init__(self, namespace: str = "") -> None:
        self.namespace = namespace

    def configure(self, pf: PhysicalFunction, vf: VirtualFunction, settings: VfSettings) -> None:
        self._apply(pf, vf, vf_attributes(vf.index, settings.mac, *_rest(settings)))

    def reset(self, pf: PhysicalFunction, vf: VirtualFunction) -> None:
        self._apply(pf, vf, vf_attributes(vf.index, ZERO_MAC, None, True, False))

    def _apply(
        self, pf: PhysicalFunction, vf: VirtualFunction, attributes: list[tuple[str, dict]]
    ) -> None:
        where = _where(pf, vf)
        try:
            with _open(self.namespace) as ip:
                index = _lookup(ip, pf.name, where, self.namespace)
                for attr, spec in attributes:
                    self._set(ip, index, pf, vf, attr, spec)
        except NetlinkError as exc:
            raise SriovError(f"{where}: looking up the PF: {os.strerror(exc.code)}") from None
        except OSError as exc:
            raise SriovError(f"{where}: namespace {self.namespace!r}: {exc.strerror}") from None

    @staticmethod
    def _set(
        ip: IPRoute, index: int, pf: PhysicalFunction, vf: VirtualFunction, attr: str, spec: dict
    ) -> None:
        try:
            ip.link("set", index=index, vf=copy.deepcopy(spec))  # pyroute2 edits the spec
        except NetlinkError as exc:
            cause = f"VF {vf.index}, setting {attr}: {os.strerror(exc.code)}"
            if exc.code != errno.EOPNOTSUPP:
                raise SriovError(f"PF {pf.name} {cause}") from None
            if attr == "mac":
                raise SriovError(
                    f"PF {pf.name} does not support VF configuration ({cause})"
                ) from None
            if attr == "trust" and not spec["trust"]:
                # Older PF drivers have no trust operation; their VFs are never trusted.
                log.info("PF %s VF %d: no trust operation, VF stays untrusted", pf.name, vf.index)
                return
            raise SriovError(f"PF {pf.name} {cause}") from None


def random_mac() -> str:
    """A random locally administered unicast MAC."""
    octets = bytearray(secrets.token_bytes(6))
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in octets)


def sim_record(
    vf: VirtualFunction, mac: str, vlan: int | None, spoofchk: bool, trust: bool
) -> dict:
    """The simulated PF's view of one VF, as written to ``skerry-sim-vf.json``."""
    return {
        "pf": vf.pf,
        "vf": vf.index,
        "pci": vf.pci,
        "netdev": vf.netdev,
        "mac": mac,
        "vlan": vlan,
        "spoofchk": spoofchk,
        "trust": trust,
    }


class SimulatedVfConfig(VfConfigurator):
    """Simulated VF configuration for the simulated bed (no SR-IOV hardware).

    The MAC goes on the VF's backing veth (found through
    ``class/net/<pf>/device/virtfn<n>/net/<netdev>`` under ``sysfs_root``) in
    ``namespace``, which is brought up. VLAN, spoof check and trust are only
    recorded in ``<VF device dir>/skerry-sim-vf.json``; nothing enforces them.
    ``reset`` records the zero MAC and gives the veth a random one (a veth
    refuses the zero MAC). A VF netdev that has left ``namespace`` (passed to
    a guest) cannot be configured: that is an error here, unlike on hardware.
    """

    def __init__(self, sysfs_root: Path, namespace: str = "") -> None:
        self.sysfs_root = sysfs_root
        self.namespace = namespace

    def configure(self, pf: PhysicalFunction, vf: VirtualFunction, settings: VfSettings) -> None:
        self._set_netdev(pf, vf, settings.mac)
        self._record(pf, vf, sim_record(vf, settings.mac, *_rest(settings)))

    def reset(self, pf: PhysicalFunction, vf: VirtualFunction) -> None:
        record = self.read_record(pf, vf)
        if record is not None and record["mac"] != ZERO_MAC:
            self._set_netdev(pf, vf, random_mac(), missing_ok=True)
        self._record(pf, vf, sim_record(vf, ZERO_MAC, None, True, False))

    def device_dir(self, pf: PhysicalFunction, vf: VirtualFunction) -> Path:
        """The VF's PCI device directory in the simulated tree."""
        link = self.sysfs_root / "class" / "net" / pf.name / "device" / f"virtfn{vf.index}"
        if not link.exists():
            raise SriovError(f"{_where(pf, vf)}: {link} does not exist")
        return link.resolve()

    def read_record(self, pf: PhysicalFunction, vf: VirtualFunction) -> dict[str, Any] | None:
        """The recorded configuration, or None when the VF was never configured."""
        path = self.device_dir(pf, vf) / SIM_RECORD
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise SriovError(f"{_where(pf, vf)}: {path}: unreadable: {exc}") from None

    def _set_netdev(
        self, pf: PhysicalFunction, vf: VirtualFunction, mac: str, *, missing_ok: bool = False
    ) -> None:
        where = _where(pf, vf)
        if not vf.netdev:
            raise SriovError(f"{where}: the VF has no netdev in the sysfs tree")
        try:
            with _open(self.namespace) as ip:
                found = ip.link_lookup(ifname=vf.netdev)
                if not found and missing_ok:
                    # Passed through to a guest, or gone with it: only the record is reset.
                    log.info("%s: netdev %s not in namespace, record reset only", where, vf.netdev)
                    return
                index = _lookup(ip, vf.netdev, f"{where} (netdev)", self.namespace)
                ip.link("set", index=index, address=mac, state="up")
        except NetlinkError as exc:
            raise SriovError(
                f"{where}: setting MAC of {vf.netdev}: {os.strerror(exc.code)}"
            ) from None
        except OSError as exc:
            raise SriovError(f"{where}: namespace {self.namespace!r}: {exc.strerror}") from None

    def _record(self, pf: PhysicalFunction, vf: VirtualFunction, record: dict) -> None:
        path = self.device_dir(pf, vf) / SIM_RECORD
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(record, sort_keys=True) + "\n")
            tmp.replace(path)
        except OSError as exc:
            raise SriovError(f"{_where(pf, vf)}: cannot write {path}: {exc.strerror}") from None


def make_vf_configurator(mode: str, *, sysfs_root: Path, namespace: str) -> VfConfigurator:
    """The configurator of ``sriov_vf_config``: ``netlink`` or ``simulated``."""
    if mode == "netlink":
        return NetlinkVfConfig(namespace)
    if mode == "simulated":
        return SimulatedVfConfig(sysfs_root, namespace)
    raise SriovError(f"sriov_vf_config: expected {' or '.join(VF_CONFIG_MODES)}, got {mode!r}")
