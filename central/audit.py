"""The audit trail: every mutating API call and every refused authentication.

Each event is a row in the ``audit`` table and a JSON line appended to the
audit file. Events name who, in which project, did what to which target, with
what result, the request id and the source address — never a password, a
secret or a token (request bodies are not recorded at all).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from central.store import Store, now

log = logging.getLogger(__name__)

MAX_LIMIT = 1000


@dataclass(frozen=True)
class AuditEvent:
    user: str
    project: str
    action: str
    target: str
    result: str
    request_id: str
    source: str
    at: float = 0.0


class AuditLog:
    """Writes events to the store and the JSON-lines file; reads them back."""

    def __init__(self, store: Store, path: Path) -> None:
        self.store = store
        self.path = path
        self.failures = 0
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, event: AuditEvent) -> None:
        """Record one event; a failure is logged and counted, never raised."""
        row = asdict(event)
        row["at"] = event.at or now()
        row = {k: (str(v)[:500] if isinstance(v, str) else v) for k, v in row.items()}
        try:
            with self.store.transaction():
                self.store.db["audit"].insert(row)
        except Exception:
            self.failures += 1
            log.exception("audit: writing the event to the store failed")
        try:
            line = json.dumps(row, separators=(",", ":"), sort_keys=True) + "\n"
            with self._lock, self.path.open("a", encoding="utf-8") as f:
                f.write(line)
        except OSError as exc:
            self.failures += 1
            log.error("audit: appending to %s failed: %s", self.path, exc)

    def query(
        self,
        since: float | None = None,
        user: str | None = None,
        action: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Newest events first, filtered."""
        where, params = [], []
        if since is not None:
            where.append("at >= ?")
            params.append(since)
        if user:
            where.append("user = ?")
            params.append(user)
        if action:
            where.append("action = ?")
            params.append(action)
        sql = "SELECT * FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(max(1, min(limit, MAX_LIMIT)))
        return self.store.query(sql, tuple(params))
