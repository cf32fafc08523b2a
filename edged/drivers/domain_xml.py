"""Libvirt domain XML for a :class:`ServerSpec`, and the skerry ownership metadata.

Pure functions over :mod:`xml.etree.ElementTree`; nothing here talks to libvirt.

Every domain edged creates carries, in libvirt's own ``<metadata>``::

    <skerry:server xmlns:skerry="https://skerry.dev/xmlns/server/1"
                   site="..." id="..." name="..." build="<spec.build_hash()>"/>

A domain belongs to a site iff that element exists with the site's name.

NICs carry the user alias ``ua-sk-<port id>``, which is how a port is found
again in a domain (and detached by alias). A ``tap`` NIC is
``<interface type='ethernet'>`` with ``<target managed='no'>``: edged's network
driver creates the tap, enslaves it to the network's bridge and owns it; QEMU
only opens it. ``type='bridge'`` would have libvirt create and delete its own
tap, which edged could neither name, tag nor keep across a domain restart.
A ``hostdev`` NIC is an SR-IOV VF passed through by PCI address.

Volume disks carry the user alias ``ua-vol-<volume id>`` and, as ``<serial>``,
the volume id's first 20 characters (virtio-blk serials hold 20; for central's
UUIDs that is the first 18 hex digits, dashes included, which is what the guest
sees in ``/sys/block/vdX/serial``). A LUKS volume names its libvirt secret in
``<encryption format='luks'>``.

A :class:`Placement` becomes ``<vcpupin>`` (dedicated) or a ``<vcpu cpuset>``
(shared), ``<numatune>``, guest NUMA cells and ``<memoryBacking>`` hugepages.
"""

from __future__ import annotations

import ipaddress
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edged.drivers.compute import BootImage, Disk, Nic, Placement, ServerSpec

NS = "https://skerry.dev/xmlns/server/1"
NS_PREFIX = "skerry"
KERNEL_FILE = "vmlinuz"
INITRD_FILE = "initrd.gz"
# libvirt keeps only aliases starting with "ua-" in the persistent definition.
ALIAS_PREFIX = "ua-sk-"
DISK_ALIAS_PREFIX = "ua-vol-"
SERIAL_CHARS = 20  # virtio-blk serial length
_TARGET = re.compile(r"^vd([a-z])$")

_PORT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # libvirt's user-alias characters
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_META_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_META_VALUE = re.compile(r"^[^\s\"'\\]{0,1024}$")
_RESERVED_KEYS = frozenset({"hostname", "ip"})  # set by edged itself
_TAP = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # IFNAMSIZ - 1
_PCI = re.compile(
    r"^(?P<domain>[0-9a-f]{4}):(?P<bus>[0-9a-f]{2}):(?P<slot>[01][0-9a-f])\.(?P<function>[0-7])$"
)

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


def config_disk_path(state_dir: Path, server_id: str) -> Path:
    """The config disk of a server booted from a disk image (raw, read-only to the guest)."""
    return Path(state_dir) / "disks" / f"{server_id}.config"


CONFIG_MAGIC = "SKERRY-CONFIG"
CONFIG_DISK_BYTES = 64 * 1024


def config_disk_bytes(spec: ServerSpec, nics: Sequence[Nic] = ()) -> bytes:
    """``SKERRY-CONFIG``, then the ``skerry.*`` arguments of :func:`kernel_cmdline` on one
    line, zero-padded to 64 KiB (a whole number of sectors; the tiny guest reads so much)."""
    args = [a for a in kernel_cmdline(spec, nics).split() if a.startswith("skerry.")]
    text = f"{CONFIG_MAGIC}\n{' '.join(args)}\n".encode()
    if len(text) > CONFIG_DISK_BYTES:
        raise ValueError("the guest's arguments do not fit on a config disk")
    return text.ljust(CONFIG_DISK_BYTES, b"\0")


def console_path(state_dir: Path, server_id: str) -> Path:
    """The file the server's serial console is written to."""
    return Path(state_dir) / "console" / f"{server_id}.log"


def image_paths(image_dir: Path, image: str) -> tuple[Path, Path]:
    """Kernel and initrd of an image: ``<image_dir>/<image>/{vmlinuz,initrd.gz}``."""
    base = Path(image_dir) / image
    return base / KERNEL_FILE, base / INITRD_FILE


def kernel_cmdline(spec: ServerSpec, nics: Sequence[Nic] = ()) -> str:
    """The guest kernel command line: ``skerry.hostname``, a ``skerry.ip`` per address,
    and ``skerry.<key>=<value>`` per metadata item.

    ``skerry.ip=<mac>,<addr/prefix>`` is the tiny image's network contract: its
    /init gives that address to the interface with that MAC. Metadata that would
    break the command line (whitespace, quotes) or take a reserved key is a ValueError.
    """
    args = ["console=ttyS0", "quiet", "panic=-1", f"skerry.hostname={spec.name}"]
    for nic in nics:
        mac = _mac(nic)
        args.extend(f"skerry.ip={mac},{_address(nic, a)}" for a in nic.addresses)
    for key, value in spec.metadata:
        if not _META_KEY.fullmatch(key) or key in _RESERVED_KEYS:
            raise ValueError(f"metadata key {key!r} cannot go on the kernel command line")
        if not _META_VALUE.fullmatch(value):
            raise ValueError(f"metadata {key}={value!r} cannot go on the kernel command line")
        args.append(f"skerry.{key}={value}")
    return " ".join(args)


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


# --- NICs --------------------------------------------------------------------------


def nic_alias(port_id: str) -> str:
    """The libvirt user alias of a port's NIC: ``ua-sk-<port_id>``."""
    if not _PORT_ID.fullmatch(port_id):
        raise ValueError(f"port id {port_id!r} is not usable in a libvirt alias")
    return ALIAS_PREFIX + port_id


def parse_pci(address: str) -> dict[str, str]:
    """``0000:3b:02.1`` -> libvirt ``<address type='pci'>`` attributes; ValueError if bad."""
    m = _PCI.fullmatch(address.lower())
    if m is None:
        raise ValueError(f"bad PCI address {address!r} (want DDDD:BB:SS.F)")
    attrs = {k: f"0x{v}" for k, v in m.groupdict().items()}
    return {"type": "pci", **attrs}


def _mac(nic: Nic) -> str:
    mac = nic.mac.lower()
    if not _MAC.fullmatch(mac):
        raise ValueError(f"port {nic.port_id}: bad MAC address {nic.mac!r}")
    return mac


def _address(nic: Nic, address: str) -> str:
    if "/" not in address:
        raise ValueError(f"port {nic.port_id}: address {address!r} has no prefix length")
    try:
        return str(ipaddress.ip_interface(address))
    except ValueError as exc:
        raise ValueError(f"port {nic.port_id}: bad address {address!r}") from exc


def nic_element(nic: Nic) -> ET.Element:
    """The ``<interface>`` of ``nic``; ValueError when the NIC cannot be expressed."""
    alias, mac = nic_alias(nic.port_id), _mac(nic)
    if nic.kind == "tap":
        if not _TAP.fullmatch(nic.tap):
            raise ValueError(f"port {nic.port_id}: bad tap name {nic.tap!r}")
        el = ET.Element("interface", {"type": "ethernet"})
        _sub(el, "mac", address=mac)
        _sub(el, "target", dev=nic.tap, managed="no")
        _sub(el, "model", type="virtio")
        if nic.mtu:
            _sub(el, "mtu", size=str(nic.mtu))
    elif nic.kind == "hostdev":
        el = ET.Element("interface", {"type": "hostdev", "managed": "yes"})
        _sub(el, "mac", address=mac)
        _sub(_sub(el, "source"), "address", **parse_pci(nic.pci))
        if nic.vlan is not None:
            _sub(_sub(el, "vlan"), "tag", id=str(nic.vlan))
    else:
        raise ValueError(f"port {nic.port_id}: unknown NIC kind {nic.kind!r}")
    _sub(el, "alias", name=alias)
    return el


def nic_xml(nic: Nic) -> str:
    """The ``<interface>`` XML of ``nic``, as hot-plug takes it."""
    return ET.tostring(nic_element(nic), encoding="unicode")


def _port_ids(root: ET.Element) -> list[str]:
    ids = []
    for iface in root.iterfind("devices/interface"):
        alias = iface.find("alias")
        name = alias.get("name", "") if alias is not None else ""
        if name.startswith(ALIAS_PREFIX):
            ids.append(name.removeprefix(ALIAS_PREFIX))
    return ids


def nic_port_ids(domain_xml: str) -> list[str]:
    """Port ids of a domain's NICs (from their ``ua-sk-`` aliases), in device order."""
    return _port_ids(ET.fromstring(domain_xml))


def with_nic(domain_xml: str, nic: Nic) -> str:
    """``domain_xml`` with ``nic`` added (unchanged when its port is there already)."""
    root = ET.fromstring(domain_xml)
    if nic.port_id not in _port_ids(root):
        devices = root.find("devices")
        if devices is None:
            devices = _sub(root, "devices")
        devices.append(nic_element(nic))
    return ET.tostring(root, encoding="unicode")


def without_nic(domain_xml: str, port_id: str) -> str:
    """``domain_xml`` without the NIC of ``port_id`` (unchanged when absent)."""
    root = ET.fromstring(domain_xml)
    alias = ALIAS_PREFIX + port_id
    for devices in root.iterfind("devices"):
        for iface in devices.findall("interface"):
            found = iface.find("alias")
            if found is not None and found.get("name") == alias:
                devices.remove(iface)
    return ET.tostring(root, encoding="unicode")


# --- volume disks ------------------------------------------------------------------


def disk_alias(volume_id: str) -> str:
    """The libvirt user alias of a volume's disk: ``ua-vol-<volume_id>``."""
    if not _PORT_ID.fullmatch(volume_id):
        raise ValueError(f"volume id {volume_id!r} is not usable in a libvirt alias")
    return DISK_ALIAS_PREFIX + volume_id


def disk_serial(volume_id: str) -> str:
    """What the guest sees as the disk's serial: the volume id's first 20 characters."""
    return volume_id[:SERIAL_CHARS]


def disk_element(disk: Disk, target_dev: str) -> ET.Element:
    """The ``<disk>`` of a volume as virtio ``target_dev``; ValueError when it cannot be."""
    if not _TARGET.fullmatch(target_dev):
        raise ValueError(f"volume {disk.volume_id}: bad target device {target_dev!r}")
    alias = disk_alias(disk.volume_id)
    el = ET.Element("disk", {"type": "file", "device": "disk"})
    _sub(el, "driver", name="qemu", type="qcow2")
    source = _sub(el, "source", file=str(disk.path))
    if disk.secret_uuid is not None:
        enc = _sub(source, "encryption", format="luks")
        _sub(enc, "secret", type="passphrase", uuid=disk.secret_uuid)
    _sub(el, "target", dev=target_dev, bus="virtio")
    _sub(el, "serial", disk_serial(disk.volume_id))
    _sub(el, "alias", name=alias)
    return el


def disk_xml(disk: Disk, target_dev: str) -> str:
    """The ``<disk>`` XML of a volume, as hot-plug takes it."""
    return ET.tostring(disk_element(disk, target_dev), encoding="unicode")


def disk_volume_ids(domain_xml: str) -> list[str]:
    """Volume ids of a domain's volume disks (from their ``ua-vol-`` aliases)."""
    ids = []
    for disk in ET.fromstring(domain_xml).iterfind("devices/disk"):
        alias = disk.find("alias")
        name = alias.get("name", "") if alias is not None else ""
        if name.startswith(DISK_ALIAS_PREFIX):
            ids.append(name.removeprefix(DISK_ALIAS_PREFIX))
    return ids


def free_target(*domain_xmls: str) -> str:
    """The first ``vdb``..``vdz`` no disk of any of the definitions uses."""
    used = {
        target.get("dev", "")
        for xml in domain_xmls
        for target in ET.fromstring(xml).iterfind("devices/disk/target")
    }
    for letter in "bcdefghijklmnopqrstuvwxyz":
        if f"vd{letter}" not in used:
            return f"vd{letter}"
    raise ValueError("no free virtio disk target (vdb..vdz all used)")


def with_disk(domain_xml: str, disk: Disk, target_dev: str) -> str:
    """``domain_xml`` with the volume's disk added (unchanged when it is there already)."""
    root = ET.fromstring(domain_xml)
    if disk.volume_id not in disk_volume_ids(domain_xml):
        devices = root.find("devices")
        if devices is None:
            devices = _sub(root, "devices")
        devices.append(disk_element(disk, target_dev))
    return ET.tostring(root, encoding="unicode")


def without_disk(domain_xml: str, volume_id: str) -> str:
    """``domain_xml`` without the volume's disk (unchanged when absent)."""
    root = ET.fromstring(domain_xml)
    alias = DISK_ALIAS_PREFIX + volume_id
    for devices in root.iterfind("devices"):
        for disk in devices.findall("disk"):
            found = disk.find("alias")
            if found is not None and found.get("name") == alias:
                devices.remove(disk)
    return ET.tostring(root, encoding="unicode")


# --- placement ---------------------------------------------------------------------


def cpuset(cpus: Iterable[int]) -> str:
    """Host CPUs as a libvirt cpuset with ranges: ``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    parts: list[str] = []
    ordered = sorted(set(cpus))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def guest_cells(spec: ServerSpec, placement: Placement | None) -> list[tuple[int, int]]:
    """``(vcpus, memory_mb)`` of each guest NUMA cell; the placement's, else an even split."""
    if placement is not None:
        cells = [(c.vcpus, c.memory_mb) for c in placement.cells]
        if len(cells) != spec.numa_nodes:
            raise ValueError(f"placement has {len(cells)} cells, numa_nodes is {spec.numa_nodes}")
        if sum(v for v, _ in cells) != spec.vcpus or sum(m for _, m in cells) != spec.ram_mb:
            raise ValueError("placement cells do not add up to the server's vCPUs and RAM")
        return cells
    n = spec.numa_nodes
    if not 1 <= n <= spec.vcpus:
        raise ValueError(f"numa_nodes {n} needs 1..{spec.vcpus} (the vCPUs)")
    return [
        (spec.vcpus // n + (i < spec.vcpus % n), spec.ram_mb // n + (i < spec.ram_mb % n))
        for i in range(n)
    ]


def _vcpu(dom: ET.Element, spec: ServerSpec, placement: Placement | None) -> None:
    """``<vcpu>``, floating over the placement's CPUs when shared, and ``<vcpupin>``s."""
    if placement is None:
        _sub(dom, "vcpu", str(spec.vcpus), placement="static")
        return
    if not placement.dedicated:
        allowed = cpuset(c for cell in placement.cells for c in cell.cpus)
        if not allowed:
            raise ValueError("shared placement has no host CPUs")
        _sub(dom, "vcpu", str(spec.vcpus), placement="static", cpuset=allowed)
        return
    _sub(dom, "vcpu", str(spec.vcpus), placement="static")
    tune = _sub(dom, "cputune")
    vcpu = 0
    for cell in placement.cells:
        if len(cell.cpus) != cell.vcpus:
            raise ValueError(
                f"dedicated cell on node {cell.host_node} has {cell.vcpus} vCPUs "
                f"but {len(cell.cpus)} host CPUs"
            )
        for host_cpu in cell.cpus:
            _sub(tune, "vcpupin", vcpu=str(vcpu), cpuset=str(host_cpu))
            vcpu += 1


def _numatune(dom: ET.Element, spec: ServerSpec, placement: Placement) -> None:
    """Memory strictly on the placement's host nodes (per guest cell when there are cells)."""
    tune = _sub(dom, "numatune")
    nodes = cpuset(c.host_node for c in placement.cells)
    _sub(tune, "memory", mode="strict", nodeset=nodes)
    if spec.numa_nodes > 1:
        for i, cell in enumerate(placement.cells):
            _sub(tune, "memnode", cellid=str(i), mode="strict", nodeset=str(cell.host_node))


def _guest_numa(dom: ET.Element, cells: list[tuple[int, int]]) -> None:
    """``<cpu><numa>``: consecutive vCPU ids per cell."""
    numa = _sub(_sub(dom, "cpu"), "numa")
    first = 0
    for i, (vcpus, memory_mb) in enumerate(cells):
        cpus = cpuset(range(first, first + vcpus))
        _sub(numa, "cell", id=str(i), cpus=cpus, memory=str(memory_mb), unit="MiB")
        first += vcpus


# --- the domain --------------------------------------------------------------------


def build_domain_xml(
    spec: ServerSpec,
    *,
    site: str,
    virt_type: str,
    state_dir: Path,
    image_dir: Path,
    nics: Sequence[Nic] = (),
    placement: Placement | None = None,
    boot_image: BootImage | None = None,
    root_disk: Disk | None = None,
) -> str:
    """The full domain XML for ``spec`` (``virt_type``: ``qemu``, ``kvm`` or ``test``).

    With ``boot_image`` the guest boots from its root disk and gets its arguments on a
    config disk; otherwise from ``spec.image``'s kernel. The root disk is ``root_disk``
    (a volume) when given, else the server's own file (an overlay on ``boot_image``
    when there is one).

    Raises ValueError when ``nics`` or ``placement`` cannot be expressed (a bad
    PCI address, a placement that does not match the spec).
    """
    cells = guest_cells(spec, placement) if spec.numa_nodes > 1 or placement is not None else []

    dom = ET.Element("domain", {"type": virt_type})
    _sub(dom, "name", domain_name(site, spec.id))
    _sub(dom, "title", spec.name)
    meta = _sub(dom, "metadata")
    meta.append(ownership_element(site, spec))
    _sub(dom, "memory", str(spec.ram_mb), unit="MiB")
    # Without a placement the flavor's page size still holds (pages from any node).
    page_kb = placement.page_size_kb if placement is not None else spec.page_size_kb
    if page_kb:
        backing = _sub(_sub(dom, "memoryBacking"), "hugepages")
        _sub(backing, "page", size=str(page_kb), unit="KiB")
    _vcpu(dom, spec, placement)
    if placement is not None:
        _numatune(dom, spec, placement)

    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64")
    if boot_image is None:  # else the root disk carries <boot order='1'/>
        kernel, initrd = image_paths(image_dir, spec.image)
        _sub(os_el, "kernel", str(kernel))
        _sub(os_el, "initrd", str(initrd))
        _sub(os_el, "cmdline", kernel_cmdline(spec, nics))

    features = _sub(dom, "features")
    _sub(features, "acpi")
    if spec.numa_nodes > 1:
        _guest_numa(dom, cells)

    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    _devices(dom, spec, state_dir, nics, boot_image, root_disk)
    return ET.tostring(dom, encoding="unicode")


def _devices(
    dom: ET.Element,
    spec: ServerSpec,
    state_dir: Path,
    nics: Sequence[Nic],
    boot_image: BootImage | None = None,
    root_disk: Disk | None = None,
) -> None:
    devices = _sub(dom, "devices")
    if root_disk is not None:
        disk_el = disk_element(root_disk, "vda")
        devices.append(disk_el)
    else:
        disk_el = _sub(devices, "disk", type="file", device="disk")
        _sub(disk_el, "driver", name="qemu", type="qcow2")
        _sub(disk_el, "source", file=str(disk_path(state_dir, spec.id)))
        _sub(disk_el, "target", dev="vda", bus="virtio")
        if boot_image is not None:
            # The overlay's backing file, with its format stated (never probed).
            store = _sub(disk_el, "backingStore", type="file")
            _sub(store, "format", type=boot_image.format)
            _sub(store, "source", file=str(boot_image.path))
    if boot_image is not None:
        _sub(disk_el, "boot", order="1")
        cfg = _sub(devices, "disk", type="file", device="disk")
        _sub(cfg, "driver", name="qemu", type="raw")
        _sub(cfg, "source", file=str(config_disk_path(state_dir, spec.id)))
        _sub(cfg, "target", dev="vdb", bus="virtio")
        _sub(cfg, "readonly")

    if len({nic.port_id for nic in nics}) != len(nics):
        raise ValueError("a port is given twice")
    for nic in nics:
        devices.append(nic_element(nic))

    console = str(console_path(state_dir, spec.id))
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=console)
    _sub(serial, "target", port="0")
    con = _sub(devices, "console", type="file")
    _sub(con, "source", path=console)
    _sub(con, "target", type="serial", port="0")

    _sub(devices, "memballoon", model="none")


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
