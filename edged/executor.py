"""The thin side of reconciling: observe, plan, apply actions through the drivers, report.

One pass is synchronous (it runs in a worker thread so the event loop keeps
serving the control channel). A failed action is logged, counted and reported
as the server's (or network's, or port's) reason; it never stops the pass.

The order within a pass: servers that go are deleted, NICs that go are
unplugged, then networks and ports are reconciled (removals, then creations),
then servers are created (with their NICs and NUMA placement) and powered, and
last the NICs new to existing servers are hot-plugged.

Volumes (:mod:`edged.site_volumes`) fit in as: detaches, deletes, creates,
extends and snapshots after the server deletes and before the server creates
(a boot volume exists before its server is created with it as root disk),
and attaches after the NIC hot-plugs.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from edged.drivers.compute import (
    BootImage,
    ComputeDriver,
    ComputeError,
    Disk,
    Nic,
    ObservedServer,
    Placement,
    ServerSpec,
)
from edged.drivers.numa import HostNode, NumaError, assign_cells
from edged.image_cache import ImageEntry, entries_from_document
from edged.image_fetch import ImagePuller, ImageStatus
from edged.reconcile import (
    Action,
    NicAction,
    PowerOverride,
    apply_overrides,
    plan,
    plan_nics,
    specs_from_document,
)
from edged.reconcile_net import NetDesired, desired_from_document
from edged.reconcile_volumes import VolumesDesired, volumes_from_document
from edged.site_network import SiteNetwork
from edged.site_volumes import SiteVolumes
from edged.state import LocalState

log = logging.getLogger(__name__)

GUEST_MARKER = "SKERRY-GUEST-UP"
CONSOLE_REPORT_BYTES = 1024


@dataclass
class PassResult:
    """What one reconcile pass did and saw."""

    generation: int
    actions: list[Action]
    errors: dict[str, str]
    report: dict[str, Any]
    seconds: float
    # Local power overrides that no longer hold (central decided since): to forget.
    stale_overrides: list[str] = field(default_factory=list)


@dataclass
class Executor:
    """Runs reconcile passes for one site's compute and networking."""

    driver: ComputeDriver
    network: SiteNetwork | None = None
    volumes: SiteVolumes | None = None
    # Host NUMA topology (read now) and the claims of dedicated CPUs.
    topology: Callable[[], tuple[HostNode, ...]] | None = None
    state: LocalState | None = None
    counters: Counter[str] = field(default_factory=Counter)
    # server id -> (build hash, reason) of a permanent failure, not retried for that build.
    failed: dict[str, tuple[str, str]] = field(default_factory=dict)
    # server id -> reason of the last temporary failure (retried next pass).
    transient: dict[str, str] = field(default_factory=dict)
    # Central images: the cache and its puller (None: servers boot kernel images only).
    images: ImagePuller | None = None

    def run_pass(
        self,
        generation: int,
        document: dict[str, Any] | None,
        overrides: Iterable[PowerOverride] = (),
    ) -> PassResult:
        started = time.monotonic()
        desired, stale = apply_overrides(specs_from_document(document), overrides, generation)
        net = desired_from_document(document)
        vols = (
            self.volumes.desired(document)
            if self.volumes is not None
            else volumes_from_document(document)
        )
        builds = {s.id: s.build_hash() for s in desired}
        # A permanent failure holds only for the build that failed.
        self.failed = {k: v for k, v in self.failed.items() if builds.get(k) == v[0]}
        self.transient = {}
        observed = self.driver.list_owned()
        leftovers = self.driver.list_leftovers()
        entries = entries_from_document(document)
        waiting = self._image_waits(desired, entries, document)
        failed_builds = {k: v[0] for k, v in self.failed.items()}
        actions = plan(desired, observed, leftovers, failed_builds, unbootable=waiting)
        errors: dict[str, str] = {}
        rebuilding = {a.server_id for a in actions if a.kind in ("delete", "create")}
        for action in (a for a in actions if a.kind == "delete"):
            self._apply(action, errors, net)
        unplug = plan_nics(desired, observed, ready=(), rebuilding=rebuilding)
        for nic_action in unplug:
            self._apply_nic(nic_action, net, errors)
        vol_actions: list[Any] = []
        if self.volumes is not None:
            self.volumes.begin(vols)
            wanted = {s.id for s in desired}
            vol_actions += self.volumes.prepare(vols, observed, wanted, rebuilding)
        net_actions = (
            self.network.reconcile(net, {s.id for s in desired}, self.counters)
            if self.network is not None
            else []
        )
        for action in (a for a in actions if a.kind != "delete"):
            self._apply(action, errors, net, entries)
        observed = self.driver.list_owned()
        ready = {pid for pid, port in net.ports.items() if self._nic(port.id, net) is not None}
        plug = plan_nics(desired, observed, ready)
        for nic_action in plug:
            self._apply_nic(nic_action, net, errors)
        if plug:
            observed = self.driver.list_owned()
        if self.volumes is not None:
            attach = self.volumes.attach(vols, observed, {s.id for s in desired})
            vol_actions += attach
            if attach:
                observed = self.driver.list_owned()
        self._forget_claims(desired, observed)
        report = self._report(desired, observed, waiting)
        report |= self._volume_report(vols, observed)
        if self.network is not None:
            running = {sid for sid, o in observed.items() if o.state == "running"}
            report |= self.network.report(net, running)
        self.counters["reconcile_passes"] += 1
        seconds = time.monotonic() - started
        done = len(actions) + len(unplug) + len(plug) + len(net_actions) + len(vol_actions)
        if done:
            log.info(
                "generation %d: %d actions (%s), %d errors in %.2fs",
                generation,
                done,
                ", ".join(
                    [f"{a.kind} {a.server_id[:8]}" for a in actions[:10]]
                    + [f"{a.kind} {a.id[:8]}" for a in net_actions[:10]]
                    + [f"{a.kind} {a.port_id[:8]}" for a in unplug + plug][:10]
                    + [f"volume {a.kind} {a.volume_id[:8]}" for a in vol_actions][:10]
                ),
                len(errors),
                seconds,
            )
        all_actions: list[Any] = [*actions, *net_actions, *unplug, *plug, *vol_actions]
        return PassResult(generation, all_actions, errors, report, seconds, stale)

    # -- servers --------------------------------------------------------------------

    def _nic(self, port_id: str, net: NetDesired) -> Nic | None:
        port = net.ports.get(port_id)
        if port is None or self.network is None:
            return None
        return self.network.nic_for(port, net)

    def _nics(self, spec: ServerSpec, net: NetDesired) -> list[Nic]:
        """The server's NICs in order; ComputeError while one is not in place."""
        nics = []
        for port_id in spec.ports:
            if port_id not in net.ports:
                continue  # not this site's document: never happens with central's
            nic = self._nic(port_id, net)
            if nic is None:
                why = self._port_reason(port_id) or "not in place yet"
                raise ComputeError(spec.id, f"waiting for port {port_id}: {why}")
            nics.append(nic)
        return nics

    def _port_reason(self, port_id: str) -> str:
        if self.network is None:
            return "this site has no network driver"
        key = f"port:{port_id}"
        if key in self.network.failed:
            return self.network.failed[key][1]
        return self.network.transient.get(key, "")

    def _placement(self, spec: ServerSpec) -> Placement | None:
        """Host CPUs and memory nodes of the server's cells; claims its dedicated CPUs."""
        if not spec.numa_placement:
            return None
        if self.topology is None or self.state is None:
            raise ComputeError(
                spec.id, "this site cannot place servers on NUMA nodes", permanent=True
            )
        dedicated = spec.cpu_policy == "dedicated"
        claimed = {
            int(cpu) for cpu, (owner, _) in self.state.claims("cpu").items() if owner != spec.id
        }
        try:
            cells = assign_cells(
                self.topology(), spec.numa_placement, spec.vcpus, spec.ram_mb, dedicated, claimed
            )
        except NumaError as exc:
            raise ComputeError(spec.id, str(exc), permanent=True) from exc
        if dedicated:
            self.state.claim("cpu", {str(c): "" for cell in cells for c in cell.cpus}, spec.id)
        return Placement(cells, dedicated, spec.page_size_kb)

    def _forget_claims(
        self, desired: list[ServerSpec], observed: dict[str, ObservedServer]
    ) -> None:
        """Release the CPUs of servers that are neither desired nor on the host."""
        if self.state is None:
            return
        keep = {s.id for s in desired} | set(observed)
        gone = {owner for owner, _ in self.state.claims("cpu").values()} - keep
        if gone:
            self.state.release("cpu", sorted(gone))

    # -- images -----------------------------------------------------------------------

    def _image_waits(
        self,
        desired: list[ServerSpec],
        entries: dict[str, ImageEntry],
        document: dict[str, Any] | None,
    ) -> dict[str, ImageStatus]:
        """Servers whose central image is not cached and verified yet (or refused), with why."""
        waits: dict[str, ImageStatus] = {}
        for spec in desired:
            if not spec.image_sha256:
                continue
            entry = entries.get(spec.image)
            if entry is None:
                waits[spec.id] = ImageStatus("error", f"image {spec.image}: entry unreadable")
            elif self.images is None:
                waits[spec.id] = ImageStatus("error", "this site has no image cache")
            else:
                status = self.images.status(entry, document)
                if status.state != "ready":
                    waits[spec.id] = status
        return waits

    def _boot_image(self, spec: ServerSpec, entries: dict[str, ImageEntry]) -> BootImage | None:
        """The verified cached image of a server booting from a central image (hashed again)."""
        if not spec.image_sha256:
            return None
        entry = entries.get(spec.image)
        if self.images is None or entry is None:
            raise ComputeError(spec.id, f"image {spec.image} is not available at this site")
        path = self.images.cache.cached_path(spec.image)
        if path is None:
            self.images.wake.set()
            raise ComputeError(
                spec.id, f"image {spec.image}: not in the cache (changed on disk?); pulling again"
            )
        return BootImage(path, entry.format)

    def _apply(
        self,
        action: Action,
        errors: dict[str, str],
        net: NetDesired,
        entries: dict[str, ImageEntry] | None = None,
    ) -> None:
        try:
            if action.kind == "delete":
                self.driver.delete(action.server_id)
            elif action.kind == "create":
                assert action.spec is not None
                nics = self._nics(action.spec, net)
                boot = self._boot_image(action.spec, entries or {})
                root = self._root_disk(action.spec)
                placement = self._placement(action.spec)
                if boot is None:
                    self.driver.create(action.spec, nics, placement, root_disk=root)
                else:
                    self.driver.create(
                        action.spec, nics, placement, boot_image=boot, root_disk=root
                    )
                self.failed.pop(action.server_id, None)
            elif action.kind == "start":
                self.driver.start(action.server_id)
            elif action.kind == "stop":
                self.driver.stop(action.server_id)
            self.counters[f"action_{action.kind}"] += 1
        except ComputeError as exc:
            self.counters["action_errors"] += 1
            errors[action.server_id] = exc.reason
            log.warning("%s %s failed: %s", action.kind, action.server_id, exc.reason)
            if exc.permanent and action.spec is not None:
                self.failed[action.server_id] = (action.spec.build_hash(), exc.reason)
            else:
                self.transient[action.server_id] = exc.reason

    def _root_disk(self, spec: ServerSpec) -> Disk | None:
        """The server's boot volume as its root disk (None: a fresh disk of its flavor)."""
        if not spec.boot_volume:
            return None
        if self.volumes is None:
            raise ComputeError(spec.id, "this site has no volume driver", permanent=True)
        return self.volumes.root_disk(spec.id, spec.boot_volume)

    def _volume_report(
        self, vols: VolumesDesired, observed: dict[str, ObservedServer]
    ) -> dict[str, Any]:
        if self.volumes is None:
            why = {"state": "error", "reason": "this site has no volume driver"}
            return {"volumes": {vid: why for vid in vols.keep() - set(vols.snapshots)}}
        try:
            return self.volumes.report(vols, observed)
        except Exception as exc:  # a report never stops the pass
            self.counters["volume_report_errors"] += 1
            log.warning("volume report failed: %s", exc)
            return {}

    def _apply_nic(self, action: NicAction, net: NetDesired, errors: dict[str, str]) -> None:
        try:
            if action.kind == "detach":
                self.driver.detach_nic(action.server_id, action.port_id)
            else:
                nic = self._nic(action.port_id, net)
                assert nic is not None  # plan_nics attaches ready ports only
                self.driver.attach_nic(action.server_id, replace(nic, addresses=()))
            self.counters[f"action_nic_{action.kind}"] += 1
        except ComputeError as exc:
            self.counters["action_errors"] += 1
            errors[action.server_id] = exc.reason
            self.transient[action.server_id] = exc.reason
            log.warning(
                "%s of port %s on %s failed: %s",
                action.kind,
                action.port_id,
                action.server_id,
                exc.reason,
            )

    def _report(
        self,
        desired: list[ServerSpec],
        observed: dict[str, ObservedServer],
        waiting: dict[str, ImageStatus] | None = None,
    ) -> dict[str, Any]:
        """Per-server state for central: running, shutoff, pending (its image) or error."""
        servers: dict[str, Any] = {}
        waiting = waiting or {}
        for spec in desired:
            have = observed.get(spec.id)
            entry: dict[str, Any]
            if have is None and spec.id in waiting:
                wait = waiting[spec.id]
                entry = {"state": wait.state, "reason": wait.reason}
            elif spec.id in self.failed:
                entry = {"state": "error", "reason": self.failed[spec.id][1]}
            elif have is None:
                if spec.id not in self.transient:
                    continue  # not built yet
                entry = {"state": "building", "reason": self.transient[spec.id]}
            elif have.state == "running":
                entry = {"state": "running", "reason": ""}
            elif have.state == "crashed":
                entry = {"state": "error", "reason": "guest crashed"}
            else:
                entry = {"state": "shutoff", "reason": self.transient.get(spec.id, "")}
            if have is not None:
                entry["console"] = self.driver.console_tail(spec.id, CONSOLE_REPORT_BYTES)
            servers[spec.id] = entry
        # Owned domains that are not desired are still reported until they are gone.
        for server_id in set(observed) - {s.id for s in desired}:
            servers[server_id] = {"state": "deleting", "reason": ""}
        return {"servers": servers}
