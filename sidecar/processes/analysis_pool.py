"""lookout's side of the analysis workers: their rings, their processes, restarts.

Each Envoy worker thread (the tap in it) has one ring to each analysis worker; the tap
puts into them and never waits (a full ring drops and counts).

A worker that exits unasked (SIGKILL, a native decoder crash, the OOM killer) is counted
in lookout_component_errors_total{component="analysis_worker"}, logged, and started
again by the supervisor (`supervisor.py`) after its back-off. Its rings keep
what the tap put meanwhile, up to their bounds.

The rings are allocated and reserved at start-up, so memory and /dev/shm space are taken
then or start-up fails with what to change; a full /dev/shm can never fault the tap
later.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path

from lookout.sidecar.pipeline.channel import Ring, RingAddress
from lookout.sidecar.processes.child_metrics import WorkerMetricFiles
from lookout.sidecar.processes.shm_segments import SHM_PATH, SegmentOwner
from lookout.sidecar.processes.supervisor import Supervisor
from lookout.sidecar.processes.worker_spec import WorkerSettings, WorkerSpec, main
from lookout.sidecar.runtime.metrics import SidecarMetrics

log = logging.getLogger(__name__)

MAX_AUTO_WORKERS = 4
RECORD_OVERHEAD = 64 * 1024  # the pickled facts and headers of one exchange, at most
FORWARD_RING_BYTES = 32 * 1024**2  # analyses a worker hands the lead: images, not bodies
FORWARD_RING_RECORDS = 256
WORKER_COMPONENT = "analysis_worker"


class WorkerStartError(RuntimeError):
    """The analysis channel cannot be set up; the message says what to change."""


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    """How many workers and how much ring memory (`settings.of(ChannelSettings, config)`)."""

    analysis_workers: int
    observe_max_bytes: int
    observation_queue_bytes: int
    observation_queue_size: int
    envoy_concurrency: int


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


def record_bytes(config: ChannelSettings) -> int:
    """The largest record one observation can need: both bodies and their facts."""
    return 2 * config.observe_max_bytes + RECORD_OVERHEAD


def producers(config: ChannelSettings) -> int:
    """Who puts into the rings: Envoy's worker threads (the tap in each)."""
    return config.envoy_concurrency


def worker_count(config: ChannelSettings) -> int:
    """`analysis_workers`, or for 0 one per CPU of the limit beyond Envoy's worker
    threads, at least 1, at most `MAX_AUTO_WORKERS`, and no more than the channel's
    bytes can give each ring a whole largest observation."""
    if config.analysis_workers:
        return config.analysis_workers
    by_cpu = int(cpu_limit()) - producers(config)
    by_bytes = config.observation_queue_bytes // (record_bytes(config) * producers(config))
    return max(1, min(by_cpu, MAX_AUTO_WORKERS, by_bytes))


def _segment(segments: SegmentOwner | None, what: str) -> str | None:
    """`SharedMemory` takes a name without its leading slash."""
    return segments.name(what).lstrip("/") if segments is not None else None


def check_channel(config: ChannelSettings, workers: int) -> None:
    rings = workers * producers(config)
    per_ring = config.observation_queue_bytes // rings
    if per_ring < record_bytes(config):
        raise WorkerStartError(
            f"observation_queue_bytes ({config.observation_queue_bytes}) split over "
            f"{rings} rings ({workers} analysis workers, each with a ring from each of "
            f"{producers(config)} producers) gives each {per_ring} "
            f"bytes, less than one observation can need ({record_bytes(config)}: twice "
            f"observe_max_bytes and its headers); raise observation_queue_bytes or lower "
            f"analysis_workers, envoy_concurrency or "
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


class AnalysisPool:
    """The observations channel and the worker processes behind it."""

    name = WORKER_COMPONENT

    def __init__(self, config: ChannelSettings, workers: WorkerSettings,
                 metrics: SidecarMetrics, count: int, wake_dir: str | None = None,
                 labels_path: str = "", margins_path: str = "",
                 segments: SegmentOwner | None = None) -> None:
        """`workers`: what each worker is made of. `wake_dir`: the rings wake their
        consumers through FIFOs made there, which a producer that is not our child (the
        tap in Envoy) opens by name. `labels_path`: the discovered model labels the
        lookout process publishes; `margins_path`: the trust bands' margin factors it
        publishes for the lead."""
        check_channel(config, count)
        producer_count = producers(config)
        forward_bytes = FORWARD_RING_BYTES * (count - 1)
        _check_shm(config.observation_queue_bytes + forward_bytes)
        self._metrics = metrics
        self.files = WorkerMetricFiles()
        metrics.add_source(self.files)
        per_ring = config.observation_queue_bytes // (count * producer_count)
        per_records = max(1, config.observation_queue_size // (count * producer_count))
        self._rings: list[Ring] = []
        inboxes: list[list[RingAddress]] = [[] for _ in range(count)]  # [worker][producer]
        forwards = []
        try:
            for producer in range(producer_count):
                for worker in range(count):
                    wake = os.path.join(wake_dir, f"wake-{producer}-{worker}") \
                        if wake_dir else ""
                    ring, address = Ring.create(
                        per_ring, per_records, wake,
                        _segment(segments, f"ring-{producer}-{worker}"))
                    self._rings.append(ring)
                    inboxes[worker].append(address)
            for index in range(count - 1):
                ring, address = Ring.create(FORWARD_RING_BYTES, FORWARD_RING_RECORDS,
                                            name=_segment(segments, f"forward-{index}"))
                self._rings.append(ring)
                forwards.append(address)
            for ring in self._rings:
                ring.reserve()
        except OSError as error:
            self._close_rings()
            raise WorkerStartError(f"cannot allocate the analysis channel in shared memory: "
                                   f"{error.strerror or error}") from None
        self.inboxes = self._rings[:count * producer_count]  # closed at stop, all producers'
        self._forward_rings = self._rings[count * producer_count:]
        self._supervisor = Supervisor("analysis worker", main, [(WorkerSpec(
            index, workers, tuple(inboxes[index]),
            tuple(forwards) if index == 0 else (forwards[index - 1],),
            self.files.path, os.getpid(), labels_path, margins_path if index == 0 else ""),)
            for index in range(count)],
            self._died)

    @property
    def unfinished(self) -> int:
        """Observations (and forwarded analyses) handed off and not yet analysed."""
        return sum(ring.unfinished for ring in self._rings)

    async def join(self, poll: float = 0.05) -> None:
        """Until every observation handed off so far has been analysed (for the demo's
        last reading and for tests; the data plane never waits)."""
        while self.unfinished:
            await asyncio.sleep(poll)

    # lifecycle

    @property
    def running(self) -> bool:
        return self._supervisor.running

    def start(self) -> None:
        self._supervisor.start()

    def _died(self, process: BaseProcess) -> None:
        self.files.process_exited(process.pid)
        self._metrics.component_error(WORKER_COMPONENT)

    def stop(self, timeout: float) -> None:
        """Close the channel; the workers analyse what is queued, the lead's stages
        drain (samples committed), and they exit. Stragglers past `timeout` are killed."""
        self._supervisor.stop_restarting()
        deadline = time.monotonic() + timeout
        for ring in self.inboxes:
            ring.close_writing()
        lead, *others = self._supervisor.slots
        for slot in others:
            self._supervisor.join(slot, deadline)
        for ring in self._forward_rings:
            ring.close_writing()  # also for a forwarding worker that died meanwhile
        self._supervisor.join(lead, deadline)
        self._close_rings()
        self.files.remove()

    def _close_rings(self) -> None:
        for ring in self._rings:
            ring.close()
        self._rings = []
