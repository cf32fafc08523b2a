"""Hybrid logical clock stamps: text that sorts in causal order, the same on every replica.

A stamp is ``<wall ms, 12 hex><counter, 6 hex>-<node>``: comparing two stamps
as strings compares wall time, then the counter, then the node id, so two
replicas that wrote "at the same time" still agree on one winner.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

WALL_DIGITS = 12
COUNTER_DIGITS = 6
MAX_COUNTER = 16**COUNTER_DIGITS - 1
NODE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
STAMP = re.compile(r"^([0-9a-f]{12})([0-9a-f]{6})-([A-Za-z0-9._:-]{1,64})$")


class Stamp(NamedTuple):
    wall_ms: int
    counter: int
    node: str


def format_stamp(wall_ms: int, counter: int, node: str) -> str:
    return f"{wall_ms:0{WALL_DIGITS}x}{counter:0{COUNTER_DIGITS}x}-{node}"


def parse(stamp: str) -> Stamp:
    """The parts of a stamp; ValueError saying what is wrong with anything else."""
    if not isinstance(stamp, str):
        raise ValueError(f"an HLC stamp must be text, got {type(stamp).__name__}")
    match = STAMP.match(stamp)
    if match is None:
        raise ValueError(
            f"not an HLC stamp: {stamp[:100]!r} (want 12 hex digits of wall ms, "
            "6 hex digits of counter, '-', node id)"
        )
    return Stamp(int(match.group(1), 16), int(match.group(2), 16), match.group(3))


class HybridClock:
    """A node's clock: ``now()`` for local changes, ``observe()`` for stamps seen from others."""

    def __init__(self, node: str, wall: Callable[[], float] = time.time) -> None:
        if not NODE.match(node):
            raise ValueError(f"HLC node id must match {NODE.pattern}, got {node!r}")
        self.node = node
        self._wall = wall
        self._last = (0, 0)
        self._lock = threading.Lock()

    def _physical(self) -> int:
        return int(self._wall() * 1000)

    def now(self) -> str:
        """A stamp later than every stamp this clock issued or observed."""
        with self._lock:
            wall, counter = self._last
            physical = self._physical()
            wall, counter = (physical, 0) if physical > wall else (wall, counter + 1)
            if counter > MAX_COUNTER:  # 16M changes in one ms: borrow the next ms
                wall, counter = wall + 1, 0
            self._last = (wall, counter)
            return format_stamp(wall, counter, self.node)

    def observe(self, stamp: str) -> None:
        """Move past ``stamp`` so later local stamps sort after it."""
        seen = parse(stamp)
        with self._lock:
            if (seen.wall_ms, seen.counter) > self._last:
                self._last = (seen.wall_ms, seen.counter)
