"""The object index: buckets and the winning version of every key, in SQLite (WAL).

One row per (bucket, key) holds the version that wins (highest HLC), a
tombstone included, so an old copy arriving later cannot bring a deleted key
back. ``seq`` is a per-store counter bumped on every change, local or from a
replica: "what changed since seq N" is one indexed query.

Writes go through one connection, one transaction at a time. Reads outside a
transaction use a connection of the reading thread's own: WAL lets them read
the last committed state while a commit (and its fsync) is under way, so a
look-up never waits for one.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlite_utils

SCHEMA_VERSION = 1


def _v1(db: sqlite_utils.Database) -> None:
    db["buckets"].create(
        {
            "name": str,
            "project_id": str,
            "created": float,
            "policy": str,  # JSON
            "orphaned": int,  # 1: the site's document no longer lists it (data kept)
        },
        pk="name",
        not_null={"project_id", "created", "policy", "orphaned"},
        defaults={"policy": "{}", "orphaned": 0},
    )
    db["buckets"].create_index(["project_id"])
    db["versions"].create(
        {
            "bucket": str,
            "key": str,
            "hlc": str,
            "etag": str,  # sha256 hex of the content; "" for a tombstone
            "size": int,
            "meta": str,  # JSON {name: value}
            "deleted": int,
            "blob_id": str,  # NULL for a tombstone
            "seq": int,
            "corrupt": int,
            "modified": float,
            "scrubbed": float,
        },
        pk=("bucket", "key"),
        not_null={"hlc", "etag", "size", "meta", "deleted", "seq", "corrupt", "modified"},
        defaults={"deleted": 0, "corrupt": 0, "scrubbed": 0.0},
    )
    db["versions"].create_index(["bucket", "seq"], unique=True)
    db["versions"].create_index(["corrupt"])
    db["versions"].create_index(["scrubbed"])
    db["counters"].create({"name": str, "value": int}, pk="name")
    db["counters"].insert({"name": "seq", "value": 0})


class Index:
    """The object index of one store (one SQLite file)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self.db = sqlite_utils.Database(self.conn)
        self._lock = threading.RLock()
        self._writing: int | None = None  # the thread inside transaction()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        if int(self.conn.execute("PRAGMA user_version").fetchone()[0]) < SCHEMA_VERSION:
            with self.transaction():
                _v1(self.db)
                self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic, serialised unit of work (``BEGIN IMMEDIATE`` .. ``COMMIT``)."""
        with self._lock:
            outer = self._writing
            self._writing = threading.get_ident()
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self.conn
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise
                self.conn.execute("COMMIT")
            finally:
                self._writing = outer

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection (opened on its first read)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._readers_lock:
                if self._closed:
                    raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
                conn = sqlite3.connect(
                    str(self.path), check_same_thread=False, isolation_level=None
                )
                conn.execute("PRAGMA busy_timeout=5000")
                conn.execute("PRAGMA query_only=1")
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    def query(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[dict]:
        """Rows of a read; inside this thread's transaction it sees that transaction's writes."""
        if self._writing == threading.get_ident():
            with self._lock:
                cur = self.conn.execute(sql, params)
        else:
            cur = self._reader().execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def one(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> dict | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def next_seq(self, conn: sqlite3.Connection) -> int:
        """The next change number (inside a transaction)."""
        conn.execute("UPDATE counters SET value = value + 1 WHERE name = 'seq'")
        return int(conn.execute("SELECT value FROM counters WHERE name = 'seq'").fetchone()[0])

    def version(self, bucket: str, key: str) -> dict | None:
        return self.one("SELECT * FROM versions WHERE bucket = ? AND key = ?", (bucket, key))

    def put_version(self, conn: sqlite3.Connection, row: dict[str, Any]) -> int:
        """Store ``row`` as the key's version with a new seq (inside a transaction)."""
        seq = self.next_seq(conn)
        fields = {**row, "seq": seq, "modified": time.time(), "corrupt": 0, "scrubbed": 0.0}
        fields["meta"] = json.dumps(row["meta"], sort_keys=True, separators=(",", ":"))
        names = ", ".join(fields)
        marks = ", ".join(f":{n}" for n in fields)
        conn.execute(f"INSERT OR REPLACE INTO versions ({names}) VALUES ({marks})", fields)
        return seq

    def close(self) -> None:
        with self._lock, self._readers_lock:
            self._closed = True
            for conn in self._readers:
                conn.close()
            self._readers.clear()
            self.conn.close()
