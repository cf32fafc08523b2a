"""Plugging N ``normal`` ports through edged's reconciler against the bare pyroute2 calls.

Prints::

    RESULT ports n=N seconds=S raw_seconds=R ratio=S/R

* **seconds**: one reconcile pass of edged's network side
  (:class:`edged.site_network.SiteNetwork`: observe the owned links, plan, apply
  through ``LinuxNetwork``, observe again) for a desired-state document that
  adds ``--ports`` (200) distinct ports (unique id and MAC) to one tenant VXLAN
  network made by an earlier, untimed pass, inside a throwaway network
  namespace. Each ``ensure_port`` is its own ``IPRoute`` in the namespace, a
  look-up of the network's bridge by name with its ownership tag checked, tap
  create, tag, MAC + MTU, master + up.
* **raw_seconds**: the same links made with bare pyroute2 in a second throwaway
  namespace: a bridge, then per port one ``IPRoute`` in the namespace (as the
  driver opens one per call) and the same netlink requests for the tap:
  ``link add`` (tuntap, mode tap, same name shape), index look-up, ``ifalias``,
  ``address`` + ``mtu``, ``master`` + ``state up``. No ownership checks.
* A second reconcile pass over the same document (nothing to do: observe and
  plan only) is printed, not part of the ratio.

Both namespaces are deleted in a ``finally`` (also on Ctrl-C, SIGTERM and the
``--deadline`` alarm). Needs root.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from pyroute2 import IPRoute, netns

from edged.drivers.network import PortSpec, bridge_name, tap_mac, tap_name
from edged.drivers.network_linux import LinuxNetwork
from edged.reconcile_net import desired_from_document
from edged.site_network import SiteNetwork
from edged.state import LocalState

SITE = "bench"
NET_ID = "net-bench000"
VNI = 4242
MTU = 1450


class Deadline(BaseException):  # not Exception: pyroute2's asyncio loop would swallow it
    pass


def make_ns(name: str, made: list[str]) -> str:
    netns.create(name)
    made.append(name)
    with IPRoute(netns=name, flags=0) as ip:
        ip.link("set", index=ip.link_lookup(ifname="lo")[0], state="up")
    return name


def port_specs(n: int) -> list[PortSpec]:
    return [
        PortSpec(
            f"{i:08x}-port-bench",
            NET_ID,
            f"52:54:00:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}",
        )
        for i in range(n)
    ]


def timed(fn: Callable[[], None]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def count_taps(ns: str, bridge: str) -> int:
    with IPRoute(netns=ns, flags=0) as ip:
        (br,) = ip.link_lookup(ifname=bridge)
        return sum(
            1
            for msg in ip.get_links()
            if (msg.get("ifname") or "").startswith("sk-t-")
            and msg.get("master") == br
            and msg["flags"] & 1
        )


def document(specs: list[PortSpec]) -> dict[str, Any]:
    """A desired-state document with the bench network and ``specs`` as its ports."""
    net = {
        "id": NET_ID,
        "kind": "tenant",
        "segmentation": "vxlan",
        "segmentation_id": VNI,
        "physnet": None,
        "mtu": MTU,
        "subnets": [],
    }
    ports = [
        {"id": s.id, "network_id": NET_ID, "mac": s.mac, "vnic_type": "normal", "server_id": None}
        for s in specs
    ]
    return {"networks": [net], "ports": ports}


def driver_run(ns: str, specs: list[PortSpec]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="skerry-bench-") as tmp:
        state = LocalState(Path(tmp))
        site = SiteNetwork(
            state,
            lambda: LinuxNetwork(SITE, namespace=ns, tunnel_local_ip="192.0.2.1"),
            eager=True,
        )
        counters: Counter[str] = Counter()
        site.reconcile(desired_from_document(document([])), (), counters)  # the network
        desired = desired_from_document(document(specs))
        seconds = timed(lambda: site.reconcile(desired, (), counters))
        got = count_taps(ns, bridge_name(NET_ID))
        if got != len(specs) or counters["action_errors"]:
            raise SystemExit(f"edged: {got} taps up, expected {len(specs)}; {dict(counters)}")
        print(f"edged: {len(specs)} ports plugged in one pass in {seconds:.4f} s", flush=True)
        replug = timed(lambda: site.reconcile(desired, (), counters))
        print(f"edged: converged pass over {len(specs)} ports in {replug:.4f} s", flush=True)
        site.close()
        state.close()
    return seconds, replug


def raw_run(ns: str, specs: list[PortSpec]) -> float:
    bridge = bridge_name(NET_ID)
    with IPRoute(netns=ns, flags=0) as ip:
        ip.link("add", ifname=bridge, kind="bridge")
        (br,) = ip.link_lookup(ifname=bridge)
        ip.link("set", index=br, ifalias=f"skerry:{SITE}:net:{NET_ID}", mtu=MTU, state="up")
    work = [(tap_name(s.id), tap_mac(s.mac), f"skerry:{SITE}:port:{s.id}") for s in specs]

    def plug() -> None:
        for name, mac, tag in work:
            with IPRoute(netns=ns, flags=0) as ip:
                ip.link("add", ifname=name, kind="tuntap", mode="tap")
                index = ip.link_lookup(ifname=name)[0]
                ip.link("set", index=index, ifalias=tag)
                ip.link("set", index=index, address=mac, mtu=MTU)
                ip.link("set", index=index, master=br, state="up")

    seconds = timed(plug)
    got = count_taps(ns, bridge)
    if got != len(specs):
        raise SystemExit(f"raw: {got} taps up on the bridge, expected {len(specs)}")
    print(f"raw pyroute2: {len(specs)} ports plugged in {seconds:.4f} s", flush=True)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ports", type=int, default=200)
    parser.add_argument("--deadline", type=int, default=120, help="seconds before giving up")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the driver run into FILE")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root for network namespaces", file=sys.stderr)
        return 2

    owner = os.getpid()

    def stop(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:  # a helper pyroute2 forked (netns sockets): just end it
            os._exit(128 + signum)
        raise Deadline(f"stopped by {signal.Signals(signum).name}")

    signal.signal(signal.SIGALRM, stop)
    signal.signal(signal.SIGTERM, stop)
    signal.alarm(args.deadline)
    specs = port_specs(args.ports)
    made: list[str] = []
    stem = f"skb{os.getpid()}"
    try:
        drv_ns = make_ns(f"{stem}-drv", made)
        raw_ns = make_ns(f"{stem}-raw", made)
        print(f"namespaces {drv_ns} {raw_ns}; {args.ports} ports", flush=True)
        if args.profile:
            import cProfile

            prof = cProfile.Profile()
            seconds, _ = prof.runcall(driver_run, drv_ns, specs)
            prof.dump_stats(args.profile)
        else:
            seconds, _ = driver_run(drv_ns, specs)
        raw_seconds = raw_run(raw_ns, specs)
    except Deadline as exc:
        print(f"bench aborted: {exc}", file=sys.stderr)
        return 1
    finally:
        if os.getpid() != owner:  # never clean up from a forked helper
            os._exit(1)
        signal.alarm(0)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
        for name in made:
            try:
                netns.remove(name)
            except OSError as exc:
                print(f"could not remove namespace {name}: {exc}", file=sys.stderr)
    print(
        f"RESULT ports n={args.ports} seconds={seconds:.4f} raw_seconds={raw_seconds:.4f} "
        f"ratio={seconds / raw_seconds:.2f}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
