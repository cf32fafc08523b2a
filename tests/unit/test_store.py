"""central.store.Store: WAL, schema versioning, migrations run once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from central.store import MIGRATIONS, Store, now


def test_wal_mode_and_pragmas(tmp_path: Path) -> None:
    st = Store(tmp_path / "sub" / "central.db")
    assert st.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert st.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    st.close()


def test_schema_version_is_number_of_migrations(tmp_path: Path) -> None:
    st = Store(tmp_path / "central.db")
    assert st.schema_version == len(MIGRATIONS)
    assert {"sites", "servers", "desired_docs", "settings"} <= set(st.db.table_names())
    st.close()


def test_reopen_keeps_data_and_does_not_rerun_migrations(tmp_path: Path) -> None:
    path = tmp_path / "central.db"
    st = Store(path)
    with st.transaction():
        st.db["sites"].insert({"name": "edge-a", "created_at": now()})
        st.db["settings"].insert({"key": "stop_grace_s", "value": "2.0"})
    st.close()

    again = Store(path)  # _v1 would fail with "table sites already exists" if re-run
    assert again.schema_version == len(MIGRATIONS)
    assert [r["name"] for r in again.query("SELECT name FROM sites")] == ["edge-a"]
    assert again.one("SELECT value FROM settings WHERE key = 'stop_grace_s'") == {"value": "2.0"}
    again.migrate()
    assert again.schema_version == len(MIGRATIONS)
    assert len(again.query("SELECT * FROM sites")) == 1
    again.close()


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    st = Store(tmp_path / "central.db")
    try:
        with st.transaction():
            st.db["sites"].insert({"name": "edge-a", "created_at": now()})
            raise ValueError("boom")
    except ValueError:
        pass
    assert st.query("SELECT * FROM sites") == []
    st.close()


def test_foreign_key_enforced(tmp_path: Path) -> None:
    st = Store(tmp_path / "central.db")
    with pytest.raises(sqlite3.IntegrityError):
        st.db["desired_docs"].insert(
            {"site": "ghost", "generation": 1, "document": "{}", "created_at": now()}
        )
    st.close()
