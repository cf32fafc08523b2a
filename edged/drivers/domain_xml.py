"""Libvirt domain XML for a :class:`ServerSpec`, and the skerry ownership metadata.

Pure functions over :mod:`xml.etree.ElementTree`; nothing here talks to libvirt.

Every domain edged creates carries, in libvirt's own ``<metadata>``::

    <skerry:server xmlns:skerry="https://skerry.dev/xmlns/server/1"
                   site="..." id="..." name="..." build="<spec.build_hash()>"/>

A domain belongs to a site iff that element exists with the site's name.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from edged.drivers.compute import ServerSpec

NS = "https://skerry.dev/xmlns/server/1"
NS_PREFIX = "skerry"
KERNEL_FILE = "vmlinuz"
INITRD_FILE = "initrd.gz"

ET.register_namespace(NS_PREFIX, NS)


@dataclass(frozen=True)
class Ownership:
    """The ownership metadata of one domain."""

    site: str
    id: str
    name: str
    build: str


def domain_name(site: str, server_id: str) -> str:
    """The libvirt domain name of a server: ``skerry-{site}-{server_id}``."""
    return f"skerry-{site}-{server_id}"


def disk_path(state_dir: Path, server_id: str) -> Path:
    """The server's root disk (qcow2)."""
    return Path(state_dir) / "disks" / f"{server_id}.qcow2"


def console_path(state_dir: Path, server_id: str) -> Path:
    """The file the server's serial console is written to."""
    return Path(state_dir) / "console" / f"{server_id}.log"


def image_paths(image_dir: Path, image: str) -> tuple[Path, Path]:
    """Kernel and initrd of an image: ``<image_dir>/<image>/{vmlinuz,initrd.gz}``."""
    base = Path(image_dir) / image
    return base / KERNEL_FILE, base / INITRD_FILE


def kernel_cmdline(spec: ServerSpec) -> str:
    """The guest kernel command line; the guest's /init reads ``skerry.hostname``."""
    return f"console=ttyS0 quiet panic=-1 skerry.hostname={spec.name}"


def ownership_element(site: str, spec: ServerSpec) -> ET.Element:
    """The ``<skerry:server>`` metadata element for ``spec`` owned by ``site``."""
    return ET.Element(
        f"{{{NS}}}server",
        {"site": site, "id": spec.id, "name": spec.name, "build": spec.build_hash()},
    )


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def build_domain_xml(
    spec: ServerSpec, *, site: str, virt_type: str, state_dir: Path, image_dir: Path
) -> str:
    """The full domain XML for ``spec`` (``virt_type``: ``qemu``, ``kvm`` or ``test``)."""
    kernel, initrd = image_paths(image_dir, spec.image)
    disk = disk_path(state_dir, spec.id)
    console = console_path(state_dir, spec.id)

    dom = ET.Element("domain", {"type": virt_type})
    _sub(dom, "name", domain_name(site, spec.id))
    _sub(dom, "title", spec.name)
    meta = _sub(dom, "metadata")
    meta.append(ownership_element(site, spec))
    _sub(dom, "memory", str(spec.ram_mb), unit="MiB")
    _sub(dom, "vcpu", str(spec.vcpus), placement="static")

    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64")
    _sub(os_el, "kernel", str(kernel))
    _sub(os_el, "initrd", str(initrd))
    _sub(os_el, "cmdline", kernel_cmdline(spec))

    features = _sub(dom, "features")
    _sub(features, "acpi")

    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")

    devices = _sub(dom, "devices")
    disk_el = _sub(devices, "disk", type="file", device="disk")
    _sub(disk_el, "driver", name="qemu", type="qcow2")
    _sub(disk_el, "source", file=str(disk))
    _sub(disk_el, "target", dev="vda", bus="virtio")

    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=str(console))
    _sub(serial, "target", port="0")
    con = _sub(devices, "console", type="file")
    _sub(con, "source", path=str(console))
    _sub(con, "target", type="serial", port="0")

    _sub(devices, "memballoon", model="none")
    return ET.tostring(dom, encoding="unicode")


def parse_ownership(xml: str) -> Ownership | None:
    """Ownership from a metadata element or a whole domain XML; None when absent.

    Accepts what ``dom.metadata(VIR_DOMAIN_METADATA_ELEMENT, NS)`` returns (the
    bare element, whose namespace libvirt drops) as well as ``dom.XMLDesc()``.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    if root.tag in ("server", f"{{{NS}}}server"):
        el: ET.Element | None = root
    else:
        el = root.find(f"metadata/{{{NS}}}server")
    if el is None:
        return None
    values = [el.get(key) for key in ("site", "id", "name", "build")]
    if any(v is None for v in values):
        return None
    site, server_id, name, build = (str(v) for v in values)
    return Ownership(site=site, id=server_id, name=name, build=build)
