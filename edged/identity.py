"""The site's identity cache: the snapshot tokens are validated against, offline.

Holds the :class:`~edged.tokens.IdentitySnapshot` of the ``identity`` section
of the last accepted desired-state document. It is built at start from the
document already in :class:`~edged.state.LocalState` (so local requests are
authorised from the first second, central reachable or not) and rebuilt each
time a newer document is accepted. A malformed section never stops the
daemon: the previous snapshot stays, and the problem is logged and counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

from edged.tokens import IdentitySnapshot, Principal, TokenError, verify

log = logging.getLogger(__name__)


class IdentityCache:
    """The current identity snapshot and offline token validation against it."""

    def __init__(self) -> None:
        # Empty until a document brings one: every token is refused (unknown key).
        self.snapshot = IdentitySnapshot()
        self.generation = 0  # generation of the document the snapshot came from
        self.counters: Counter[str] = Counter()

    def load(self, generation: int, document: Mapping[str, Any] | None) -> bool:
        """Take the ``identity`` section of an accepted document; False if it was refused."""
        section = (document or {}).get("identity") if isinstance(document, Mapping) else None
        if section is None:
            # A document without identity authorises nobody: fail closed.
            self.snapshot, self.generation = IdentitySnapshot(), generation
            self.counters["snapshot_absent"] += 1
            log.warning("generation %d has no identity section: refusing all tokens", generation)
            return True
        try:
            snapshot = IdentitySnapshot.from_section(section)
        except ValueError as exc:
            self.counters["snapshot_malformed"] += 1
            log.error(
                "generation %d: %s; keeping the snapshot of generation %d",
                generation,
                exc,
                self.generation,
            )
            return False
        self.snapshot, self.generation = snapshot, generation
        self.counters["snapshot_loaded"] += 1
        log.info(
            "identity snapshot of generation %d: %d users, %d projects, %d keys",
            generation,
            len(snapshot.users),
            len(snapshot.projects),
            len(snapshot.keys),
        )
        return True

    def validate(self, token: str, now: float | None = None) -> Principal:
        """The principal ``token`` speaks for; TokenError (never anything else) if refused."""
        try:
            principal = verify(token, self.snapshot, now)
        except TokenError as exc:
            self.counters[f"refused_{exc.reason}"] += 1
            raise
        except Exception:  # a library surprise is still a refusal, never a 500
            self.counters["refused_malformed"] += 1
            log.exception("token validation failed unexpectedly")
            raise TokenError("malformed", "token cannot be decoded") from None
        self.counters["accepted"] += 1
        return principal

    def stats(self) -> dict[str, Any]:
        snap = self.snapshot
        return {
            "generation": self.generation,
            "users": len(snap.users),
            "projects": len(snap.projects),
            "keys": len(snap.keys),
            "counters": dict(self.counters),
        }
