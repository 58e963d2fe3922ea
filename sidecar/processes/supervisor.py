"""Child processes that are started again when they die: the analysis workers (Envoy,
not a Python process, has its own watcher in `envoy.py`).

A watcher thread waits on the processes. One that exits unasked (SIGKILL, a native
decoder crash, the OOM killer) is reported to `on_death`, logged, and started again
after a back-off that doubles from `FIRST_BACKOFF` to `LONGEST_BACKOFF` (reset once a
process has lived `STABLE_SECONDS`).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.5
LONGEST_BACKOFF = 30.0
STABLE_SECONDS = 60.0


@dataclass
class Slot:
    """One child: what it is started with, its process, when it may next be started."""

    index: int
    args: tuple
    process: BaseProcess | None = None
    started: float = 0.0
    backoff: float = FIRST_BACKOFF
    restart_at: float = 0.0


class Supervisor:
    """Starts `target(*args)` once per slot (spawned), restarts the ones that die."""

    def __init__(self, role: str, target: Callable[..., None], args: Sequence[tuple],
                 on_death: Callable[[BaseProcess], None]) -> None:
        self.role = role  # "analysis worker": for the logs
        self._target = target
        self._on_death = on_death
        self._context = multiprocessing.get_context("spawn")
        self.slots = [Slot(index, each) for index, each in enumerate(args)]
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher = threading.Thread(target=self._watch, daemon=True,
                                         name=f"lookout-{role.replace(' ', '-')}s")

    @property
    def running(self) -> bool:
        return self._watcher.is_alive()

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [slot.process.pid for slot in self.slots if slot.process is not None]

    def start(self) -> None:
        for slot in self.slots:
            self._spawn(slot)
        self._watcher.start()

    def _spawn(self, slot: Slot) -> None:
        name = f"lookout-{self.role.replace(' ', '-')}-{slot.index}"
        process = self._context.Process(target=self._target, args=slot.args, daemon=True,
                                        name=name)
        process.start()
        with self._lock:
            slot.process, slot.started = process, time.monotonic()

    def _watch(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                alive = {slot.process.sentinel: slot for slot in self.slots
                         if slot.process is not None}
                due = [slot for slot in self.slots if slot.process is None]
            now = time.monotonic()
            for slot in due:
                if now >= slot.restart_at and not self._stopping.is_set():
                    self._spawn(slot)
                    log.info("%s %d started again (pid %d)", self.role, slot.index,
                             slot.process.pid)
            waits = [slot.restart_at - now for slot in due if slot.restart_at > now]
            timeout = min([1.0, *waits])
            for sentinel in wait([*alive], timeout):
                if not self._stopping.is_set():
                    self._reap(alive[sentinel])

    def _reap(self, slot: Slot) -> None:
        process = slot.process
        process.join()
        self._on_death(process)
        code = process.exitcode
        how = f"signal {signal.Signals(-code).name}" if code and code < 0 \
            else f"exit status {code}"
        lived = time.monotonic() - slot.started
        slot.backoff = FIRST_BACKOFF if lived >= STABLE_SECONDS \
            else min(slot.backoff * 2, LONGEST_BACKOFF)
        log.error("%s %d (pid %d) died (%s) after %.0fs; starting another in %.1fs; "
                  "the other processes are unaffected", self.role, slot.index, process.pid,
                  how, lived, slot.backoff)
        with self._lock:
            slot.process = None
            slot.restart_at = time.monotonic() + slot.backoff

    def stop_restarting(self) -> None:
        """From now on a process that exits stays down (the group is stopping)."""
        self._stopping.set()
        if self._watcher.is_alive():
            self._watcher.join(5)

    def join(self, slot: Slot, deadline: float) -> None:
        """Until `slot`'s process exits or `deadline` (monotonic) passes; then it is
        killed."""
        process = slot.process
        if process is None:
            return
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            log.warning("%s %d did not finish in time; killing it", self.role, slot.index)
            process.kill()
            process.join()

    def terminate(self) -> None:
        """SIGTERM to every live process: each finishes what it holds and exits."""
        with self._lock:
            processes = [slot.process for slot in self.slots if slot.process is not None]
        for process in processes:
            if process.is_alive():
                process.terminate()
