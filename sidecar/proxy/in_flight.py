"""What a data port has in flight, for draining it at SIGTERM: both ports count their
requests (or calls) here and wait, bounded, for the count to reach zero."""

from __future__ import annotations

import asyncio
import contextlib


class InFlight:
    """A count of requests running, and an event set while it is zero."""

    __slots__ = ("_count", "_idle")

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def started(self) -> None:
        self._count += 1
        self._idle.clear()

    def ended(self) -> None:
        self._count = max(self._count - 1, 0)
        if not self._count:
            self._idle.set()

    async def drained(self, grace: float) -> None:
        """Until nothing is in flight, or `grace` seconds have passed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
