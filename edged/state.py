"""edged's local state: the last accepted desired document and the last observation.

SQLite (WAL, ``synchronous=FULL``): a document is on disk, fsynced, when
:meth:`LocalState.accept` returns, which is what lets edged acknowledge it and
keep running it after a crash or with central gone.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from edged.wire import next_epoch

F = TypeVar("F", bound=Callable[..., Any])


def locked(method: F) -> F:
    """Run a LocalState method under its lock: the connection is shared by threads."""

    @functools.wraps(method)
    def wrapper(self: LocalState, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class LocalState:
    """The site's durable memory."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        # The event loop and the reconcile worker thread share one connection;
        # without this lock their transactions could interleave.
        self.lock = threading.RLock()
        self.conn = sqlite3.connect(str(state_dir / "edged.db"), check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.db = sqlite_utils.Database(self.conn)
        if "desired" not in self.db.table_names():
            with self.db.atomic():
                self.db["desired"].create(
                    {"id": int, "generation": int, "document": str, "accepted_at": float},
                    pk="id",
                )
                self.db["observed"].create(
                    {"id": int, "generation": int, "report": str, "at": float}, pk="id"
                )
                self.db["meta"].create({"key": str, "value": str}, pk="key")
        # Site operators' local power overrides (edged/overrides.py); added after v1.
        if "power_overrides" not in self.db.table_names():
            self.db["power_overrides"].create(
                {
                    "server_id": str,
                    "power": str,
                    "generation": int,
                    "against": str,
                    "made_at": float,
                    "made_by": str,
                },
                pk="server_id",
                if_not_exists=True,
            )

        # Host resources held by a server or port: dedicated CPUs, SR-IOV VFs.
        if "claims" not in self.db.table_names():
            self.db["claims"].create(
                {"kind": str, "key": str, "owner": str, "detail": str},
                pk=("kind", "key"),
                if_not_exists=True,
            )

    # -- claims ----------------------------------------------------------------------

    @locked
    def claims(self, kind: str) -> dict[str, tuple[str, str]]:
        """``key -> (owner, detail)`` of every claim of ``kind`` (``cpu``, ``vf``)."""
        rows = self.conn.execute(
            "SELECT key, owner, detail FROM claims WHERE kind = ?", (kind,)
        ).fetchall()
        return {key: (owner, detail) for key, owner, detail in rows}

    @locked
    def claim(self, kind: str, keys: dict[str, str], owner: str) -> None:
        """Record ``owner``'s claim of ``keys`` (key -> detail), replacing its old ones."""
        with self.db.atomic():
            self.conn.execute("DELETE FROM claims WHERE kind = ? AND owner = ?", (kind, owner))
            self.conn.executemany(
                "INSERT OR REPLACE INTO claims (kind, key, owner, detail) VALUES (?, ?, ?, ?)",
                [(kind, key, owner, detail) for key, detail in keys.items()],
            )

    @locked
    def release(self, kind: str, owners: list[str]) -> None:
        """Forget every claim of ``kind`` held by ``owners``."""
        with self.db.atomic():
            self.conn.executemany(
                "DELETE FROM claims WHERE kind = ? AND owner = ?", [(kind, o) for o in owners]
            )

    # -- desired ---------------------------------------------------------------------

    @property
    @locked
    def generation(self) -> int:
        """Generation of the document held (0 when none)."""
        row = self.conn.execute("SELECT generation FROM desired WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    @locked
    def document(self) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT document FROM desired WHERE id = 1").fetchone()
        return json.loads(row[0]) if row else None

    @locked
    def accept(self, generation: int, document: dict[str, Any]) -> bool:
        """Store ``document`` durably if it is newer than the one held; True if stored."""
        with self.db.atomic():
            if generation <= self.generation:
                return False
            self.db["desired"].upsert(
                {
                    "id": 1,
                    "generation": generation,
                    "document": json.dumps(document, separators=(",", ":")),
                    "accepted_at": time.time(),
                },
                pk="id",
            )
        return True

    # -- observed --------------------------------------------------------------------

    @locked
    def record_observation(self, generation: int, report: dict[str, Any]) -> None:
        self.db["observed"].upsert(
            {"id": 1, "generation": generation, "report": json.dumps(report), "at": time.time()},
            pk="id",
        )

    @locked
    def last_observation(self) -> tuple[int, dict[str, Any]] | None:
        row = self.conn.execute("SELECT generation, report FROM observed WHERE id = 1").fetchone()
        return (int(row[0]), json.loads(row[1])) if row else None

    # -- epoch -----------------------------------------------------------------------

    @locked
    def new_epoch(self) -> int:
        """A channel epoch above every one this site used before (see edged.wire)."""
        with self.db.atomic():
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
            epoch = next_epoch(int(row[0]) if row else None)
            self.db["meta"].upsert({"key": "epoch", "value": str(epoch)}, pk="key")
        return epoch

    @locked
    def close(self) -> None:
        self.conn.close()
