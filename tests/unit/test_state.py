"""edged.state.LocalState: durable desired document, observation and epochs."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from edged.state import LocalState

DOC = {"site": "edge-a", "servers": [{"id": "s1", "name": "vm"}], "settings": {"x": 1.5}}


def test_empty_state(tmp_path: Path) -> None:
    st = LocalState(tmp_path / "st")
    assert st.generation == 0
    assert st.document() is None
    assert st.last_observation() is None
    st.close()


def test_accept_newer_only(tmp_path: Path) -> None:
    st = LocalState(tmp_path)
    assert st.accept(3, {"g": 3})
    assert st.generation == 3
    assert not st.accept(3, {"g": "same generation"})
    assert not st.accept(2, {"g": 2})
    assert not st.accept(0, {"g": 0})
    assert st.document() == {"g": 3}
    assert st.accept(10, DOC)
    assert (st.generation, st.document()) == (10, DOC)
    st.close()


def test_survives_reopen(tmp_path: Path) -> None:
    st = LocalState(tmp_path)
    assert st.accept(5, DOC)
    st.record_observation(5, {"servers": {"s1": {"state": "running"}}})
    st.close()

    again = LocalState(tmp_path)
    assert again.generation == 5
    assert again.document() == DOC
    assert again.last_observation() == (5, {"servers": {"s1": {"state": "running"}}})
    assert not again.accept(4, {})
    assert again.accept(6, {})
    again.close()
    third = LocalState(tmp_path)
    assert (third.generation, third.document()) == (6, {})
    third.close()


def test_observation_roundtrip(tmp_path: Path) -> None:
    st = LocalState(tmp_path)
    report = {"servers": {"a": {"state": "error", "reason": "image \u00e9 missing"}}, "n": [1, 2]}
    st.record_observation(7, report)
    assert st.last_observation() == (7, report)
    st.record_observation(8, {})
    assert st.last_observation() == (8, {})
    st.close()


def test_new_epoch_strictly_increasing_across_reopen(tmp_path: Path) -> None:
    st = LocalState(tmp_path)
    epochs = [st.new_epoch() for _ in range(5)]
    st.close()
    for _ in range(3):
        st = LocalState(tmp_path)
        epochs.append(st.new_epoch())
        st.close()
    assert all(b > a for a, b in itertools.pairwise(epochs))


def test_new_epoch_above_stored_future_epoch(tmp_path: Path) -> None:
    st = LocalState(tmp_path)
    future = time.time_ns() + 3600 * 10**9
    st.db["meta"].upsert({"key": "epoch", "value": str(future)}, pk="key")
    st.close()  # e.g. written before the clock was stepped back
    st = LocalState(tmp_path)
    assert st.new_epoch() == future + 1
    assert st.new_epoch() == future + 2
    st.close()


def test_wal_mode(tmp_path: Path) -> None:
    st = LocalState(tmp_path)
    assert st.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    st.close()
