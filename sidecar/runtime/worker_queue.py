"""Waiting for a worker thread to empty its queue, with a deadline."""

from __future__ import annotations

import queue
import threading
import time


def drain(work: queue.Queue, worker: threading.Thread, timeout: float) -> bool:
    """Wait until every item put on `work` was marked done (or the worker died);
    False when `timeout` seconds passed first. Unlike `Queue.join`, it gives up."""
    deadline = time.monotonic() + timeout
    with work.all_tasks_done:
        while work.unfinished_tasks and worker.is_alive():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            work.all_tasks_done.wait(remaining)
    return not work.unfinished_tasks
