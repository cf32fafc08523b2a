"""The background task that drives lifecycle operations: every ``lcm_poll_s`` (or when
the API wakes it) it takes each occurrence in STARTING, PROCESSING or ROLLING_BACK one
step further from what the store says (the sites' reports fold into it). It keeps no
state of its own, so a restarted central resumes the operations it finds in the store.

Phases (``vnf_lcm_op_occs.phase``):
- INSTANTIATE: ``cleanup`` (a retry removes what the failed attempt made) -> ``create``
  (every resource recorded in one change) -> ``wait`` (all servers ACTIVE: COMPLETED;
  one ERROR or the timeout: FAILED_TEMP).
- TERMINATE: ``stop`` (GRACEFUL: servers asked to stop, waited for up to the timeout)
  -> ``delete`` (servers, then ports, volumes, networks, until the site saw it).
- SCALE out: ``cleanup`` (retry) -> ``create`` -> ``wait``; in: ``select`` (the newest
  servers, recorded as REMOVED changes) -> ``remove``.
- HEAL: ``begin`` (VNFCs recorded in ``engine_state``) -> RESTART ``stopping`` ->
  ``starting``; RECREATE ``deleting`` -> ``wait``.
- ROLLING_BACK: what the operation made is removed, then ROLLED_BACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from central.api.services import Services
from central.lcm import resources
from central.lcm.catalog import mark_in_use, resolve_vnfd
from central.lcm.plan import (
    initial_scale_status,
    plan_instantiate,
)
from central.lcm.records import advance, fail_temp, params
from central.lcm.scale_heal import ScaleHealSteps
from central.store import Store, dumps, now
from central.vnfd import Vnfd

log = logging.getLogger("central.lcm")
ACTIVE_STATES = ("STARTING", "PROCESSING", "ROLLING_BACK")

Resolver = Callable[[Store, str, str], tuple[Vnfd, str | None]]
InUse = Callable[[Store, str | None, bool], None]


class LcmEngine(ScaleHealSteps):
    """Drives every unfinished operation; ``wake()`` after the API starts or moves one."""

    def __init__(
        self, svc: Services, resolve: Resolver = resolve_vnfd, in_use: InUse = mark_in_use
    ) -> None:
        self.svc = svc
        self.resolve = resolve
        self.in_use = in_use
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="central-lcm")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.svc.config.lcm_poll_s)
            self._wake.clear()

    def tick(self) -> None:
        """One step of every unfinished operation; a failing step is the operation's
        failure (FAILED_TEMP with the cause), never the engine's."""
        store = self.svc.store
        marks = ", ".join("?" * len(ACTIVE_STATES))
        ops = store.query(
            f"SELECT * FROM vnf_lcm_op_occs WHERE operation_state IN ({marks}) ORDER BY start_time",
            ACTIVE_STATES,
        )
        for op in ops:
            try:
                self.step(op)
            except Exception as exc:  # the operation fails, the engine goes on
                log.warning("lcm op %s %s failed: %s", op["id"], op["operation"], exc)
                if not isinstance(exc, ValueError | LookupError) and not hasattr(exc, "message"):
                    log.exception("lcm op %s: unexpected error", op["id"])
                with store.transaction():
                    fail_temp(store, op, resources.cause(exc))

    # -- one step ---------------------------------------------------------------------------

    def step(self, op: dict[str, Any]) -> None:
        store = self.svc.store
        state, kind = op["operation_state"], op["operation"]
        if state == "STARTING":
            first = {"INSTANTIATE": "create", "TERMINATE": "stop", "HEAL": "begin"}.get(kind, "")
            if kind == "SCALE":
                first = "create" if params(op)["type"] == "SCALE_OUT" else "select"
            with store.transaction():
                advance(store, op, "PROCESSING", phase=first, deadline=None)
            return
        if state == "ROLLING_BACK":
            self._remove(op, "op_id", op["id"], lambda tags: self._rolled_back(op, tags))
            return
        if kind == "INSTANTIATE":
            {"cleanup": self._cleanup, "create": self._create, "wait": self._wait}[op["phase"]](op)
        elif kind == "TERMINATE":
            {"stop": self._stop, "delete": self._delete}[op["phase"]](op)
        elif kind == "SCALE":
            phases = {"cleanup": self._cleanup, "create": self._scale_out, "wait": self._wait}
            phases.update(select=self._select, remove=self._scale_in)
            phases[op["phase"]](op)
        elif kind == "HEAL":
            phases = {"begin": self._heal_begin, "stopping": self._heal_stopping}
            phases.update(starting=self._heal_starting, deleting=self._heal_deleting)
            phases.update(wait=self._wait)
            phases[op["phase"]](op)
        else:
            with store.transaction():
                fail_temp(store, op, f"operation {kind} is not supported yet", 501)

    def _deadline(self, seconds: float | None = None) -> float:
        return now() + (seconds if seconds is not None else self.svc.config.lcm_timeout_s)

    def _timed_out(self, op: dict[str, Any], waiting_for: str) -> bool:
        if op["deadline"] is None or now() < op["deadline"]:
            return False
        with self.svc.store.transaction():
            fail_temp(
                self.svc.store,
                op,
                f"timed out after {self.svc.config.lcm_timeout_s:g} s waiting for {waiting_for}",
                504,
            )
        return True

    def _instance(self, op: dict[str, Any]) -> dict[str, Any]:
        return dict(self.svc.store.db["vnf_instances"].get(op["vnf_instance_id"]))

    # -- INSTANTIATE --------------------------------------------------------------------------

    def _cleanup(self, op: dict[str, Any]) -> None:
        def then(_tags: list[dict[str, Any]]) -> None:
            advance(self.svc.store, op, "PROCESSING", phase="create")

        self._remove(op, "op_id", op["id"], then)

    def _create(self, op: dict[str, Any]) -> None:
        store = self.svc.store
        instance = self._instance(op)
        request = params(op)
        vnfd, _package = self.resolve(store, instance["vnfd_id"], instance["project_id"])
        site = request["additionalParams"]["site"]
        plan = plan_instantiate(
            vnfd,
            request["flavourId"],
            request.get("instantiationLevelId"),
            site,
            request.get("extVirtualLinks") or [],
            instance["id"],
            instance["name"] or f"vnf-{instance['id'][:8]}",
        )
        warnings = resources.create(self.svc, op, plan, instance["project_id"])
        tags = resources.tagged(store, "op_id", op["id"])
        with store.transaction():
            advance(
                store,
                op,
                "PROCESSING",
                phase="wait",
                deadline=self._deadline(),
                warnings=json.dumps(warnings),
                resource_changes=resources.dumps_changes(resources.changes(tags, "ADDED")),
            )
        for warning in warnings:
            log.warning("lcm op %s: %s", op["id"], warning)

    def _wait(self, op: dict[str, Any]) -> None:
        store = self.svc.store
        servers = store.query(
            "SELECT s.id, s.name, s.status, s.reason, r.descriptor_name FROM vnf_resources r "
            "JOIN servers s ON s.id = r.resource_id WHERE r.kind = 'server' AND r.op_id = ?",
            (op["id"],),
        )
        # A network the operation made or put a port on, or one of its ports, in ERROR.
        checks = (
            ("network", "SELECT n.id, n.reason, n.name AS what FROM vnf_resources r JOIN ports p "
             "ON p.id = r.resource_id JOIN networks n ON n.id = p.network_id "
             "WHERE r.kind = 'port' AND r.op_id = ? AND n.status = 'ERROR'"),
            ("network", "SELECT n.id, n.reason, r.descriptor_name AS what FROM vnf_resources r "
             "JOIN networks n ON n.id = r.resource_id WHERE r.kind = 'network' AND r.op_id = ? "
             "AND n.status = 'ERROR'"),
            ("port", "SELECT p.id, p.reason, r.descriptor_name AS what FROM vnf_resources r "
             "JOIN ports p ON p.id = r.resource_id WHERE r.kind = 'port' AND r.op_id = ? "
             "AND p.status = 'ERROR'"),
        )  # fmt: skip
        for kind, sql in checks:
            bad = store.one(sql, (op["id"],))
            if bad is not None:
                detail = f"{kind} {bad['id']} ({bad['what']}) is in ERROR"
                with store.transaction():
                    fail_temp(store, op, f"{detail}: {bad['reason'] or 'no reason given'}")
                return
        broken = [s for s in servers if s["status"] == "ERROR"]
        if broken:
            s = broken[0]
            detail = f"server {s['name']} ({s['id']}, VDU {s['descriptor_name']}) is in ERROR"
            with store.transaction():
                fail_temp(store, op, f"{detail}: {s['reason'] or 'no reason given'}")
            return
        if all(s["status"] == "ACTIVE" for s in servers):
            if op["operation"] == "SCALE":
                with store.transaction():
                    self._scaled(op)
                return
            if op["operation"] == "HEAL":
                with store.transaction():
                    advance(store, op, "COMPLETED", phase="")
                return
            request = params(op)
            instance = self._instance(op)
            _vnfd, package = self.resolve(store, instance["vnfd_id"], instance["project_id"])
            with store.transaction():
                store.db["vnf_instances"].update(
                    instance["id"],
                    {
                        "instantiation_state": "INSTANTIATED",
                        "flavour_id": request["flavourId"],
                        "level_id": request.get("instantiationLevelId"),
                        "site": request["additionalParams"]["site"],
                        "vnf_state": "STARTED",
                        "ext_links": dumps(request.get("extVirtualLinks") or []),
                        "scale_status": dumps(
                            [
                                {"aspectId": a, "scaleLevel": n}
                                for a, n in initial_scale_status(
                                    _vnfd.flavours[request["flavourId"]],
                                    request.get("instantiationLevelId"),
                                ).items()
                            ]
                        ),
                        "package_id": package,
                        "updated_at": now(),
                    },
                )
                advance(store, op, "COMPLETED", phase="")
                self.in_use(store, package, True)
            log.info("lcm op %s: instance %s INSTANTIATED", op["id"], instance["id"])
            return
        waiting = ", ".join(
            f"{s['name']} {s['status']}" for s in servers if s["status"] != "ACTIVE"
        )
        self._timed_out(op, f"servers ACTIVE ({waiting})")

    # -- TERMINATE ----------------------------------------------------------------------------

    def _stop(self, op: dict[str, Any]) -> None:
        request = params(op)
        store = self.svc.store
        if request.get("terminationType") == "GRACEFUL":
            tags = resources.tagged(store, "vnf_instance_id", op["vnf_instance_id"])
            stopped = resources.stop_servers(self.svc, tags)
            if op["deadline"] is None:
                timeout = float(request.get("gracefulTerminationTimeout") or 60)
                with store.transaction():
                    store.db["vnf_lcm_op_occs"].update(op["id"], {"deadline": now() + timeout})
                if not stopped:
                    return
            elif not stopped and now() < op["deadline"]:
                return
        with store.transaction():
            advance(store, op, "PROCESSING", phase="delete", deadline=None)

    def _delete(self, op: dict[str, Any]) -> None:
        def then(tags: list[dict[str, Any]]) -> None:
            store = self.svc.store
            instance = self._instance(op)
            store.db["vnf_instances"].update(
                instance["id"],
                {
                    "instantiation_state": "NOT_INSTANTIATED",
                    "flavour_id": None,
                    "level_id": None,
                    "site": None,
                    "vnf_state": None,
                    "ext_links": "[]",
                    "updated_at": now(),
                },
            )
            changes = resources.dumps_changes(resources.changes(tags, "REMOVED"))
            advance(store, op, "COMPLETED", phase="", resource_changes=changes)
            self.in_use(store, instance["package_id"], False)

        self._remove(op, "vnf_instance_id", op["vnf_instance_id"], then)

    # -- removal (terminate, rollback, retry) ---------------------------------------------------

    def _rolled_back(self, op: dict[str, Any], tags: list[dict[str, Any]]) -> None:
        changes = resources.dumps_changes(resources.changes(tags, "REMOVED"))
        advance(self.svc.store, op, "ROLLED_BACK", phase="", resource_changes=changes)

    def _remove(
        self,
        op: dict[str, Any],
        column: str,
        value: str,
        then: Callable[[list[dict[str, Any]]], None],
        only: set[str] | None = None,
    ) -> None:
        """One removal step of the tagged resources (``only`` those ids, when given);
        ``then(tags)`` (inside the transaction that forgets the tags) once all are gone."""
        store = self.svc.store
        tags = resources.tagged(store, column, value)
        if only is not None:
            tags = [t for t in tags if t["resource_id"] in only]
        done = resources.remove_step(self.svc, tags)
        if not done:
            if op["deadline"] is None:
                with store.transaction():
                    store.db["vnf_lcm_op_occs"].update(op["id"], {"deadline": self._deadline()})
                return
            self._timed_out(op, "the site to remove the resources")
            return
        with store.transaction():
            resources.forget(store, tags)
            then(tags)
