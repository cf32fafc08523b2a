"""The compute driver contract: what edged needs from a hypervisor.

One interface, implemented by :mod:`edged.drivers.compute_libvirt`. Every
method is idempotent: the reconciler may call it again after a crash at any
point, so "already done" is success, never an error.
"""

from __future__ import annotations

import abc
import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Literal

PowerState = Literal["running", "stopped"]
ObservedState = Literal["running", "shutoff", "crashed", "paused", "other"]


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

    def build_hash(self) -> str:
        """Hash of everything that shapes the domain (not the power state).

        Stored in the domain's metadata; a differing hash means the domain must
        be rebuilt.
        """
        fields = asdict(self)
        fields.pop("power")
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class ObservedServer:
    """A domain this site owns, as the hypervisor reports it."""

    id: str
    state: ObservedState
    build_hash: str


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
    * ``create`` defines the server and starts it when ``spec.power`` is
      ``running``. It succeeds when the server already exists with the same
      build hash, and cleans up whatever it made if it fails.
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
    def create(self, spec: ServerSpec) -> None:
        """Define the server (and start it when it should run)."""

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
