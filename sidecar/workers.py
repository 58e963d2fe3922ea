"""The proxy's side of the analysis workers: their rings, their processes, restarts.

`offer` is the request path's whole hand-off: encode the exchange's facts (a small
pickle), copy the bodies into the next worker's ring, return; a ring with no room is
passed for the next, and when none has room the observation is dropped and counted in
lookout_queue_dropped_total{queue="observations"}. It never waits.

A watcher thread waits on the processes. One that exits unasked (SIGKILL, a native
decoder crash, the OOM killer) is counted in lookout_component_errors_total
{component="analysis_worker"}, logged, and started again after a back-off that doubles
from `FIRST_BACKOFF` to `LONGEST_BACKOFF` (reset once a worker has lived a minute). Its
ring keeps what the proxy put meanwhile, up to its bounds.

The rings are allocated and reserved at start-up, so memory and /dev/shm space are taken
then or start-up fails with what to change; a full /dev/shm can never fault the proxy
later.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path

from lookout.sidecar.config import Config
from lookout.sidecar.pipeline import wire
from lookout.sidecar.pipeline.channel import Ring
from lookout.sidecar.pipeline.observation import OBSERVATION_QUEUE, Observation
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.runtime.worker_metrics import WorkerMetricFiles
from lookout.sidecar.worker_entry import WorkerSpec, main

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.5
LONGEST_BACKOFF = 30.0
STABLE_SECONDS = 60.0
MAX_AUTO_WORKERS = 4
RECORD_OVERHEAD = 64 * 1024  # the pickled facts and headers of one exchange, at most
FORWARD_RING_BYTES = 32 * 1024**2  # analyses a worker hands the lead: images, not bodies
FORWARD_RING_RECORDS = 256
SHM_PATH = "/dev/shm"
WORKER_COMPONENT = "analysis_worker"


class WorkerStartError(RuntimeError):
    """The analysis channel cannot be set up; the message says what to change."""


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_limit() -> float:
    """CPUs this container may use: its cgroup quota, else the CPUs it may run on."""
    v2 = _read("/sys/fs/cgroup/cpu.max").split()
    if len(v2) == 2 and v2[0].isdigit() and v2[1].isdigit():
        return int(v2[0]) / int(v2[1])
    quota = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").strip()
    period = _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us").strip()
    if quota.isdigit() and period.isdigit() and int(period):
        return int(quota) / int(period)
    return float(len(os.sched_getaffinity(0)))


def record_bytes(config: Config) -> int:
    """The largest record one observation can need: both bodies and their facts."""
    return 2 * config.observe_max_bytes + RECORD_OVERHEAD


def worker_count(config: Config) -> int:
    """`analysis_workers`, or for 0 one per CPU of the limit beyond the proxy's own, at
    least 1, at most `MAX_AUTO_WORKERS`, and no more than the channel's bytes can give
    each a whole largest observation."""
    if config.analysis_workers:
        return config.analysis_workers
    by_cpu = int(cpu_limit()) - 1
    by_bytes = config.observation_queue_bytes // record_bytes(config)
    return max(1, min(by_cpu, MAX_AUTO_WORKERS, by_bytes))


def check_channel(config: Config, workers: int) -> None:
    per_ring = config.observation_queue_bytes // workers
    if per_ring < record_bytes(config):
        raise WorkerStartError(
            f"observation_queue_bytes ({config.observation_queue_bytes}) split over "
            f"{workers} analysis workers gives each {per_ring} bytes, less than one "
            f"observation can need ({record_bytes(config)}: twice observe_max_bytes and "
            f"its headers); raise observation_queue_bytes or lower analysis_workers or "
            f"observe_max_bytes")


def _check_shm(needed: int) -> None:
    try:
        stats = os.statvfs(SHM_PATH)
    except OSError:
        return  # no /dev/shm to measure; creating the memory will tell
    free = stats.f_bavail * stats.f_frsize
    if free < needed:
        raise WorkerStartError(
            f"{SHM_PATH} has {free} bytes free; the analysis channel needs {needed} "
            f"(observation_queue_bytes plus the workers' forwarding rings). Mount an "
            f"emptyDir with medium: Memory at {SHM_PATH} (lookout inject does), or lower "
            f"observation_queue_bytes")


@dataclass
class Slot:
    """One worker: its spec, its process, and when it may next be started."""

    spec: WorkerSpec
    process: BaseProcess | None = None
    started: float = 0.0
    backoff: float = FIRST_BACKOFF
    restart_at: float = 0.0


class AnalysisWorkers:
    """The observations channel and the worker processes behind it."""

    name = WORKER_COMPONENT

    def __init__(self, config: Config, metrics: SidecarMetrics, count: int) -> None:
        check_channel(config, count)
        forward_bytes = FORWARD_RING_BYTES * (count - 1)
        _check_shm(config.observation_queue_bytes + forward_bytes)
        self._metrics = metrics
        self._context = multiprocessing.get_context("spawn")
        self.files = WorkerMetricFiles()
        metrics.add_source(self.files)
        per_ring = config.observation_queue_bytes // count
        per_records = max(1, config.observation_queue_size // count)
        self._rings: list[Ring] = []
        inboxes, forwards = [], []
        try:
            for _ in range(count):
                ring, address = Ring.create(per_ring, per_records)
                self._rings.append(ring)
                inboxes.append(address)
            for _ in range(count - 1):
                ring, address = Ring.create(FORWARD_RING_BYTES, FORWARD_RING_RECORDS)
                self._rings.append(ring)
                forwards.append(address)
            for ring in self._rings:
                ring.reserve()
        except OSError as error:
            self._close_rings()
            raise WorkerStartError(f"cannot allocate the analysis channel in shared memory: "
                                   f"{error.strerror or error}") from None
        self.inboxes = self._rings[:count]
        self._forward_rings = self._rings[count:]
        self._slots = [Slot(WorkerSpec(
            index, config, inboxes[index],
            tuple(forwards) if index == 0 else (forwards[index - 1],),
            self.files.path, os.getpid())) for index in range(count)]
        self._next = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher = threading.Thread(target=self._watch, name="lookout-workers",
                                         daemon=True)

    # the request path

    def offer(self, observation: Observation) -> bool:
        parts = wire.encode(observation)
        rings = self.inboxes
        for step in range(len(rings)):
            index = (self._next + step) % len(rings)
            if rings[index].put(parts):
                self._next = index + 1
                return True
        self._metrics.queue_dropped(OBSERVATION_QUEUE)
        return False

    @property
    def unfinished(self) -> int:
        """Observations (and forwarded analyses) handed off and not yet analysed."""
        return sum(ring.unfinished for ring in self._rings)

    async def join(self, poll: float = 0.05) -> None:
        """Until every observation handed off so far has been analysed (for the demo's
        last reading and for tests; the request path never waits)."""
        while self.unfinished:
            await asyncio.sleep(poll)

    # lifecycle

    @property
    def running(self) -> bool:
        return self._watcher.is_alive()

    def start(self) -> None:
        for slot in self._slots:
            self._spawn(slot)
        self._watcher.start()

    def _spawn(self, slot: Slot) -> None:
        process = self._context.Process(target=main, args=(slot.spec,), daemon=True,
                                        name=f"lookout-analysis-{slot.spec.index}")
        process.start()
        with self._lock:
            slot.process, slot.started = process, time.monotonic()

    def _watch(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                alive = {slot.process.sentinel: slot for slot in self._slots
                         if slot.process is not None}
                due = [slot for slot in self._slots if slot.process is None]
            now = time.monotonic()
            for slot in due:
                if now >= slot.restart_at and not self._stopping.is_set():
                    self._spawn(slot)
                    log.info("analysis worker %d started again (pid %d)",
                             slot.spec.index, slot.process.pid)
            waits = [slot.restart_at - now for slot in due if slot.restart_at > now]
            timeout = min([1.0, *waits])
            for sentinel in wait([*alive], timeout):
                if not self._stopping.is_set():
                    self._reap(alive[sentinel])

    def _reap(self, slot: Slot) -> None:
        process = slot.process
        process.join()
        self.files.process_exited(process.pid)
        self._metrics.component_error(WORKER_COMPONENT)
        code = process.exitcode
        how = f"signal {signal.Signals(-code).name}" if code and code < 0 \
            else f"exit status {code}"
        lived = time.monotonic() - slot.started
        slot.backoff = FIRST_BACKOFF if lived >= STABLE_SECONDS \
            else min(slot.backoff * 2, LONGEST_BACKOFF)
        log.error("analysis worker %d (pid %d) died (%s) after %.0fs; starting another "
                  "in %.1fs; the proxy is unaffected", slot.spec.index, process.pid, how,
                  lived, slot.backoff)
        with self._lock:
            slot.process = None
            slot.restart_at = time.monotonic() + slot.backoff

    def stop(self, timeout: float) -> None:
        """Close the channel; the workers analyse what is queued, the lead's stages
        drain (samples committed), and they exit. Stragglers past `timeout` are killed."""
        self._stopping.set()
        self._watcher.join(5)
        deadline = time.monotonic() + timeout
        for ring in self.inboxes:
            ring.close_writing()
        lead, *others = self._slots
        for slot in others:
            self._join(slot, deadline)
        for ring in self._forward_rings:
            ring.close_writing()  # also for a forwarding worker that died meanwhile
        self._join(lead, deadline)
        self._close_rings()
        self.files.remove()

    def _join(self, slot: Slot, deadline: float) -> None:
        process = slot.process
        if process is None:
            return
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            log.warning("analysis worker %d did not finish in time; killing it",
                        slot.spec.index)
            process.kill()
            process.join()

    def _close_rings(self) -> None:
        for ring in self._rings:
            ring.close()
        self._rings = []

