"""Shared pieces for tests of the compute driver and the reconciler (fixtures: conftest.py).

The qemu helpers at the end serve the integration tests against the real libvirtd.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import libvirt

from edged.drivers.compute import Nic, ServerSpec
from edged.drivers.compute_libvirt import LibvirtCompute
from tests.host import skip

SITE = "site-a"

QEMU_URI = "qemu:///system"
REPO = Path(__file__).resolve().parents[2]
IMAGE_DIR = Path(os.environ.get("SKERRY_IMAGE_DIR", REPO / "images" / "build"))
BOOT_TIMEOUT_S = 60.0


def spec(server_id: str = "s1", **kw: object) -> ServerSpec:
    """A small server spec; keyword arguments override its fields."""
    fields: dict = {
        "id": server_id,
        "name": f"vm-{server_id}",
        "vcpus": 1,
        "ram_mb": 128,
        "disk_gb": 1,
        "image": "tiny",
    }
    fields.update(kw)
    return ServerSpec(**fields)


def tap_nic(port_id: str, n: int, tap: str = "", **kw: object) -> Nic:
    """A tap NIC with MAC ``52:54:00:00:00:<n>`` (tap name defaults to ``skt<n>``)."""
    return Nic(port_id=port_id, mac=f"52:54:00:00:00:{n:02x}", tap=tap or f"skt{n}", **kw)


# --- the real libvirtd (integration tests) ------------------------------------------


def image_version() -> int:
    """The built tiny guest's version (``tiny/VERSION``); 0 when absent or unreadable."""
    try:
        return int((IMAGE_DIR / "tiny" / "VERSION").read_text().strip())
    except (OSError, ValueError):
        return 0


def require_qemu_host(min_image_version: int = 1) -> None:
    """Skip unless qemu-img, the tiny guest (at least that version) and libvirtd are there."""
    if shutil.which("qemu-img") is None:
        skip("qemu-img not installed")
    for name in ("vmlinuz", "initrd.gz"):
        if not (IMAGE_DIR / "tiny" / name).is_file():
            skip(f"{IMAGE_DIR / 'tiny' / name} missing: run images/build-tiny-guest.sh")
    if image_version() < min_image_version:
        skip(
            f"tiny guest is version {image_version()}, these tests need "
            f"{min_image_version}: run images/build-tiny-guest.sh"
        )
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        conn = libvirt.open(QEMU_URI)
    except libvirt.libvirtError as exc:
        skip(f"cannot open {QEMU_URI}: {exc}")
    conn.close()


def wait_console(
    drv: LibvirtCompute, server_id: str, pattern: str, timeout_s: float = BOOT_TIMEOUT_S
) -> re.Match[str]:
    """Wait until the regex ``pattern`` matches the server's serial console; the match."""
    deadline = time.monotonic() + timeout_s
    tail = ""
    while time.monotonic() < deadline:
        tail = drv.console_tail(server_id, 65536)
        found = re.search(pattern, tail)
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"{pattern!r} not on {server_id}'s console in {timeout_s}s:\n{tail}")
