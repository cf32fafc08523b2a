"""LibvirtCompute against the real libvirtd (qemu:///system) with a TCG guest.

Needs a running libvirtd and the tiny guest (``images/build-tiny-guest.sh``);
skips with the reason otherwise. Judges the guest by its serial output, never
by the domain state alone.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from edged.drivers.compute import ServerSpec
from edged.drivers.compute_libvirt import LibvirtCompute
from edged.drivers.domain_xml import console_path, disk_path, domain_name

pytestmark = pytest.mark.libvirtd

URI = "qemu:///system"
REPO = Path(__file__).resolve().parents[2]
IMAGE_DIR = Path(os.environ.get("SKERRY_IMAGE_DIR", REPO / "images" / "build"))
BOOT_TIMEOUT_S = 60.0


def _skip(reason: str) -> None:
    print(f"SKIP: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def host() -> Iterator[None]:
    """Skip the module unless libvirtd answers and the tiny guest is built."""
    if shutil.which("qemu-img") is None:
        _skip("qemu-img not installed")
    for name in ("vmlinuz", "initrd.gz"):
        if not (IMAGE_DIR / "tiny" / name).is_file():
            _skip(f"{IMAGE_DIR / 'tiny' / name} missing: run images/build-tiny-guest.sh")
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        conn = libvirt.open(URI)
    except libvirt.libvirtError as exc:
        _skip(f"cannot open {URI}: {exc}")
    conn.close()
    yield


@pytest.fixture
def drv(host: None, tmp_path: Path) -> Iterator[LibvirtCompute]:
    site = f"itest-{uuid.uuid4().hex[:8]}"
    d = LibvirtCompute(site, URI, tmp_path / "state", IMAGE_DIR, stop_grace_s=3.0)
    try:
        yield d
    finally:
        for server_id in d.list_owned():
            d.delete(server_id)
        d.close()


def wait_console(drv: LibvirtCompute, server_id: str, needle: str) -> str:
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    tail = ""
    while time.monotonic() < deadline:
        tail = drv.console_tail(server_id, 65536)
        if needle in tail:
            return tail
        time.sleep(0.5)
    raise AssertionError(f"{needle!r} not on the console in {BOOT_TIMEOUT_S}s; tail:\n{tail}")


def test_tcg_guest_lifecycle(drv: LibvirtCompute) -> None:
    spec = ServerSpec(id="g1", name="guest-one", vcpus=1, ram_mb=256, disk_gb=1, image="tiny")
    try:
        drv.create(spec)
        assert drv.list_owned()["g1"].state == "running"
        assert disk_path(drv.state_dir, "g1").is_file()
        wait_console(drv, "g1", "SKERRY-GUEST-UP hostname=guest-one")

        drv.stop("g1")
        assert drv.list_owned()["g1"].state == "shutoff"
        drv.stop("g1")

        drv.start("g1")
        assert drv.list_owned()["g1"].state == "running"
        # QEMU truncates the console file on each start: this is a fresh boot's line.
        wait_console(drv, "g1", "SKERRY-GUEST-UP hostname=guest-one")
        drv.start("g1")

        drv.delete("g1")
        assert drv.list_owned() == {}
        with pytest.raises(libvirt.libvirtError):
            drv.connection().lookupByName(domain_name(drv.site, "g1"))
        assert not disk_path(drv.state_dir, "g1").exists()
        assert not console_path(drv.state_dir, "g1").exists()
        assert drv.list_leftovers() == set()
        drv.delete("g1")
    finally:
        drv.delete("g1")


def test_inventory_reports_qemu(drv: LibvirtCompute) -> None:
    inv = drv.inventory()
    assert inv.cpus >= 1
    assert inv.ram_mb > 0
    assert inv.disk_gb > 0
    assert inv.hypervisor.startswith("qemu-tcg (QEMU ")
