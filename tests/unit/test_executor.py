"""edged.executor.Executor driving the real LibvirtCompute on libvirt's test driver."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from edged.drivers.compute_libvirt import LibvirtCompute
from edged.drivers.domain_xml import NS, domain_name
from edged.executor import Executor
from tests.unit.compute_support import SITE

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img not installed")


def server(server_id: str, **kw: Any) -> dict[str, Any]:
    entry = {
        "id": server_id,
        "name": f"vm-{server_id}",
        "vcpus": 1,
        "ram_mb": 128,
        "disk_gb": 1,
        "image": "tiny",
        "power": "running",
    }
    entry.update(kw)
    return entry


def document(*servers: dict[str, Any]) -> dict[str, Any]:
    return {"site": SITE, "generation": 1, "settings": {}, "servers": list(servers)}


def states(report: dict[str, Any]) -> dict[str, str]:
    return {sid: entry["state"] for sid, entry in report["servers"].items()}


def foreign_xml(name: str, metadata: str = "") -> str:
    meta = f"<metadata>{metadata}</metadata>" if metadata else ""
    return (
        f"<domain type='test'><name>{name}</name>{meta}"
        "<memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64'>hvm</type></os></domain>"
    )


def test_three_servers_created_and_running(drv: LibvirtCompute) -> None:
    ex = Executor(drv)
    doc = document(server("a"), server("b"), server("c"))
    result = ex.run_pass(1, doc)
    assert result.generation == 1
    assert result.errors == {}
    assert sorted((a.kind, a.server_id) for a in result.actions) == [
        ("create", "a"),
        ("create", "b"),
        ("create", "c"),
    ]
    assert states(result.report) == {"a": "running", "b": "running", "c": "running"}
    assert {e["reason"] for e in result.report["servers"].values()} == {""}
    assert {sid: o.state for sid, o in drv.list_owned().items()} == {
        "a": "running",
        "b": "running",
        "c": "running",
    }
    assert ex.counters["action_create"] == 3
    # A second pass over the same document does nothing.
    again = ex.run_pass(1, doc)
    assert again.actions == []
    assert states(again.report) == {"a": "running", "b": "running", "c": "running"}
    assert ex.counters["reconcile_passes"] == 2


def test_power_stopped_reported_shutoff(drv: LibvirtCompute) -> None:
    ex = Executor(drv)
    ex.run_pass(1, document(server("a"), server("b")))
    result = ex.run_pass(2, document(server("a", power="stopped"), server("b")))
    assert [(a.kind, a.server_id) for a in result.actions] == [("stop", "a")]
    assert states(result.report) == {"a": "shutoff", "b": "running"}
    assert drv.list_owned()["a"].state == "shutoff"
    # And back on.
    result = ex.run_pass(3, document(server("a"), server("b")))
    assert states(result.report) == {"a": "running", "b": "running"}


def test_created_stopped_is_shutoff(drv: LibvirtCompute) -> None:
    result = Executor(drv).run_pass(1, document(server("a", power="stopped")))
    assert states(result.report) == {"a": "shutoff"}


def test_undesired_server_deleted_and_reported_until_gone(drv: LibvirtCompute) -> None:
    ex = Executor(drv)
    ex.run_pass(1, document(server("a"), server("b")))
    result = ex.run_pass(2, document(server("a")))
    assert [(a.kind, a.server_id) for a in result.actions] == [("delete", "b")]
    assert states(result.report) == {"a": "running"}
    assert set(drv.list_owned()) == {"a"}
    result = ex.run_pass(3, None)
    assert states(result.report) == {}
    assert drv.list_owned() == {}


def test_missing_image_error_not_retried(drv: LibvirtCompute) -> None:
    ex = Executor(drv)
    doc = document(server("a"), server("bad", image="nosuchimage"))
    result = ex.run_pass(1, doc)
    assert set(result.errors) == {"bad"}
    entry = result.report["servers"]["bad"]
    assert entry["state"] == "error"
    assert "nosuchimage" in entry["reason"]
    assert result.report["servers"]["a"]["state"] == "running"
    assert ex.counters["action_errors"] == 1
    creates = ex.counters["action_create"]

    for generation in (2, 3):
        result = ex.run_pass(generation, doc)
        assert result.actions == []
        assert result.errors == {}
        assert result.report["servers"]["bad"]["state"] == "error"
        assert "nosuchimage" in result.report["servers"]["bad"]["reason"]
    assert ex.counters["action_errors"] == 1
    assert ex.counters["action_create"] == creates
    assert len(drv.connection().listAllDomains()) == 1
    assert drv.list_leftovers() == set()


def test_missing_image_retried_when_spec_changes(drv: LibvirtCompute, image_dir: Path) -> None:
    ex = Executor(drv)
    ex.run_pass(1, document(server("bad", image="later")))
    assert ex.counters["action_errors"] == 1
    # Still failing after a spec change (another flavor): it is tried again.
    result = ex.run_pass(2, document(server("bad", image="later", vcpus=2)))
    assert [(a.kind, a.server_id) for a in result.actions] == [("create", "bad")]
    assert ex.counters["action_errors"] == 2
    assert result.report["servers"]["bad"]["state"] == "error"

    # The image is provided and the spec fixed: created and reported running.
    (image_dir / "later").mkdir()
    (image_dir / "later" / "vmlinuz").write_bytes(b"k")
    (image_dir / "later" / "initrd.gz").write_bytes(b"i")
    result = ex.run_pass(3, document(server("bad", image="later", vcpus=3)))
    assert [(a.kind, a.server_id) for a in result.actions] == [("create", "bad")]
    assert result.errors == {}
    assert drv.list_owned()["bad"].state == "running"
    assert result.report["servers"]["bad"] == {
        "state": "running",
        "reason": "",
        "console": "",
    }


def test_failure_forgotten_when_server_undesired(drv: LibvirtCompute) -> None:
    ex = Executor(drv)
    doc = document(server("bad", image="nosuchimage"))
    ex.run_pass(1, doc)
    ex.run_pass(2, None)
    assert ex.failed == {}
    # Desired again with the same spec: tried again (the failure was forgotten).
    result = ex.run_pass(3, doc)
    assert [(a.kind, a.server_id) for a in result.actions] == [("create", "bad")]


def test_foreign_domains_untouched(drv: LibvirtCompute) -> None:
    conn = drv.connection()
    other_meta = f'<o:server xmlns:o="{NS}" site="site-b" id="x2" name="n" build="b"/>'
    other = conn.defineXML(foreign_xml(domain_name("site-b", "x2"), other_meta))
    other.create()
    unmanaged = conn.defineXML(foreign_xml("unmanaged-vm"))
    unmanaged.create()
    lookalike = conn.defineXML(foreign_xml(domain_name(SITE, "x3")))

    ex = Executor(drv)
    for generation, doc in enumerate(
        [document(server("a")), document(), None, document(server("b", power="stopped"))],
        start=1,
    ):
        result = ex.run_pass(generation, doc)
        touched = {a.server_id for a in result.actions}
        assert not touched & {"x2", "x3"}
        assert not set(result.report["servers"]) & {"x2", "x3"}

    names = {d.name() for d in conn.listAllDomains()}
    assert names == {
        domain_name("site-b", "x2"),
        "unmanaged-vm",
        domain_name(SITE, "x3"),
        domain_name(SITE, "b"),
    }
    assert other.isActive() == 1
    assert unmanaged.isActive() == 1
    assert lookalike.isActive() == 0


# -- servers booting from central images ------------------------------------------------


async def test_central_image_pending_then_booted_from_an_overlay(
    drv: LibvirtCompute, tmp_path: Path
) -> None:
    import hashlib
    import subprocess
    import xml.etree.ElementTree as ET

    from edged import image_wire
    from edged.image_cache import ImageCache, ImageEntry
    from edged.image_fetch import ImagePuller

    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "32M"], check=True)
    data = disk.read_bytes()
    entry = {"id": "img-1", "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    doc = document(server("a", image="img-1", metadata={"role": "web"}))
    doc["images"] = [{**entry, "format": "qcow2"}]

    async def get(image_id: str, offset: int, length: int) -> image_wire.Chunk:
        piece = data[offset : offset + length]
        return image_wire.Chunk(
            image_id, offset, len(data), offset + len(piece) == len(data), piece
        )

    cache = ImageCache(tmp_path / "cache")
    puller = ImagePuller(cache, get, lambda: doc)
    ex = Executor(drv, images=puller)
    result = ex.run_pass(1, doc)
    assert result.actions == []
    assert result.report["servers"]["a"] == {
        "state": "pending",
        "reason": "pulling image img-1: 0%",
    }

    await puller.pass_once()
    assert cache.has(ImageEntry(**entry, format="qcow2"))
    result = ex.run_pass(1, doc)
    assert [(a.kind, a.server_id) for a in result.actions] == [("create", "a")]
    assert states(result.report) == {"a": "running"}
    xml = drv.connection().lookupByName(domain_name(SITE, "a")).XMLDesc(0)
    root = ET.fromstring(xml)
    assert root.find("os/kernel") is None
    disks = root.findall("devices/disk")
    assert disks[0].find("backingStore/source").get("file") == str(cache.path("img-1"))
    assert disks[0].find("boot").get("order") == "1"
    assert disks[1].find("readonly") is not None
    config = Path(disks[1].find("source").get("file")).read_bytes()
    assert config.startswith(b"SKERRY-CONFIG\nskerry.hostname=vm-a skerry.role=web\n")
    assert len(config) == 64 * 1024
    overlay = Path(disks[0].find("source").get("file"))
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(overlay)], capture_output=True, check=True
    )
    assert '"backing-filename-format": "qcow2"' in info.stdout.decode()
    assert '"virtual-size": 1073741824' in info.stdout.decode()  # grown to disk_gb

    drv.delete("a")
    assert not overlay.exists() and not Path(disks[1].find("source").get("file")).exists()


def test_refused_image_is_an_error_and_nothing_is_created(
    drv: LibvirtCompute, tmp_path: Path
) -> None:
    from edged.image_cache import ImageCache
    from edged.image_fetch import ImagePuller

    doc = document(server("a", image="img-1"))
    doc["images"] = [{"id": "img-1", "sha256": "a" * 64, "size": 10, "format": "raw"}]
    doc["settings"] = {"require_signed_images": True}
    ex = Executor(drv, images=ImagePuller(ImageCache(tmp_path / "c"), None, lambda: doc))
    result = ex.run_pass(1, doc)
    assert result.actions == []
    assert result.report["servers"]["a"] == {
        "state": "error",
        "reason": "image img-1: unsigned and this site requires signed images",
    }
    assert drv.list_owned() == {}
