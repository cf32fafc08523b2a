"""The executor's volume steps: the real QemuImgVolumes (qemu-img) and LibvirtCompute on
libvirt's test driver (guests shut off: that driver cannot hot-plug into running ones, and
has no secrets, so encrypted volumes are attached only in the integration and e2e tests)."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import zmq

from edged.drivers.compute_libvirt import LibvirtCompute
from edged.drivers.domain_xml import domain_name
from edged.drivers.volume_qemuimg import QemuImgVolumes
from edged.executor import Executor
from edged.sealed import seal
from edged.site_volumes import SiteVolumes
from tests.unit.compute_support import SITE

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img not installed")

KEY = bytes(range(32))
PUBLIC, SECRET = (k.decode() for k in zmq.curve_keypair())


class OneImage:
    """An image source holding one file."""

    def __init__(self, image_id: str, path: Path) -> None:
        self.image_id, self.path = image_id, path

    def cached_path(self, image_id: str) -> Path | None:
        return self.path if image_id == self.image_id else None


def server(server_id: str, **kw: Any) -> dict[str, Any]:
    return {"id": server_id, "name": f"vm-{server_id}", "vcpus": 1, "ram_mb": 128,
            "disk_gb": 1, "image": "tiny", "power": "stopped", **kw}  # fmt: skip


def volume(volume_id: str, **kw: Any) -> dict[str, Any]:
    return {"id": volume_id, "size_gb": 1, "encrypted": False, "source": None, **kw}


def document(servers: list[dict], volumes: list[dict]) -> dict[str, Any]:
    return {"site": SITE, "generation": 1, "settings": {}, "servers": servers, "volumes": volumes}


@pytest.fixture
def vols(drv: LibvirtCompute, tmp_path: Path):
    d = QemuImgVolumes(SITE, tmp_path / "volumes", drv.uri, luks_iter_time_ms=10)
    yield d
    d.close()


def disks(drv: LibvirtCompute, server_id: str) -> dict[str, str]:
    """target dev -> source file of the domain's persistent definition."""
    dom = drv.connection().lookupByName(domain_name(SITE, server_id))
    root = ET.fromstring(dom.XMLDesc(0))
    return {
        d.find("target").get("dev"): d.find("source").get("file")  # type: ignore[union-attr]
        for d in root.iterfind("devices/disk")
    }


def run(ex: Executor, doc: dict[str, Any], passes: int = 2) -> dict[str, Any]:
    for _ in range(passes):
        result = ex.run_pass(1, doc)
    return result.report


def test_create_attach_boot_pending_detach_extend_delete(
    drv: LibvirtCompute, vols: QemuImgVolumes, tmp_path: Path
) -> None:
    source = tmp_path / "img.raw"
    source.write_bytes(b"IMAGE-BYTES" * 1000)
    site_vols = SiteVolumes(vols, drv, OneImage("img-1", source), site_secret=lambda: SECRET)
    ex = Executor(drv, volumes=site_vols)
    doc = document(
        [server("s1"), server("s2", boot_volume="root")],
        [
            volume("data", attached_to="s1"),
            volume("enc", encrypted=True, key_sealed=seal(PUBLIC, KEY, "enc"), snapshots=["snap"]),
            volume("root", attached_to="s2", boot_index=0),
            volume("fromimg", source={"image_id": "img-1"}),
            volume("waiting", source={"image_id": "img-2"}),
        ],
    )
    report = run(ex, doc, passes=3)
    assert set(vols.list_owned()) == {"data", "enc", "root", "fromimg", "snap"}
    assert report["volumes"]["data"] == {
        "state": "in-use", "reason": "", "attached_to": "s1", "size_gb": 1
    }  # fmt: skip
    assert report["volumes"]["root"]["attached_to"] == "s2"
    assert report["volumes"]["fromimg"]["state"] == "available"
    assert report["volumes"]["waiting"] == {
        "state": "pending", "reason": "image img-2 not in the site cache yet"
    }  # fmt: skip
    assert report["snapshots"] == {"snap": {"state": "available", "reason": ""}}
    assert disks(drv, "s1")["vdb"] == str(vols.path("data"))
    assert disks(drv, "s2") == {"vda": str(vols.path("root"))}
    dom = drv.connection().lookupByName(domain_name(SITE, "s1"))
    assert "<serial>data</serial>" in dom.XMLDesc(0)

    # Detach + grow; the copy from the snapshot keeps the key.
    doc["volumes"][0] = volume("data", size_gb=2)
    sealed = seal(PUBLIC, KEY, "copy")
    doc["volumes"].append(volume("copy", encrypted=True, key_sealed=sealed,
                                 source={"snapshot_id": "snap"}, size_gb=3))  # fmt: skip
    report = run(ex, doc, passes=3)
    assert "vdb" not in disks(drv, "s1")
    assert report["volumes"]["data"] == {
        "state": "available", "reason": "", "attached_to": None, "size_gb": 2
    }  # fmt: skip
    assert report["volumes"]["copy"]["size_gb"] == 3
    assert report["volumes"]["copy"]["state"] == "available"
    assert vols.list_owned()["copy"].encrypted
    assert vols.key_path("copy").read_bytes() == vols.key_path("enc").read_bytes()

    # The server with the root volume goes: the volume stays, free; dropped volumes go.
    doc = document([server("s1")], [volume("root")])
    report = run(ex, doc)
    assert set(vols.list_owned()) == {"root"}
    assert report["volumes"] == {
        "root": {"state": "available", "reason": "", "attached_to": None, "size_gb": 1}
    }
    assert Path(vols.path("root")).is_file()


def test_server_waits_for_its_boot_volume(drv: LibvirtCompute, vols: QemuImgVolumes) -> None:
    ex = Executor(drv, volumes=SiteVolumes(vols, drv))
    root = volume("root", attached_to="s1", boot_index=0, source={"image_id": "nowhere"})
    doc = document([server("s1", boot_volume="root")], [root])
    result = ex.run_pass(1, doc)
    assert "waiting for boot volume root" in result.errors["s1"]
    assert "not in the site cache" in result.errors["s1"]
    assert result.report["servers"]["s1"]["state"] == "building"
    assert drv.list_owned() == {}


def test_a_site_without_volumes_says_so(drv: LibvirtCompute) -> None:
    report = Executor(drv).run_pass(1, document([], [volume("v1")])).report
    assert report["volumes"] == {
        "v1": {"state": "error", "reason": "this site has no volume driver"}
    }
