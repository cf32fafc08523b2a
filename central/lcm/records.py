"""VNF instances and operation occurrences in the store: creating, moving, reading."""

from __future__ import annotations

import json
import uuid
from typing import Any

from central.lcm.states import IllegalMove, engine_move, finished
from central.store import Store, dumps, now


class Busy(Exception):
    """Another operation of the instance is not finished (HTTP 409)."""


def current_op(store: Store, instance_id: str) -> dict[str, Any] | None:
    """The instance's unfinished operation, if any."""
    for op in store.query(
        "SELECT * FROM vnf_lcm_op_occs WHERE vnf_instance_id = ? ORDER BY start_time DESC",
        (instance_id,),
    ):
        if not finished(op["operation_state"]):
            return op
    return None


def start_op(
    store: Store, instance: dict[str, Any], operation: str, params: dict[str, Any]
) -> dict[str, Any]:
    """A new occurrence in STARTING (inside the caller's transaction); Busy when the
    instance has one that is not finished."""
    running = current_op(store, instance["id"])
    if running is not None:
        raise Busy(
            f"operation {running['id']} ({running['operation']}) of the instance is "
            f"{running['operation_state']}; one operation at a time"
        )
    stamp = now()
    op = {
        "id": str(uuid.uuid4()),
        "vnf_instance_id": instance["id"],
        "project_id": instance["project_id"],
        "operation": operation,
        "operation_state": "STARTING",
        "phase": "",
        "state_entered_time": stamp,
        "start_time": stamp,
        "deadline": None,
        "is_automatic": 0,
        "operation_params": dumps(params),
        "is_cancel_pending": 0,
        "error": None,
    }
    store.db["vnf_lcm_op_occs"].insert(op)
    return op


def move(store: Store, op_id: str, state: str, **fields: Any) -> None:
    """Put an occurrence in ``state`` (and set ``fields``)."""
    store.db["vnf_lcm_op_occs"].update(
        op_id, {"operation_state": state, "state_entered_time": now(), **fields}
    )


def advance(store: Store, op: dict[str, Any], state: str, **fields: Any) -> None:
    """The engine's move of ``op`` (as it read it) to ``state``, or a phase change inside
    its state; IllegalMove when the state machine has no such move."""
    if state == op["operation_state"]:
        store.db["vnf_lcm_op_occs"].update(op["id"], fields)
    else:
        move(store, op["id"], engine_move(op["operation_state"], state), **fields)


def fail_temp(store: Store, op: dict[str, Any], detail: str, status: int = 409) -> None:
    """FAILED_TEMP with a ProblemDetails naming the cause."""
    error = {"status": status, "title": "operation failed", "detail": detail[:2000]}
    advance(store, op, "FAILED_TEMP", error=json.dumps(error))


def params(op: dict[str, Any]) -> dict[str, Any]:
    return json.loads(op["operation_params"] or "{}")


__all__ = [
    "Busy",
    "IllegalMove",
    "advance",
    "current_op",
    "fail_temp",
    "move",
    "params",
    "start_op",
]
