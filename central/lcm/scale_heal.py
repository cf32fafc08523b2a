"""The scale and heal steps of :class:`central.lcm.engine.LcmEngine` (a mixin: it uses
the engine's store, resolver and helpers). Phases: see :mod:`central.lcm.engine`."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from central.api.services import Services, change_at
from central.lcm import resources
from central.lcm.plan import plan_scale_in, plan_scale_out
from central.lcm.records import advance, fail_temp, params
from central.store import Store, dumps, now
from central.vnfd import Vnfd

log = logging.getLogger("central.lcm")


class ScaleHealSteps:
    """SCALE (out / in) and HEAL (RECREATE / RESTART) steps."""

    # Provided by LcmEngine.
    svc: Services
    resolve: Callable[[Store, str, str], tuple[Vnfd, str | None]]
    _instance: Callable[[dict[str, Any]], dict[str, Any]]
    _deadline: Callable[..., float]
    _timed_out: Callable[[dict[str, Any], str], bool]
    _remove: Callable[..., None]

    # -- SCALE --------------------------------------------------------------------------------

    def _scale_context(self, op: dict[str, Any]) -> tuple[dict[str, Any], Any, dict[str, int]]:
        instance = self._instance(op)
        vnfd, _package = self.resolve(self.svc.store, instance["vnfd_id"], instance["project_id"])
        status = {s["aspectId"]: s["scaleLevel"] for s in json.loads(instance["scale_status"])}
        return instance, vnfd, status

    def _levels(self, op: dict[str, Any], status: dict[str, int]) -> tuple[int, int]:
        request = params(op)
        current = status.get(request["aspectId"], 0)
        steps = int(request.get("numberOfSteps") or 1)
        return current, current + steps if request["type"] == "SCALE_OUT" else current - steps

    def _scale_out(self, op: dict[str, Any]) -> None:
        store = self.svc.store
        instance, vnfd, status = self._scale_context(op)
        existing = {
            vdu: [i for i, _ in pairs]
            for vdu, pairs in resources.instance_servers(store, instance["id"]).items()
        }
        plan = plan_scale_out(
            vnfd,
            instance["flavour_id"],
            params(op)["aspectId"],
            self._levels(op, status),
            existing,
            instance["site"],
            json.loads(instance["ext_links"]),
            instance["id"],
            instance["name"] or f"vnf-{instance['id'][:8]}",
        )
        vls = {
            t["descriptor_name"]: t["resource_id"]
            for t in resources.tagged(store, "vnf_instance_id", instance["id"])
            if t["kind"] == "network"
        }
        warnings = resources.create(self.svc, op, plan, instance["project_id"], vls)
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

    def _select(self, op: dict[str, Any]) -> None:
        """Scale-in, first step: which servers go (the newest of each VDU), with their
        ports and volumes, recorded as the operation's REMOVED changes."""
        store = self.svc.store
        instance, vnfd, status = self._scale_context(op)
        servers = resources.instance_servers(store, instance["id"])
        victims = plan_scale_in(
            vnfd.flavours[instance["flavour_id"]],
            params(op)["aspectId"],
            self._levels(op, status),
            {vdu: [i for i, _ in pairs] for vdu, pairs in servers.items()},
        )
        ids = [sid for vdu, idx in victims.items() for i, sid in servers[vdu] if i in idx]
        tags = resources.server_tags(store, ids)
        with store.transaction():
            changes = resources.dumps_changes(resources.changes(tags, "REMOVED"))
            advance(store, op, "PROCESSING", phase="remove", resource_changes=changes)

    def _scale_in(self, op: dict[str, Any]) -> None:
        changes = json.loads(op["resource_changes"] or "{}")
        only = {c["id"] for group in changes.values() for c in group}
        self._remove(
            op, "vnf_instance_id", op["vnf_instance_id"], lambda _t: self._scaled(op), only
        )

    def _scaled(self, op: dict[str, Any]) -> None:
        """The instance's scale status after a scale that completed (inside a transaction)."""
        instance, _vnfd, status = self._scale_context(op)
        status[params(op)["aspectId"]] = self._levels(op, status)[1]
        scale = [{"aspectId": a, "scaleLevel": n} for a, n in sorted(status.items())]
        self.svc.store.db["vnf_instances"].update(
            instance["id"], {"scale_status": dumps(scale), "updated_at": now()}
        )
        advance(self.svc.store, op, "COMPLETED", phase="")

    # -- HEAL ---------------------------------------------------------------------------------

    def _heal_begin(self, op: dict[str, Any]) -> None:
        """Record the VNFCs as they are, then stop them (RESTART) or delete them (RECREATE)."""
        store = self.svc.store
        request = params(op)
        olds = [resources.snapshot_server(store, sid) for sid in request["vnfcInstanceId"]]
        recreate = request.get("additionalParams", {}).get("healType", "RECREATE") == "RECREATE"
        field = "deleting" if recreate else "power"
        for old in olds:
            with change_at(self.svc, old["server"]["site"]) as s:
                value = 1 if recreate else "stopped"
                s.db["servers"].update(old["server"]["id"], {field: value, "updated_at": now()})
        with store.transaction():
            advance(
                store,
                op,
                "PROCESSING",
                phase="deleting" if recreate else "stopping",
                deadline=self._deadline(),
                engine_state=json.dumps({"olds": olds}),
            )

    def _olds(self, op: dict[str, Any]) -> list[dict[str, Any]]:
        return json.loads(op["engine_state"] or "{}").get("olds", [])

    def _servers_of(self, op: dict[str, Any]) -> list[dict[str, Any]]:
        store = self.svc.store
        rows = [store.one("SELECT * FROM servers WHERE id = ?", (o["server"]["id"],))
                for o in self._olds(op)]  # fmt: skip
        return [r for r in rows if r is not None]

    def _heal_stopping(self, op: dict[str, Any]) -> None:
        servers = self._servers_of(op)
        if any(s["status"] not in ("SHUTOFF", "ERROR") for s in servers):
            self._timed_out(op, "the servers to stop")
            return
        for s in servers:
            with change_at(self.svc, s["site"]) as st:
                st.db["servers"].update(s["id"], {"power": "running", "updated_at": now()})
        with self.svc.store.transaction():
            advance(self.svc.store, op, "PROCESSING", phase="starting", deadline=self._deadline())

    def _heal_starting(self, op: dict[str, Any]) -> None:
        servers = self._servers_of(op)
        broken = [s for s in servers if s["status"] == "ERROR"]
        if broken:
            with self.svc.store.transaction():
                fail_temp(self.svc.store, op, f"server {broken[0]['name']} is in ERROR: "
                          f"{broken[0]['reason'] or 'no reason given'}")  # fmt: skip
        elif all(s["status"] == "ACTIVE" for s in servers):
            with self.svc.store.transaction():
                advance(self.svc.store, op, "COMPLETED", phase="")
        else:
            self._timed_out(op, "the servers to start")

    def _heal_deleting(self, op: dict[str, Any]) -> None:
        store = self.svc.store
        if self._servers_of(op):
            self._timed_out(op, "the site to remove the servers")
            return
        project = self._instance(op)["project_id"]
        olds = self._olds(op)
        made = resources.recreate_servers(self.svc, op, olds, project)
        removed = [{"kind": "server", "resource_id": o["server"]["id"],
                    "descriptor_name": o["vdu"]} for o in olds]  # fmt: skip
        with store.transaction():
            resources.forget(store, removed)
            changes = resources.changes(removed, "REMOVED")
            changes["affectedVnfcs"] += resources.changes(
                resources.tagged(store, "op_id", op["id"]), "ADDED"
            )["affectedVnfcs"]
            advance(store, op, "PROCESSING", phase="wait", deadline=self._deadline(),
                    resource_changes=resources.dumps_changes(changes))  # fmt: skip
        log.info("lcm op %s: healed %d server(s): %s", op["id"], len(made), ", ".join(made))
