"""Durable local power overrides: what a site operator asked for while central may be away.

Stored in the site's ``edged.db`` (table ``power_overrides``, created by
:class:`~edged.state.LocalState`), one row per server, fsynced like the
document, so an override survives an edged restart. Which overrides still
hold is decided purely by :func:`edged.reconcile.apply_overrides`.
"""

from __future__ import annotations

import time

from edged.reconcile import PowerOverride
from edged.state import LocalState

_COLUMNS = "server_id, power, generation, against, made_at, made_by"


class OverrideStore:
    """The ``power_overrides`` table of one LocalState."""

    def __init__(self, state: LocalState) -> None:
        self.state = state

    def all(self) -> list[PowerOverride]:
        with self.state.lock:
            rows = self.state.conn.execute(
                f"SELECT {_COLUMNS} FROM power_overrides ORDER BY server_id"
            ).fetchall()
        return [
            PowerOverride(
                server_id=str(r[0]),
                power=r[1],
                generation=int(r[2]),
                against=r[3],
                made_at=float(r[4]),
                made_by=str(r[5]),
            )
            for r in rows
        ]

    def set(self, override: PowerOverride) -> None:
        with self.state.lock, self.state.conn:
            self.state.conn.execute(
                f"INSERT OR REPLACE INTO power_overrides ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    override.server_id,
                    override.power,
                    override.generation,
                    override.against,
                    override.made_at or time.time(),
                    override.made_by,
                ),
            )

    def drop(self, server_ids: list[str]) -> None:
        if not server_ids:
            return
        with self.state.lock, self.state.conn:
            self.state.conn.executemany(
                "DELETE FROM power_overrides WHERE server_id = ?", [(s,) for s in server_ids]
            )
