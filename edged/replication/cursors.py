"""Where each replication stream stands, kept in a small SQLite file at the sender.

One row per (bucket, target): ``seq``, the store sequence number up to which
every change has been acknowledged by the target, plus the last success and
the last error. A restarted daemon resumes each stream from its ``seq``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS cursors (
    bucket TEXT NOT NULL,
    target TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    last_success REAL,
    last_error TEXT,
    last_error_at REAL,
    PRIMARY KEY (bucket, target)
)
"""


@dataclass(frozen=True)
class Cursor:
    bucket: str
    target: str
    seq: int = 0
    last_success: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None


class CursorStore:
    """The cursors of one site's senders (thread-safe; one connection, WAL)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(SCHEMA)
        self._lock = threading.Lock()

    def get(self, bucket: str, target: str) -> Cursor:
        with self._lock:
            row = self._db.execute(
                "SELECT seq, last_success, last_error, last_error_at FROM cursors "
                "WHERE bucket = ? AND target = ?",
                (bucket, target),
            ).fetchone()
        return Cursor(bucket, target, *row) if row else Cursor(bucket, target)

    def advance(self, bucket: str, target: str, seq: int) -> None:
        """Every change up to ``seq`` is at the target (durable before the next send)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO cursors (bucket, target, seq, last_success) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (bucket, target) DO UPDATE SET "
                "seq = max(seq, excluded.seq), last_success = excluded.last_success",
                (bucket, target, seq, time.time()),
            )

    def succeeded(self, bucket: str, target: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO cursors (bucket, target, last_success) VALUES (?, ?, ?) "
                "ON CONFLICT (bucket, target) DO UPDATE SET last_success = excluded.last_success",
                (bucket, target, time.time()),
            )

    def failed(self, bucket: str, target: str, error: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO cursors (bucket, target, last_error, last_error_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (bucket, target) DO UPDATE SET "
                "last_error = excluded.last_error, last_error_at = excluded.last_error_at",
                (bucket, target, error[:500], time.time()),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
