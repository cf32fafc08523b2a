"""SOL 003 operation occurrence states and the moves between them (pure).

STARTING -> PROCESSING -> COMPLETED
                       -> FAILED_TEMP -> PROCESSING   (retry)
                                      -> ROLLING_BACK -> ROLLED_BACK  (rollback)
                                      -> FAILED       (fail)
ROLLING_BACK -> FAILED_TEMP (the rollback itself failed; retry/rollback/fail again)
"""

from __future__ import annotations

from typing import Literal

OpState = Literal[
    "STARTING",
    "PROCESSING",
    "COMPLETED",
    "FAILED_TEMP",
    "FAILED",
    "ROLLING_BACK",
    "ROLLED_BACK",
]
FINAL = frozenset({"COMPLETED", "FAILED", "ROLLED_BACK"})
# Task-level requests of SOL 003 (POST .../retry|rollback|fail) and where they lead.
REQUESTS: dict[str, tuple[frozenset[str], str]] = {
    "retry": (frozenset({"FAILED_TEMP"}), "PROCESSING"),
    "rollback": (frozenset({"FAILED_TEMP"}), "ROLLING_BACK"),
    "fail": (frozenset({"FAILED_TEMP"}), "FAILED"),
}
# Moves the engine makes.
ENGINE_MOVES: dict[str, frozenset[str]] = {
    "STARTING": frozenset({"PROCESSING", "FAILED_TEMP"}),
    "PROCESSING": frozenset({"COMPLETED", "FAILED_TEMP"}),
    "ROLLING_BACK": frozenset({"ROLLED_BACK", "FAILED_TEMP"}),
}
# Operations that cannot be rolled back (what they removed does not come back):
# retried or failed instead.
NO_ROLLBACK = frozenset({"TERMINATE", "SCALE_IN", "HEAL"})


class IllegalMove(Exception):
    """A request that the occurrence's state does not allow (HTTP 409)."""


def after_request(state: str, request: str, operation: str) -> str:
    """The state a retry/rollback/fail request leads to from ``state``; IllegalMove else."""
    allowed, target = REQUESTS[request]
    if state not in allowed:
        raise IllegalMove(f"{request} is not possible in state {state} (only from FAILED_TEMP)")
    if request == "rollback" and operation in NO_ROLLBACK:
        raise IllegalMove(f"a {operation} operation cannot be rolled back; retry or fail it")
    return target


def engine_move(state: str, target: str) -> str:
    """``target`` if the engine may move there from ``state``; IllegalMove else."""
    if target not in ENGINE_MOVES.get(state, frozenset()):
        raise IllegalMove(f"no move from {state} to {target}")
    return target


def finished(state: str) -> bool:
    """Whether another operation may start on the instance (FAILED_TEMP is not finished)."""
    return state in FINAL
