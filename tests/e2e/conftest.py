"""End-to-end fixtures: real skerry-central and skerry-edged processes, real libvirtd.

Tests here skip (with the reason printed) when qemu:///system cannot be
opened or the guest image is not built; `.ci/run` installs and starts both.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from central.localcluster import REPO, LocalCluster, purge_site_domains
from tests.e2e.net_support import purge_site_links
from tests.e2e.support import URI
from tests.host import skip

IMAGE_DIR = REPO / "images" / "build"


def _libvirtd_problem() -> str | None:
    try:
        import libvirt

        libvirt.registerErrorHandler(lambda *_: None, None)
        libvirt.open(URI).close()
    except Exception as exc:  # libvirtError, or the binding missing
        return f"libvirtd not reachable at {URI}: {exc} (run: bash .ci/setup-host.sh)"
    if not (IMAGE_DIR / "tiny" / "vmlinuz").exists():
        return f"guest image missing in {IMAGE_DIR}/tiny (run: bash images/build-tiny-guest.sh)"
    return None


@pytest.fixture(scope="session")
def real_libvirt() -> None:
    problem = _libvirtd_problem()
    if problem:
        skip(problem)


@pytest.fixture
def sites() -> list[str]:
    """Site names unique to this test, so runs never touch each other's domains."""
    tag = uuid.uuid4().hex[:6]
    return [f"e2e{tag}-a", f"e2e{tag}-b"]


@pytest.fixture
def cluster(real_libvirt: None, tmp_path: Path, sites: list[str]) -> Iterator[LocalCluster]:
    c = LocalCluster(
        tmp_path,
        IMAGE_DIR,
        URI,
        edge_overrides={"reconcile_interval_s": 2.0, "stop_grace_s": 0.5, "log_level": "DEBUG"},
    )
    c.start_central()
    try:
        yield c
    finally:
        c.close()
        purge_site_domains(URI, sites)
        leftovers = purge_site_links(sites)
        if leftovers:
            print(f"removed links the sites left behind: {leftovers}")
        for name in ("central", *sites):
            print(f"--- {name}.log (tail) ---\n{c.log_tail(name, 15)}")
