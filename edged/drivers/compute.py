"""The compute driver contract: what edged needs from a hypervisor.

One interface, implemented by :mod:`edged.drivers.compute_libvirt`. Every
method is idempotent: the reconciler may call it again after a crash at any
point, so "already done" is success, never an error.
"""

from __future__ import annotations

import abc
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

PowerState = Literal["running", "stopped"]
ObservedState = Literal["running", "shutoff", "crashed", "paused", "other"]
CpuPolicy = Literal["shared", "dedicated"]
NicKind = Literal["tap", "hostdev"]

# Flavor page sizes (Nova's ``hw:mem_page_size``) -> KiB; "small" is the normal page.
PAGE_SIZES_KB: dict[str, int] = {"small": 0, "2MB": 2048, "1GB": 1048576}

# Spec fields that never shape the domain: power is a state, ports are hot-plugged.
_NOT_BUILT = ("power", "ports")


class ComputeError(Exception):
    """A compute operation failed; the message names the server and the cause.

    ``permanent`` errors (a missing image, an impossible flavor) are reported
    to central as the server's reason and not retried until the desired state
    changes; temporary ones are retried on the next reconcile.
    """

    def __init__(self, server_id: str, message: str, *, permanent: bool = False) -> None:
        super().__init__(f"server {server_id}: {message}")
        self.server_id = server_id
        self.reason = message
        self.permanent = permanent


@dataclass(frozen=True)
class ServerSpec:
    """One server as the desired-state document describes it."""

    id: str
    name: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    image: str
    power: PowerState = "running"
    # NUMA/EPA (Nova's hw:cpu_policy, hw:mem_page_size, hw:numa_nodes).
    cpu_policy: CpuPolicy = "shared"
    mem_page_size: str = "small"
    numa_nodes: int = 1
    # Host NUMA node of each guest cell, chosen by central; () = no NUMA placement.
    numa_placement: tuple[int, ...] = ()
    # Port ids of the server's NICs, in order (hot-plugged: not part of the build).
    ports: tuple[str, ...] = ()
    # Server metadata, (key, value) sorted by key: the guest reads it at boot
    # (the tiny image: ``skerry.<key>=<value>`` on its kernel command line).
    metadata: tuple[tuple[str, str], ...] = ()
    # sha256 of the central image the server boots from (a disk image pulled into the
    # site's cache); "" = ``image`` names a kernel-boot directory in the site's image_dir.
    image_sha256: str = ""
    # Volume id of the server's root disk ('' = a fresh disk of disk_gb made by the driver).
    boot_volume: str = ""

    @property
    def page_size_kb(self) -> int:
        """Hugepage size in KiB, 0 for normal pages."""
        return PAGE_SIZES_KB.get(self.mem_page_size, 0)

    def build_hash(self) -> str:
        """Hash of everything that shapes the domain (not power, not ports).

        Stored in the domain's metadata; a differing hash means the domain must
        be rebuilt. Fields at their default value are left out, so adding a
        field never changes the hash of (and so never rebuilds) existing servers.
        """
        values = asdict(self)
        for f in fields(self):
            if f.name in _NOT_BUILT or values[f.name] == f.default:
                values.pop(f.name)
        values = {k: json.loads(json.dumps(v)) for k, v in values.items()}
        blob = json.dumps(values, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class Nic:
    """One NIC of a server, resolved by edged from the server's port.

    ``tap``: a tap edged made on the network's bridge (the domain opens it:
    ``<interface type='ethernet'>`` with ``managed='no'``). ``hostdev``: an
    SR-IOV VF passed through (``<interface type='hostdev'>`` with its PCI
    address). ``addresses`` ("10.0.0.5/24") reach the guest on its kernel
    command line (the tiny image's network contract) for NICs present at boot.
    """

    port_id: str
    mac: str
    kind: NicKind = "tap"
    tap: str = ""
    mtu: int = 1500
    pci: str = ""
    vlan: int | None = None
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class BootImage:
    """A verified disk image in the site's cache that a server boots from (its root
    disk is a qcow2 overlay on it; the guest's arguments come on a config disk)."""

    path: Path
    format: str  # "qcow2" | "raw": the overlay's backing format, never probed


@dataclass(frozen=True)
class Disk:
    """A block volume as a server's disk, resolved by edged from the volume driver.

    ``path`` is the volume's qcow2 file; ``secret_uuid`` names the libvirt
    passphrase secret of a LUKS-encrypted volume (None: not encrypted). The
    guest sees the volume id's first 20 characters as the disk's serial.
    """

    volume_id: str
    path: Path
    secret_uuid: str | None = None


@dataclass(frozen=True)
class GuestCell:
    """One guest NUMA cell: the host node it lives on and the host CPUs of its vCPUs.

    ``cpus`` has one host CPU per vCPU of the cell when CPUs are dedicated
    (``<vcpupin>``), or the node's CPUs the vCPUs float over when shared.
    """

    host_node: int
    cpus: tuple[int, ...]
    vcpus: int
    memory_mb: int


@dataclass(frozen=True)
class Placement:
    """Where a server's vCPUs and memory live on the host (from ``numa_placement``)."""

    cells: tuple[GuestCell, ...]
    dedicated: bool
    page_size_kb: int = 0


@dataclass(frozen=True)
class ObservedServer:
    """A domain this site owns, as the hypervisor reports it."""

    id: str
    state: ObservedState
    build_hash: str
    # Port ids of the NICs in the domain's persistent or live definition.
    ports: frozenset[str] = field(default_factory=frozenset)
    # Those in one definition only: a hot-plug or unplug the guest has not completed.
    half_plugged: frozenset[str] = field(default_factory=frozenset)
    # Volume ids of the disks in either definition (the root disk's too, if a volume).
    volumes: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Inventory:
    """What the host can offer, reported to central."""

    cpus: int
    ram_mb: int
    disk_gb: int
    hypervisor: str


class ComputeDriver(abc.ABC):
    """Creates, powers and removes this site's servers.

    Contract shared by every implementation:

    * A driver only ever sees and touches servers this site owns (marked in the
      hypervisor's own metadata with the site's name); others are invisible to
      every method here.
    * ``create`` defines the server with ``nics`` (in order) and ``placement``
      and starts it when ``spec.power`` is ``running``. It succeeds when the
      server already exists with the same build hash, and cleans up whatever
      it made if it fails.
    * ``attach_nic``/``detach_nic`` add or remove one NIC, live when the
      domain runs and in its persistent definition always; attaching a NIC
      the domain has, or detaching one it lacks, succeeds.
    * ``attach_disk``/``detach_disk`` do the same for a volume's disk (found
      by its volume id); the driver picks the free ``vdX`` target. A
      ``root_disk`` given to ``create`` is the server's ``vda`` instead of a
      fresh disk, and is left alone by ``delete``.
    * ``start``/``stop`` succeed when the server is already in that state.
    * ``reboot`` restarts a running server's guest now; a server that is not
      running is a (temporary) :class:`ComputeError`, never a silent start.
    * ``delete`` removes the domain, its disk and console log, and succeeds when
      any or all of them are already gone (it also clears leftovers of a create
      that crashed half-way).
    * Errors are :class:`ComputeError`; hypervisor exceptions never escape.
    """

    @abc.abstractmethod
    def list_owned(self) -> dict[str, ObservedServer]:
        """Servers this site owns, by server id."""

    @abc.abstractmethod
    def list_leftovers(self) -> set[str]:
        """Server ids with files on disk (disk image, console) but no domain."""

    @abc.abstractmethod
    def create(
        self,
        spec: ServerSpec,
        nics: Sequence[Nic] = (),
        placement: Placement | None = None,
        boot_image: BootImage | None = None,
        root_disk: Disk | None = None,
    ) -> None:
        """Define the server (and start it when it should run).

        With ``boot_image`` it boots from that disk image instead of ``spec.image``'s
        kernel and initrd; with ``root_disk`` (a boot volume) that volume is its root disk.
        """

    @abc.abstractmethod
    def attach_nic(self, server_id: str, nic: Nic) -> None:
        """Add a NIC (hot-plug when running)."""

    @abc.abstractmethod
    def detach_nic(self, server_id: str, port_id: str) -> None:
        """Remove the NIC of ``port_id`` (hot-unplug when running)."""

    @abc.abstractmethod
    def attach_disk(self, server_id: str, disk: Disk) -> None:
        """Add a volume's disk (hot-plug when running)."""

    @abc.abstractmethod
    def detach_disk(self, server_id: str, volume_id: str) -> None:
        """Remove the disk of ``volume_id`` (hot-unplug when running)."""

    @abc.abstractmethod
    def start(self, server_id: str) -> None:
        """Power the server on."""

    @abc.abstractmethod
    def stop(self, server_id: str) -> None:
        """Power the server off: ACPI shutdown, then destroy after the grace time."""

    @abc.abstractmethod
    def reboot(self, server_id: str) -> None:
        """Restart the running server's guest (a hard restart where no soft one exists)."""

    @abc.abstractmethod
    def delete(self, server_id: str) -> None:
        """Remove the server and everything it left on disk."""

    @abc.abstractmethod
    def inventory(self) -> Inventory:
        """CPUs, RAM, disk and hypervisor of this host."""

    @abc.abstractmethod
    def console_tail(self, server_id: str, max_bytes: int = 4096) -> str:
        """The end of the server's serial console log ('' when there is none)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
