"""How much compute shadow evaluation may take from the pod it shares.

Two limits, both needed: a token bucket bounds evaluations per second (steady cost and
bursts), and a cap on the share of wall time spent inferring catches the case the
bucket cannot see — a GPU shared with the primary model slowing every evaluation down.
The clock is injectable so the limits are testable without waiting.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class ComputeBudget:
    """Thread-safe: the sampler asks, the inference worker reports time spent."""

    def __init__(self, rate_per_second: float, burst: float, max_busy_share: float,
                 window_seconds: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_second <= 0 or burst < 1 or not 0 < max_busy_share <= 1:
            raise ValueError("rate > 0, burst >= 1 and 0 < max_busy_share <= 1 are required")
        self.rate = rate_per_second
        self.burst = burst
        self.max_busy_share = max_busy_share
        self.window = window_seconds
        self._clock = clock
        self._tokens = burst
        self._refilled_at = clock()
        self._busy: deque[tuple[float, float]] = deque()  # (ended at, seconds busy)
        self._busy_total = 0.0
        self._lock = threading.Lock()

    def busy_share(self) -> float:
        """Share of the last `window` seconds spent evaluating."""
        with self._lock:
            self._forget(self._clock())
            return self._busy_total / self.window

    def try_acquire(self) -> bool:
        """Take one evaluation's token if the budget allows it now."""
        with self._lock:
            now = self._clock()
            self._forget(now)
            if self._busy_total / self.window >= self.max_busy_share:
                return False
            self._tokens = min(self.burst, self._tokens + (now - self._refilled_at) * self.rate)
            self._refilled_at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True

    def spent(self, seconds: float) -> None:
        """Report time the worker just spent evaluating."""
        with self._lock:
            now = self._clock()
            self._busy.append((now, seconds))
            self._busy_total += seconds
            self._forget(now)

    def _forget(self, now: float) -> None:
        while self._busy and self._busy[0][0] < now - self.window:
            self._busy_total -= self._busy.popleft()[1]
