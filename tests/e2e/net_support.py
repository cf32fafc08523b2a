"""Helpers for the networking end-to-end tests: links, namespaces, a scapy endpoint on a tap.

A port's tap is opened by QEMU for a guest; :class:`TapEndpoint` opens it the
same way (``TUNSETIFF`` on ``/dev/net/tun``) from this process, so a test can
send and receive the port's frames with scapy where a guest would.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from central.localcluster import LocalCluster, wait_for


def links(netns: str = "") -> set[str]:
    """``name kind alias`` of every link (in ``netns``), as ``ip -d link`` shows them."""
    cmd = ["ip", "-d", "-o", "link", "show"]
    if netns:
        cmd = ["ip", "-n", netns, *cmd[1:]]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result = set()
    for line in out.splitlines():
        name = line.split(":", 2)[1].strip().split("@")[0]
        fields = line.split()
        kind = ""
        for candidate in ("bridge", "vxlan", "vlan", "tun", "veth", "dummy"):
            if f" {candidate} " in f" {' '.join(fields)} ":
                kind = candidate
                break
        alias = line.split(" alias ", 1)[1].split()[0] if " alias " in line else ""
        result.add(f"{name} {kind} {alias}".strip())
    return result


@contextmanager
def netns() -> Iterator[str]:
    """A throwaway network namespace."""
    name = f"sk-e2e-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def network(cluster: LocalCluster, site: str, name: str, cidr: str, **fields: Any) -> dict:
    net = cluster.client.post("/v1/networks", {"name": name, "site": site, **fields})
    cluster.client.post(f"/v1/networks/{net['id']}/subnets", {"cidr": cidr})
    return net


def port(cluster: LocalCluster, network_id: str, ip: str | None = None, **fields: Any) -> dict:
    body: dict[str, Any] = {"network_id": network_id, **fields}
    if ip is not None:
        body["fixed_ips"] = [{"ip_address": ip}]
    return cluster.client.post("/v1/ports", body)


def wait_inventory(cluster: LocalCluster, site: str, key: str, timeout: float = 30) -> dict:
    """The site's inventory once it reports ``key``."""
    return wait_for(
        lambda: (inv := cluster.site(site).get("inventory") or {}).get(key) is not None and inv,
        timeout,
        f"site {site} reporting {key}",
    )


def wait_port(cluster: LocalCluster, port_id: str, status: str, timeout: float = 60) -> dict:
    def check() -> dict | None:
        found = cluster.client.get(f"/v1/ports/{port_id}")
        if found["status"] == "ERROR" and status != "ERROR":
            raise AssertionError(f"port {port_id} in ERROR: {found['reason']}")
        return found if found["status"] == status else None

    return wait_for(check, timeout, f"port {port_id} {status}")


def console(cluster: LocalCluster, site: str, server_id: str) -> str:
    path = cluster.workdir / site / "console" / f"{server_id}.log"
    return path.read_text(errors="replace") if path.exists() else ""


class TapEndpoint:
    """A port's tap opened from this process: scapy plays the guest behind it."""

    def __init__(self, tap: str, mac: str, ip: str) -> None:
        from scapy.layers.tuntap import TunTapInterface

        self.mac, self.ip = mac, ip
        self.sock = TunTapInterface(tap, mode_tun=False)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> TapEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _exchange(self, frame: Any, match: Any, timeout: float) -> Any:
        from scapy.sendrecv import sniff

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.send(frame)
            got = sniff(opened_socket=self.sock, timeout=1.0, count=1, lfilter=match)
            if got:
                return got[0]
        return None

    def arp(self, target: str, timeout: float = 5.0) -> str | None:
        """The MAC answering ARP for ``target``, or None."""
        from scapy.layers.l2 import ARP, Ether

        ask = Ether(src=self.mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
            op=1, hwsrc=self.mac, psrc=self.ip, pdst=target
        )
        reply = self._exchange(
            ask, lambda p: ARP in p and p[ARP].op == 2 and p[ARP].psrc == target, timeout
        )
        return None if reply is None else reply[ARP].hwsrc

    def ping(self, target: str, target_mac: str, timeout: float = 5.0) -> bool:
        """ICMP echo to ``target``; True when it answered."""
        from scapy.layers.inet import ICMP, IP
        from scapy.layers.l2 import Ether

        echo = Ether(src=self.mac, dst=target_mac) / IP(src=self.ip, dst=target) / ICMP(id=77)
        reply = self._exchange(
            echo,
            lambda p: ICMP in p and p[ICMP].type == 0 and p[IP].src == target and p[ICMP].id == 77,
            timeout,
        )
        return reply is not None


def purge_site_links(sites: list[str]) -> list[str]:
    """Delete host links tagged for ``sites`` (a failed test's leftovers); their names."""
    out = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, check=False
    ).stdout
    doomed = []
    for line in out.splitlines():
        if " alias skerry:" not in line:
            continue
        site = line.split(" alias skerry:", 1)[1].split(":", 1)[0]
        if site in sites:
            doomed.append(line.split(":", 2)[1].strip().split("@")[0])
    for name in doomed:
        subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
    return doomed
