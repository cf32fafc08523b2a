"""QemuImgVolumes against the real qemu-img (and libvirtd + a TCG guest for attach).

Idempotence of create/delete/extend, LUKS encryption that leaves no plaintext in
the file, key files, refused shrinking, failed creates that leave nothing, and
an encrypted volume hot-plugged into a running tiny guest through its libvirt
secret. Skips, printing the reason, when qemu-img, qemu-io, libvirtd or the tiny
guest are missing.
"""

from __future__ import annotations

import shutil
import stat
import struct
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from edged.drivers.compute_libvirt import LibvirtCompute
from edged.drivers.domain_xml import domain_name
from edged.drivers.volume import VolumeError, VolumeSpec
from edged.drivers.volume_qemuimg import QemuImgVolumes, passphrase
from tests.unit.compute_support import IMAGE_DIR, QEMU_URI, require_qemu_host, skip, spec

KEY = b"k3y-\x00\xff-not-ascii-" + bytes(range(32))
PLAIN = b"SKERRY-PLAINTEXT-PATTERN-0123456789abcdef" * 16  # 656 bytes, non-repeating per 4K
PATTERN_MB = 4


@pytest.fixture(scope="module")
def qemu_img() -> None:
    if shutil.which("qemu-img") is None:
        skip("qemu-img not installed")


def _driver(root: Path, uri: str | None = None) -> QemuImgVolumes:
    site = f"vtest-{uuid.uuid4().hex[:8]}"
    return QemuImgVolumes(site, root, libvirt_uri=uri, luks_iter_time_ms=10)


@pytest.fixture
def drv(qemu_img: None, tmp_path: Path) -> Iterator[QemuImgVolumes]:
    d = _driver(tmp_path / "volumes")
    try:
        yield d
    finally:
        for volume_id in d.list_owned():
            d.delete(volume_id)
        d.close()


@pytest.fixture
def pattern(tmp_path: Path) -> Path:
    """A raw file of PATTERN_MB MiB full of the known plaintext."""
    path = tmp_path / "pattern.raw"
    blob = PLAIN * (PATTERN_MB * 1024 * 1024 // len(PLAIN) + 1)
    path.write_bytes(blob[: PATTERN_MB * 1024 * 1024])
    return path


def files(d: QemuImgVolumes) -> set[str]:
    """Every file under the driver's directory, relative to it."""
    return {str(p.relative_to(d.root)) for p in d.root.rglob("*") if p.is_file()}


def holds(d: QemuImgVolumes, volume_id: str, raw: Path) -> bool:
    """Whether the volume, opened with its key, is ``raw`` followed by zeros."""
    key_file = d.key_path(volume_id)
    vol = f"driver=qcow2,file.filename={d.path(volume_id)},encrypt.key-secret=s"
    proc = subprocess.run(
        ["qemu-img", "compare", "--object", f"secret,id=s,file={key_file},format=raw",
         "--image-opts", f"driver=raw,file.filename={raw}", vol],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode == 0


# --- lifecycle ----------------------------------------------------------------------


def test_create_delete_idempotent(drv: QemuImgVolumes) -> None:
    v = drv.create(VolumeSpec("v1", 1))
    assert (v.id, v.size_gb, v.encrypted, v.path) == ("v1", 1, False, drv.path("v1"))
    assert drv.create(VolumeSpec("v1", 1)) == v
    assert drv.list_owned() == {"v1": v}
    with pytest.raises(VolumeError) as err:
        drv.create(VolumeSpec("v1", 2))
    assert err.value.permanent
    with pytest.raises(VolumeError) as err:
        drv.create(VolumeSpec("v1", 1, encrypted=True), KEY)
    assert err.value.permanent

    drv.delete("v1")
    assert drv.list_owned() == {}
    assert files(drv) == set()
    drv.delete("v1")
    drv.delete("never-was")


def test_only_owned_volumes_are_seen(drv: QemuImgVolumes, tmp_path: Path) -> None:
    drv.create(VolumeSpec("mine", 1))
    other = QemuImgVolumes("other-site", drv.root)
    assert other.list_owned() == {}
    other.delete("mine")  # not its volume: left alone
    assert drv.path("mine").is_file()
    stray = drv.root / "stray.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(stray), "1G"], check=True)
    assert set(drv.list_owned()) == {"mine"}
    drv.delete("stray")
    assert stray.is_file()
    with pytest.raises(VolumeError) as err:
        drv.create(VolumeSpec("stray", 1))
    assert err.value.permanent
    assert stray.is_file()


def test_extend_grows_only(drv: QemuImgVolumes) -> None:
    drv.create(VolumeSpec("v1", 1))
    assert drv.extend("v1", 3).size_gb == 3
    assert drv.extend("v1", 3).size_gb == 3
    with pytest.raises(VolumeError) as err:
        drv.extend("v1", 2)
    assert err.value.permanent and "shrink" in err.value.reason
    assert drv.list_owned()["v1"].size_gb == 3
    with pytest.raises(VolumeError) as err:
        drv.extend("missing", 3)
    assert not err.value.permanent


def test_extend_encrypted_keeps_data(drv: QemuImgVolumes, pattern: Path, tmp_path: Path) -> None:
    drv.create(VolumeSpec("e1", 1, encrypted=True, source=pattern), KEY)
    assert drv.extend("e1", 2).size_gb == 2
    assert holds(drv, "e1", pattern)


# --- encryption ---------------------------------------------------------------------


def test_encrypted_file_holds_no_plaintext(
    drv: QemuImgVolumes, pattern: Path, tmp_path: Path
) -> None:
    plain = drv.create(VolumeSpec("plain", 1, source=pattern))
    assert PLAIN in plain.path.read_bytes()  # the pattern is findable when not encrypted

    enc = drv.create(VolumeSpec("enc", 1, encrypted=True, source=pattern), KEY)
    assert enc.encrypted and drv.list_owned()["enc"].encrypted
    blob = enc.path.read_bytes()
    assert PLAIN[:32] not in blob
    assert KEY not in blob and passphrase(KEY) not in blob
    # ...and it is really there: decrypted with the key, the volume starts with it.
    assert holds(drv, "enc", pattern)
    other = tmp_path / "other.raw"
    other.write_bytes(b"x" * 4096)
    assert not holds(drv, "enc", other)

    snap = drv.snapshot("enc", "enc-snap")
    assert snap.encrypted and snap.size_gb == 1
    assert PLAIN[:32] not in snap.path.read_bytes()
    assert holds(drv, "enc-snap", pattern)
    assert drv.snapshot("enc", "enc-snap") == snap


def test_written_through_qemu_io_stays_encrypted(drv: QemuImgVolumes) -> None:
    if shutil.which("qemu-io") is None:
        skip("qemu-io not installed")
    marker = 0x5A
    for vid, key in (("io-plain", None), ("io-enc", KEY)):
        v = drv.create(VolumeSpec(vid, 1, encrypted=key is not None), key)
        if key is None:
            target = ["-f", "qcow2", str(v.path)]
        else:
            target = ["--object", f"secret,id=s,file={drv.key_path(vid)},format=raw",
                      "--image-opts",
                      f"driver=qcow2,file.filename={v.path},encrypt.key-secret=s"]  # fmt: skip
        subprocess.run(["qemu-io", *target, "-c", f"write -P {marker} 0 1M"],
                       check=True, capture_output=True)  # fmt: skip
    run = bytes([marker]) * 4096
    assert run in drv.path("io-plain").read_bytes()
    assert run not in drv.path("io-enc").read_bytes()


def test_key_file_is_private_and_removed(drv: QemuImgVolumes) -> None:
    drv.create(VolumeSpec("e1", 1, encrypted=True), KEY)
    key_file = drv.key_path("e1")
    assert key_file.read_bytes() == passphrase(KEY)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert drv.create(VolumeSpec("e1", 1, encrypted=True), KEY).encrypted
    with pytest.raises(VolumeError) as err:
        drv.create(VolumeSpec("e1", 1, encrypted=True), b"another key")
    assert err.value.permanent
    assert "another key" not in str(err.value) and KEY.decode("latin-1") not in str(err.value)
    drv.delete("e1")
    assert not key_file.exists()
    assert files(drv) == set()


# --- failures leave nothing -----------------------------------------------------------


def corrupt_qcow2(path: Path) -> None:
    """A qcow2 with data whose first L1 entry points at an unaligned L2 table."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 65 0 1M", str(path)], check=True,
                   capture_output=True)  # fmt: skip
    with path.open("r+b") as f:
        f.seek(40)  # l1_table_offset in the qcow2 header
        (l1,) = struct.unpack(">Q", f.read(8))
        f.seek(l1)
        f.write(struct.pack(">Q", 0x8000000000000201))


def test_failed_creates_leave_nothing(drv: QemuImgVolumes, tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    backed = tmp_path / "backed.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
                    str(backed)], check=True)  # fmt: skip
    big = tmp_path / "big.raw"
    with big.open("wb") as f:
        f.truncate(2 * 1024**3)
    cases = {
        "missing": tmp_path / "nope.raw",
        "backing": backed,
        "too-big": big,
    }
    for vid, source in cases.items():
        for encrypted in (False, True):
            with pytest.raises(VolumeError) as err:
                drv.create(VolumeSpec(vid, 1, encrypted, source), KEY if encrypted else None)
            assert err.value.permanent, err.value
    assert drv.list_owned() == {}
    assert files(drv) == set()


def test_failure_half_way_cleans_up(drv: QemuImgVolumes, tmp_path: Path) -> None:
    if shutil.which("qemu-io") is None:
        skip("qemu-io not installed")
    bad = tmp_path / "corrupt.qcow2"
    corrupt_qcow2(bad)  # passes the probe, fails while being copied
    for encrypted in (False, True):
        with pytest.raises(VolumeError) as err:
            drv.create(VolumeSpec("half", 1, encrypted, bad), KEY if encrypted else None)
        assert "convert" in err.value.reason
        assert files(drv) == set()
    assert drv.list_owned() == {}


def test_snapshot_is_an_independent_copy(drv: QemuImgVolumes, pattern: Path) -> None:
    drv.create(VolumeSpec("v1", 1, source=pattern))
    snap = drv.snapshot("v1", "s1")
    assert (snap.size_gb, snap.encrypted) == (1, False)
    assert PLAIN in snap.path.read_bytes()
    drv.delete("v1")
    assert set(drv.list_owned()) == {"s1"}
    assert drv.snapshot("v1", "s1") == snap  # a retry after the source went
    with pytest.raises(VolumeError):
        drv.snapshot("v1", "s2")
    assert "s2" not in drv.list_owned()


# --- attach to a running guest --------------------------------------------------------


@pytest.mark.libvirtd
def test_encrypted_volume_hotplugs_into_tcg_guest(qemu_img: None, tmp_path: Path) -> None:
    require_qemu_host()
    site = f"vtest-{uuid.uuid4().hex[:8]}"
    compute = LibvirtCompute(site, QEMU_URI, tmp_path / "state", IMAGE_DIR, stop_grace_s=3.0)
    vols = QemuImgVolumes(site, tmp_path / "state" / "volumes", QEMU_URI, luks_iter_time_ms=10)
    try:
        compute.create(spec("g1", name="vol-guest"))
        vol = vols.create(VolumeSpec("data1", 1, encrypted=True), KEY)
        xml = vols.disk_xml("data1", "vdb")
        assert vols.disk_xml("data1", "vdb") == xml  # the secret is reused, not redefined
        conn = compute.connection()
        secret = conn.secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_VOLUME, str(vol.path))
        assert secret.UUIDString() in xml

        dom = conn.lookupByName(domain_name(site, "g1"))
        try:
            dom.attachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as exc:
            if "secret" in str(exc).lower():
                raise
            skip(f"libvirt cannot hot-plug here: {exc}")
        live = dom.XMLDesc(0)
        assert "<target dev='vdb' bus='virtio'/>" in live
        assert f"<secret type='passphrase' uuid='{secret.UUIDString()}'/>" in live
        assert str(vol.path) in live
        assert dom.isActive()
        # QEMU opened it: the block layer reports the volume's virtual size.
        capacity, _alloc, _phys = dom.blockInfo("vdb")
        assert capacity == 1024**3

        dom.detachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        vols.delete("data1")
        with pytest.raises(libvirt.libvirtError):
            conn.secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_VOLUME, str(vol.path))
        assert not vol.path.exists()
    finally:
        compute.delete("g1")
        for volume_id in vols.list_owned():
            vols.delete(volume_id)
        vols.close()
        compute.close()


def test_volume_from_a_qcow2_image_file(drv: QemuImgVolumes, pattern: Path, tmp_path: Path) -> None:
    """The image-cache seam: a volume copied from a local qcow2 (as the cache would hold it),
    plain and into LUKS."""
    image = tmp_path / "image.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(pattern), str(image)],
                   check=True)  # fmt: skip
    plain = drv.create(VolumeSpec("from-img", 1, source=image))
    assert PLAIN in plain.path.read_bytes()
    enc = drv.create(VolumeSpec("from-img-enc", 2, encrypted=True, source=image), KEY)
    assert enc.size_gb == 2 and PLAIN[:32] not in enc.path.read_bytes()
    assert holds(drv, "from-img-enc", pattern)
    assert image.is_file()  # the source is only read
