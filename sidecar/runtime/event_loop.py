"""The event loop every request-path process runs on, and the interpreter settings for
it: the main process and the extra request-path processes start theirs alike."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Coroutine
from typing import Any

from lookout.sidecar.runtime.heap import keep_heap

GIL_SWITCH_INTERVAL = 0.0005
GC_THRESHOLDS = (10_000, 50, 1_000)


def tune_runtime() -> None:
    """Interpreter settings for a latency-sensitive proxy, measured in bench/proxy.py.

    - Span export runs in a thread (analysis runs in worker processes). With CPython's
      default 5 ms GIL switch interval a busy export thread stalls the event loop for up
      to 5 ms, which showed up one-for-one in p99 latency; 0.5 ms bounds that stall.
    - Objects alive after start-up (modules, config, registry) are moved out of the
      collector's view, and young-generation collections run less often: together
      this halved p99 latency at 16 connections.
    - glibc's heap keeps what large reads free (runtime/heap.py): a third less CPU
      per 100 KB gRPC call at 16 streams.
    """
    keep_heap()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


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
