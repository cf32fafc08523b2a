"""What this host can do for a test: skips that print their reason, throwaway namespaces.

A skipped test says why on the console (``SKIP: ...``, also when ``-rs`` is
off); ``.ci/run`` installs and starts what the reasons name, so in CI they do
not skip unless the kernel itself lacks the feature (802.1Q here).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator

import pytest

_counter = itertools.count()


def skip(reason: str) -> None:
    """Skip the test, printing the reason (reported at the caller's line)."""
    __tracebackhide__ = True
    print(f"SKIP: {reason}")
    pytest.skip(reason)


def require_netns() -> None:
    """Skip unless this process may make network namespaces (root, iproute2)."""
    __tracebackhide__ = True
    if os.geteuid() != 0:
        skip("needs root for network namespaces")
    if shutil.which("ip") is None:
        skip("iproute2 'ip' is not installed")
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        skip(f"'ip netns' unavailable: {probe.stderr.strip()}")


@pytest.fixture
def make_ns() -> Iterator[Callable[[], str]]:
    """Makes namespaces (loopback up); deletes every one of them afterwards."""
    from pyroute2 import IPRoute, netns

    require_netns()
    made: list[str] = []

    def make() -> str:
        name = f"skt{os.getpid()}-{next(_counter)}"
        netns.create(name)
        made.append(name)
        with IPRoute(netns=name, flags=0) as ip:
            ip.link("set", index=ip.link_lookup(ifname="lo")[0], state="up")
        return name

    try:
        yield make
    finally:
        for name in made:
            netns.remove(name)
