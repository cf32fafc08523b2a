"""IP address and MAC management at central: subnet plans, lowest-free allocation, MACs.

Pure functions over values the caller reads from the store; every refusal is an
:class:`IpamError` naming the request field it is about, so the API layer can
report it (400 for a bad value, 409 for a conflict with what exists).
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from central.refusal import Refusal

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
MAC_PREFIX = "fa:16:3e"  # locally administered, unicast (as OpenStack's)


class IpamError(Refusal):
    """A refused address, pool, subnet or MAC; ``status`` 400 (invalid) or 409 (conflict)."""


@dataclass(frozen=True)
class SubnetPlan:
    cidr: str
    gateway: str
    pools: list[dict[str, str]]  # [{"start", "end"}], sorted
    ip_version: int


def _host_range(net: IPNetwork) -> tuple[int, int]:
    """First and last usable host address of ``net``, as integers."""
    first = int(net.network_address) + 1
    last = int(net.broadcast_address) - (1 if net.version == 4 else 0)
    return first, last


def _address(value: str, field: str) -> IPAddress:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise IpamError(field, f"{value!r} is not an IP address") from None


def plan_subnet(
    cidr: str,
    gateway: str | None,
    pools: list[dict[str, str]] | None,
    existing: Iterable[str] = (),
) -> SubnetPlan:
    """Check a subnet request against the network's ``existing`` CIDRs; fill in defaults."""
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise IpamError("cidr", f"{cidr!r} is not a network address with prefix: {exc}") from None
    first, last = _host_range(net)
    if last - first < 1:
        raise IpamError("cidr", f"{net} is too small: it needs a gateway and one more address")
    for other in existing:
        if net.overlaps(ipaddress.ip_network(other)):
            raise IpamError("cidr", f"{net} overlaps subnet {other} of this network", 409)

    gw = _address(gateway, "gateway") if gateway is not None else ipaddress.ip_address(first)
    if gw.version != net.version or not first <= int(gw) <= last:
        raise IpamError("gateway", f"gateway {gw} is not a host address inside {net}")

    ranges: list[tuple[int, int]] = []
    if pools is None:
        for start, end in ((first, int(gw) - 1), (int(gw) + 1, last)):
            if start <= end:
                ranges.append((start, end))
    else:
        for pool in pools:
            start = _address(pool["start"], "allocation_pools")
            end = _address(pool["end"], "allocation_pools")
            if start.version != net.version or end.version != net.version:
                raise IpamError("allocation_pools", f"pool {start}-{end} is not inside {net}")
            if not first <= int(start) <= int(end) <= last:
                raise IpamError(
                    "allocation_pools", f"pool {start}-{end} is not a host range inside {net}"
                )
            if int(start) <= int(gw) <= int(end):
                raise IpamError("allocation_pools", f"pool {start}-{end} holds the gateway {gw}")
            ranges.append((int(start), int(end)))
        ranges.sort()
        for (_s1, e1), (s2, e2) in itertools.pairwise(ranges):
            if s2 <= e1:
                a, b = ipaddress.ip_address(s2), ipaddress.ip_address(e2)
                raise IpamError("allocation_pools", f"pool {a}-{b} overlaps another pool")
    return SubnetPlan(
        cidr=str(net),
        gateway=str(gw),
        pools=[
            {"start": str(ipaddress.ip_address(s)), "end": str(ipaddress.ip_address(e))}
            for s, e in ranges
        ],
        ip_version=net.version,
    )


def lowest_free(pools: list[dict[str, Any]], taken: Iterable[str]) -> str | None:
    """The lowest address in ``pools`` not in ``taken``; None when they are exhausted."""
    used = {int(ipaddress.ip_address(a)) for a in taken}
    for pool in sorted(pools, key=lambda p: int(ipaddress.ip_address(p["start"]))):
        candidate = int(ipaddress.ip_address(pool["start"]))
        end = int(ipaddress.ip_address(pool["end"]))
        while candidate <= end and candidate in used:
            candidate += 1
        if candidate <= end:
            return str(ipaddress.ip_address(candidate))
    return None


def fixed_address(value: str, cidr: str, gateway: str) -> str:
    """A requested fixed IP, canonical; it must be a host of ``cidr`` and not its gateway."""
    addr = _address(value, "fixed_ips")
    net = ipaddress.ip_network(cidr)
    first, last = _host_range(net)
    if addr.version != net.version or not first <= int(addr) <= last:
        raise IpamError("fixed_ips", f"{addr} is not a host address of subnet {net}")
    if str(addr) == gateway:
        raise IpamError("fixed_ips", f"{addr} is the gateway of subnet {net}", 409)
    return str(addr)


def in_subnet(value: str, cidr: str) -> bool:
    addr = _address(value, "fixed_ips")
    net = ipaddress.ip_network(cidr)
    return addr.version == net.version and addr in net


def normal_mac(value: str) -> str:
    """A given MAC, lower case; it must be a unicast address other than all zeros."""
    mac = value.strip().lower()
    if not MAC.match(mac):
        raise IpamError("mac_address", f"{value!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    if int(mac[:2], 16) & 1:
        raise IpamError("mac_address", f"{mac} is a multicast address")
    if mac == "00:00:00:00:00:00":
        raise IpamError("mac_address", "00:00:00:00:00:00 is not a usable address")
    return mac


def random_mac() -> str:
    """A locally administered unicast MAC with OpenStack's prefix."""
    return MAC_PREFIX + "".join(f":{b:02x}" for b in secrets.token_bytes(3))
