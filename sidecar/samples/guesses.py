"""Limits on wrong admin-token guesses: per client address and in all, over a window.

A client address that made `admin_guess_limit` wrong guesses in the current window, or
all addresses together `admin_guess_limit_total`, is answered 429 with `Retry-After`
until that window ends, without the token being compared: the right token waits too,
so guessing faster cannot find it sooner. A window begins at the first wrong guess
after the last one ended. The table of addresses is bounded; when it is full the
oldest window is forgotten (the total limit still holds).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_ADDRESSES = 4096


@dataclass(frozen=True, slots=True)
class GuessSettings:
    """(`settings.of(GuessSettings, config)`)"""

    admin_guess_limit: int
    admin_guess_limit_total: int
    admin_guess_window: float


DEFAULT_GUESSES = GuessSettings(20, 100, 60.0)


class _Window:
    __slots__ = ("failures", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.failures = 0


class GuessLimiter:
    def __init__(self, settings: GuessSettings = DEFAULT_GUESSES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._windows: dict[str, _Window] = {}  # oldest window first
        self._total = _Window(-math.inf)

    def _current(self, window: _Window | None, now: float) -> _Window | None:
        if window is None or now - window.start >= self._settings.admin_guess_window:
            return None
        return window

    def retry_after(self, address: str) -> int | None:
        """Whole seconds until `address` may guess again, or None: it may now."""
        now = self._clock()
        waits = []
        for window, limit in ((self._windows.get(address), self._settings.admin_guess_limit),
                              (self._total, self._settings.admin_guess_limit_total)):
            current = self._current(window, now)
            if current is not None and current.failures >= limit:
                waits.append(current.start + self._settings.admin_guess_window - now)
        return max(1, math.ceil(max(waits))) if waits else None

    def failed(self, address: str) -> None:
        """A wrong guess from `address`."""
        now = self._clock()
        if self._current(self._total, now) is None:
            self._total = _Window(now)
        self._total.failures += 1
        window = self._current(self._windows.get(address), now)
        if window is None:
            self._windows.pop(address, None)
            if len(self._windows) >= MAX_ADDRESSES:
                self._forget(now)
            window = self._windows[address] = _Window(now)
        window.failures += 1

    def _forget(self, now: float) -> None:
        for address in [a for a, w in self._windows.items() if self._current(w, now) is None]:
            del self._windows[address]
        while len(self._windows) >= MAX_ADDRESSES:
            del self._windows[next(iter(self._windows))]
