"""The SOL 003 operation state machine: every allowed move, and the illegal ones."""

from __future__ import annotations

import pytest

from central.lcm.states import ENGINE_MOVES, IllegalMove, after_request, engine_move, finished

STATES = ["STARTING", "PROCESSING", "COMPLETED", "FAILED_TEMP", "FAILED", "ROLLING_BACK",
          "ROLLED_BACK"]  # fmt: skip


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize(
    ("request_", "target"), [("retry", "PROCESSING"), ("rollback", "ROLLING_BACK"),
                             ("fail", "FAILED")]
)  # fmt: skip
def test_task_requests_only_from_failed_temp(state: str, request_: str, target: str) -> None:
    if state == "FAILED_TEMP":
        assert after_request(state, request_, "INSTANTIATE") == target
    else:
        with pytest.raises(IllegalMove, match="only from FAILED_TEMP"):
            after_request(state, request_, "INSTANTIATE")


def test_terminate_scale_in_and_heal_are_not_rolled_back() -> None:
    for operation in ("TERMINATE", "SCALE_IN", "HEAL"):
        with pytest.raises(IllegalMove, match="cannot be rolled back"):
            after_request("FAILED_TEMP", "rollback", operation)
    assert after_request("FAILED_TEMP", "rollback", "SCALE") == "ROLLING_BACK"
    assert after_request("FAILED_TEMP", "retry", "TERMINATE") == "PROCESSING"


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("target", STATES)
def test_engine_moves(state: str, target: str) -> None:
    allowed = {
        ("STARTING", "PROCESSING"), ("STARTING", "FAILED_TEMP"),
        ("PROCESSING", "COMPLETED"), ("PROCESSING", "FAILED_TEMP"),
        ("ROLLING_BACK", "ROLLED_BACK"), ("ROLLING_BACK", "FAILED_TEMP"),
    }  # fmt: skip
    assert {(s, t) for s, ts in ENGINE_MOVES.items() for t in ts} == allowed
    if (state, target) in allowed:
        assert engine_move(state, target) == target
    else:
        with pytest.raises(IllegalMove):
            engine_move(state, target)


def test_finished_states_free_the_instance() -> None:
    assert {s for s in STATES if finished(s)} == {"COMPLETED", "FAILED", "ROLLED_BACK"}
