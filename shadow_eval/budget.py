"""How much compute shadow evaluation may take from the pod it shares.

Two limits, both needed: a token bucket bounds evaluations per second (steady cost and
bursts), and a cap on the share of wall time spent inferring catches the case the
bucket cannot see — a GPU shared with the primary model slowing every evaluation down.

Busy time is counted as it is spent: each evaluation is an interval, the window holds
only the part of each interval that falls inside it, and a run still going counts up to
now. Counting a run's whole duration when it ends would put time spent before the window
into it and let the share pass 1; so a worker that infers all the time is busy exactly
1.0, and a cap of 1 (no cap) never refuses. The clock is injectable so the limits are
testable without waiting.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager


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
        self._busy: deque[tuple[float, float]] = deque()  # (started, ended), oldest first
        self._running_since: float | None = None  # a run in progress, counted up to now
        self._lock = threading.Lock()

    def busy_share(self) -> float:
        """Share of the last `window` seconds spent evaluating, the running one included."""
        with self._lock:
            return self._share(self._clock())

    def try_acquire(self) -> bool:
        """Take one evaluation's token if the budget allows it now."""
        with self._lock:
            now = self._clock()
            if self.max_busy_share < 1 and self._share(now) >= self.max_busy_share:
                return False
            self._tokens = min(self.burst, self._tokens + (now - self._refilled_at) * self.rate)
            self._refilled_at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True

    @contextmanager
    def running(self) -> Iterator[None]:
        """Count the block as busy time, from its start, while it runs."""
        with self._lock:
            self._running_since = self._clock()
        try:
            yield
        finally:
            with self._lock:
                started, self._running_since = self._running_since, None
                assert started is not None
                self._busy.append((started, self._clock()))

    def spent(self, seconds: float) -> None:
        """Report time the worker just spent evaluating: the `seconds` up to now."""
        with self._lock:
            now = self._clock()
            self._busy.append((now - seconds, now))

    def _share(self, now: float) -> float:
        since = now - self.window
        while self._busy and self._busy[0][1] <= since:
            self._busy.popleft()
        busy = sum(ended - max(started, since) for started, ended in self._busy)
        if self._running_since is not None:
            busy += now - max(self._running_since, since)
        return busy / self.window
