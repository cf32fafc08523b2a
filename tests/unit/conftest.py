"""Unit-test fixtures: LibvirtCompute on libvirt's test driver (a fresh empty host per test),
and central's app with a bootstrapped cloud admin."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from quart import Quart

from edged.drivers.compute_libvirt import LibvirtCompute
from edged.drivers.libvirt_testnode import write_test_node
from tests.unit.compute_support import SITE
from tests.unit.identity_support import TokenClient, admin_client, make_app


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """An image directory holding a fake ``tiny`` (the test driver never boots it)."""
    d = tmp_path / "images"
    (d / "tiny").mkdir(parents=True)
    (d / "tiny" / "vmlinuz").write_bytes(b"not a kernel")
    (d / "tiny" / "initrd.gz").write_bytes(b"not an initrd")
    return d


@pytest.fixture
def drv(tmp_path: Path, image_dir: Path) -> Iterator[LibvirtCompute]:
    """The real LibvirtCompute of site ``SITE`` on a fresh test-driver host."""
    d = LibvirtCompute(
        SITE, write_test_node(tmp_path), tmp_path / "state", image_dir, stop_grace_s=0.5
    )
    yield d
    d.close()


@pytest.fixture
async def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Quart]:
    """central's app, serving (its hub bound on a free port), admin bootstrapped."""
    app = make_app(tmp_path, monkeypatch)
    async with app.test_app():
        yield app


@pytest.fixture
async def admin(app: Quart) -> TokenClient:
    """A client holding the cloud admin's token."""
    return await admin_client(app)
