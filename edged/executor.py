"""The thin side of reconciling: observe, plan, apply actions through the driver, report.

One pass is synchronous (it runs in a worker thread so the event loop keeps
serving the control channel). A failed action is logged, counted and reported
as the server's reason; it never stops the pass.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from edged.drivers.compute import ComputeDriver, ComputeError, ObservedServer, ServerSpec
from edged.reconcile import Action, PowerOverride, apply_overrides, plan, specs_from_document

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
    """Runs reconcile passes for one site's compute."""

    driver: ComputeDriver
    counters: Counter[str] = field(default_factory=Counter)
    # server id -> (build hash, reason) of a permanent failure, not retried for that build.
    failed: dict[str, tuple[str, str]] = field(default_factory=dict)
    # server id -> reason of the last temporary failure (retried next pass).
    transient: dict[str, str] = field(default_factory=dict)

    def run_pass(
        self,
        generation: int,
        document: dict[str, Any] | None,
        overrides: Iterable[PowerOverride] = (),
    ) -> PassResult:
        started = time.monotonic()
        desired, stale = apply_overrides(specs_from_document(document), overrides, generation)
        builds = {s.id: s.build_hash() for s in desired}
        # A permanent failure holds only for the build that failed.
        self.failed = {k: v for k, v in self.failed.items() if builds.get(k) == v[0]}
        self.transient = {}
        observed = self.driver.list_owned()
        leftovers = self.driver.list_leftovers()
        actions = plan(desired, observed, leftovers, {k: v[0] for k, v in self.failed.items()})
        errors: dict[str, str] = {}
        for action in actions:
            self._apply(action, errors)
        observed = self.driver.list_owned()
        report = self._report(desired, observed)
        self.counters["reconcile_passes"] += 1
        seconds = time.monotonic() - started
        if actions:
            log.info(
                "generation %d: %d actions (%s), %d errors in %.2fs",
                generation,
                len(actions),
                ", ".join(f"{a.kind} {a.server_id[:8]}" for a in actions[:10]),
                len(errors),
                seconds,
            )
        return PassResult(generation, actions, errors, report, seconds, stale)

    def _apply(self, action: Action, errors: dict[str, str]) -> None:
        try:
            if action.kind == "delete":
                self.driver.delete(action.server_id)
            elif action.kind == "create":
                assert action.spec is not None
                self.driver.create(action.spec)
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

    def _report(
        self, desired: list[ServerSpec], observed: dict[str, ObservedServer]
    ) -> dict[str, Any]:
        """Per-server state for central: running, shutoff, or error with a reason."""
        servers: dict[str, Any] = {}
        for spec in desired:
            have = observed.get(spec.id)
            entry: dict[str, Any]
            if spec.id in self.failed:
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
