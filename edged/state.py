"""edged's local state: the last accepted desired document and the last observation.

SQLite (WAL, ``synchronous=FULL``): a document is on disk, fsynced, when
:meth:`LocalState.accept` returns, which is what lets edged acknowledge it and
keep running it after a crash or with central gone.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlite_utils

from edged.wire import next_epoch


class LocalState:
    """The site's durable memory."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
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

    # -- desired ---------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """Generation of the document held (0 when none)."""
        row = self.conn.execute("SELECT generation FROM desired WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def document(self) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT document FROM desired WHERE id = 1").fetchone()
        return json.loads(row[0]) if row else None

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

    def record_observation(self, generation: int, report: dict[str, Any]) -> None:
        self.db["observed"].upsert(
            {"id": 1, "generation": generation, "report": json.dumps(report), "at": time.time()},
            pk="id",
        )

    def last_observation(self) -> tuple[int, dict[str, Any]] | None:
        row = self.conn.execute("SELECT generation, report FROM observed WHERE id = 1").fetchone()
        return (int(row[0]), json.loads(row[1])) if row else None

    # -- epoch -----------------------------------------------------------------------

    def new_epoch(self) -> int:
        """A channel epoch above every one this site used before (see edged.wire)."""
        with self.db.atomic():
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
            epoch = next_epoch(int(row[0]) if row else None)
            self.db["meta"].upsert({"key": "epoch", "value": str(epoch)}, pk="key")
        return epoch

    def close(self) -> None:
        self.conn.close()
