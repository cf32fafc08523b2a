"""Failed-login limiting per user name: at most N failures in a sliding window."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class LoginLimiter:
    """Counts failures per name; once ``max_failures`` fell within ``window_s``,
    further attempts are refused until the oldest of them leaves the window."""

    def __init__(
        self, max_failures: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, name: str) -> deque[float]:
        times = self._failures.get(name)
        if times is None:
            return deque()
        cutoff = self.clock() - self.window_s
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._failures[name]
        return times

    def retry_after(self, name: str) -> float | None:
        """Seconds until ``name`` may try again, or None when it may try now."""
        times = self._recent(name)
        if len(times) < self.max_failures:
            return None
        return max(0.0, times[0] + self.window_s - self.clock())

    def failed(self, name: str) -> None:
        self._recent(name)
        self._failures.setdefault(name, deque()).append(self.clock())
        if len(self._failures) > 100_000:  # bound memory under a spray of names
            self._failures.pop(next(iter(self._failures)))

    def succeeded(self, name: str) -> None:
        self._failures.pop(name, None)
