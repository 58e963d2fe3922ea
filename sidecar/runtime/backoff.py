"""Retrying something that failed without hammering it: wait, twice as long after each
failure up to a cap, and start over after a success. The remote reference model and the
sample store's writer both use it; the clock is injectable so tests need not wait."""

from __future__ import annotations

import time
from collections.abc import Callable


class RetryBackoff:
    """After a failure, wait before trying again, twice as long each time up to a cap;
    the first success resets it."""

    def __init__(self, first: float = 0.5, cap: float = 8.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.first, self.cap, self._clock = first, cap, clock
        self.delay = 0.0
        self.retry_at = 0.0

    @property
    def failing(self) -> bool:
        return self.delay > 0

    def allows(self) -> bool:
        """Whether a request may go now (healthy, or the wait is over)."""
        return not self.failing or self._clock() >= self.retry_at

    def failed(self) -> float:
        self.delay = min(self.cap, self.delay * 2 if self.delay else self.first)
        self.retry_at = self._clock() + self.delay
        return self.delay

    def succeeded(self) -> None:
        self.delay = 0.0
