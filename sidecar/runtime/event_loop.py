"""The event loop lookout's own process runs on (the admin port, Envoy's supervision)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def run_event_loop(event_loop: str, main: Coroutine[Any, Any, None]) -> None:
    """`main` on uvloop (the `event_loop` option: auto falls back to asyncio without
    it, asyncio never uses it)."""
    if event_loop in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                main.close()
                raise
        else:
            uvloop.run(main)
            return
    asyncio.run(main)
