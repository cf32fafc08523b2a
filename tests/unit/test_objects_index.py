"""The object index: reads outside a transaction do not wait for one (WAL read connections)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from edged.objects.index import Index

ADD = (
    "INSERT INTO buckets (name, project_id, created, policy, orphaned) VALUES (?, 'p', 0, '{}', 0)"
)
NAMES = "SELECT name FROM buckets ORDER BY name"


def test_a_read_sees_the_committed_state_while_another_thread_writes(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.db")
    with index.transaction() as conn:
        conn.execute(ADD, ("old",))
    seen: dict[str, list[dict]] = {}
    read = threading.Event()

    def reader() -> None:
        seen["other"] = index.query(NAMES)
        read.set()

    with index.transaction() as conn:
        conn.execute(ADD, ("new",))
        seen["own"] = index.query(NAMES)  # inside the transaction: its own write
        thread = threading.Thread(target=reader)
        thread.start()
        # With one shared, locked connection the reader would wait for this
        # transaction, which waits for the reader: only a deadlock guard here.
        assert read.wait(30), "a read waited for another thread's transaction"
    thread.join()
    assert seen["own"] == [{"name": "new"}, {"name": "old"}]
    assert seen["other"] == [{"name": "old"}]  # not the uncommitted row
    assert index.query(NAMES) == [{"name": "new"}, {"name": "old"}]  # after the commit
    index.close()


def test_read_connections_are_read_only_and_closed_with_the_index(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.db")
    with pytest.raises(sqlite3.OperationalError):
        index.query("DELETE FROM buckets RETURNING name")  # outside a transaction: refused
    index.close()
    with pytest.raises(sqlite3.ProgrammingError):
        index.query(NAMES)
