"""The pure parts of the volume contract: spec checks and the libvirt XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from edged.drivers.volume import (
    VolumeError,
    VolumeSpec,
    check_spec,
    check_volume_id,
    disk_xml,
    secret_xml,
    volume_alias,
)

UUID = "0b5c3a2e-7d7e-4a43-9f6f-6c1f2f8f1a10"


@pytest.mark.parametrize("bad", ["", "a/b", "../x", "a b", "x" * 65, "é", "a.qcow2"])
def test_bad_ids_are_permanent_errors(bad: str) -> None:
    with pytest.raises(VolumeError) as err:
        check_volume_id(bad)
    assert err.value.permanent


def test_good_ids_pass() -> None:
    for good in ("v1", "vol_2-A", "x" * 64):
        check_volume_id(good)


def test_spec_checks() -> None:
    check_spec(VolumeSpec("v", 1), None)
    check_spec(VolumeSpec("v", 1, encrypted=True), b"k")
    for spec, key in (
        (VolumeSpec("v", 0), None),
        (VolumeSpec("v", 65537), None),
        (VolumeSpec("v", 1, encrypted=True), None),
        (VolumeSpec("v", 1, encrypted=True), b""),
        (VolumeSpec("v", 1), b"k"),
    ):
        with pytest.raises(VolumeError) as err:
            check_spec(spec, key)
        assert err.value.permanent
        assert "volume v:" in str(err.value)


def test_error_names_volume() -> None:
    err = VolumeError("v9", "boom")
    assert str(err) == "volume v9: boom"
    assert err.reason == "boom"
    assert not err.permanent


def test_plain_disk_xml() -> None:
    el = ET.fromstring(disk_xml("v1", Path("/s/v1.qcow2"), "vdb"))
    assert el.tag == "disk" and el.get("type") == "file"
    assert el.find("driver").get("type") == "qcow2"
    assert el.find("source").get("file") == "/s/v1.qcow2"
    assert el.find("source/encryption") is None
    assert el.find("target").attrib == {"dev": "vdb", "bus": "virtio"}
    assert el.find("alias").get("name") == volume_alias("v1") == "ua-vol-v1"
    assert el.find("serial").text == "v1"


def test_encrypted_disk_xml() -> None:
    el = ET.fromstring(disk_xml("v1", Path("/s/v1.qcow2"), "vdc", UUID))
    enc = el.find("source/encryption")
    assert enc is not None and enc.get("format") == "luks"
    assert enc.find("secret").attrib == {"type": "passphrase", "uuid": UUID}


@pytest.mark.parametrize("dev", ["vda", "sda", "vd", "vdb1", "hdb"])
def test_bad_target_dev(dev: str) -> None:
    with pytest.raises(VolumeError) as err:
        disk_xml("v1", Path("/s/v1.qcow2"), dev)
    assert err.value.permanent


def test_secret_xml() -> None:
    el = ET.fromstring(secret_xml(UUID, Path("/s/v1.qcow2"), "skerry volume v1"))
    assert el.attrib == {"ephemeral": "no", "private": "yes"}
    assert el.find("uuid").text == UUID
    assert el.find("usage").get("type") == "volume"
    assert el.find("usage/volume").text == "/s/v1.qcow2"
