"""The hand-off from the request path to everything that analyses traffic.

The request path builds one `Observation` and calls `ObservationQueue.offer`, which
never waits: a full queue drops the observation and counts it. Consumers (detection
parsing, sampling, shadow evaluation...) run in `ObservationPipeline`, off the request
path, and receive observations in batches: handing work to a thread costs a GIL
hand-over each time, so a batch per hand-over lets analysis keep up with traffic. A
consumer that raises is counted and logged and the pipeline carries on (fail-open).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from lookout.sidecar.runtime.logs import FailureLog
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.runtime.span_facts import export_carried
from lookout.sidecar.runtime.tracing import Tracing

log = logging.getLogger(__name__)

OBSERVATION_QUEUE = "observations"
SPAN_COMPONENT = "span_export"  # the `component` label of a failed span export
BATCH_SIZE = 64


@dataclass(slots=True, frozen=True)
class Observation:
    """One finished request, as the analysis side needs it."""

    started_at: float  # unix time the request arrived
    method: str
    path: str
    route: str
    status: int
    code: str  # the `code` label: "200", "sidecar_504", ...
    request_headers: Mapping[str, str]  # the client's headers, as received (read-only)
    request_body: bytes  # at most observe_max_bytes of it
    response_headers: Mapping[str, str]  # the upstream's (or sidecar's) headers
    response_body: bytes
    response_truncated: bool  # response larger than observe_max_bytes
    duration: float
    upstream_duration: float | None
    trace_id: str | None  # hex, also when the trace was not sampled
    span_id: str | None
    trace_sampled: bool
    model: str
    version: str
    request_truncated: bool = False  # request larger than observe_max_bytes
    spans: tuple | None = None  # an exported request's span facts, for the worker to export


class ObservationConsumer(Protocol):
    """Something that analyses observations; `name` labels its failures."""

    name: str

    async def consume(self, observations: Sequence[Observation]) -> None: ...


def _size(observation: Observation) -> int:
    return len(observation.request_body) + len(observation.response_body)


class ObservationQueue:
    """Bounded in count and in body bytes, non-blocking: a request path that cannot
    hand off drops the observation, counted in lookout_queue_dropped_total."""

    def __init__(self, maxsize: int, metrics: SidecarMetrics,
                 max_bytes: int = 256 * 1024**2) -> None:
        self._queue: asyncio.Queue[Observation] = asyncio.Queue(maxsize)
        self._metrics = metrics
        self._max_bytes = max_bytes
        self.queued_bytes = 0

    def offer(self, observation: Observation) -> bool:
        size = _size(observation)
        if self.queued_bytes + size > self._max_bytes:
            self._metrics.queue_dropped(OBSERVATION_QUEUE)
            return False
        try:
            self._queue.put_nowait(observation)
        except asyncio.QueueFull:
            self._metrics.queue_dropped(OBSERVATION_QUEUE)
            return False
        self.queued_bytes += size
        return True

    async def get(self) -> Observation:
        observation = await self._queue.get()
        self.queued_bytes -= _size(observation)
        return observation

    async def get_batch(self, max_items: int) -> list[Observation]:
        """Wait for one observation, then take whatever else is queued, up to max_items."""
        batch = [await self.get()]
        while len(batch) < max_items and not self._queue.empty():
            observation = self._queue.get_nowait()
            self.queued_bytes -= _size(observation)
            batch.append(observation)
        return batch

    def task_done(self) -> None:
        self._queue.task_done()

    def qsize(self) -> int:
        return self._queue.qsize()

    async def join(self) -> None:
        await self._queue.join()


class ObservationPipeline:
    """Feeds every queued observation to each consumer in turn, in a background task."""

    def __init__(
        self,
        queue: ObservationQueue,
        consumers: Sequence[ObservationConsumer],
        metrics: SidecarMetrics,
        tracing: Tracing | None = None,
    ) -> None:
        """`tracing` exports the spans that ride with the observations, as a worker
        does with those it takes."""
        self._queue = queue
        self._tracing = tracing
        self._consumers = list(consumers)
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None
        self._failures = FailureLog(log, interval=10.0)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="observations")

    async def _run(self) -> None:
        while True:
            batch = await self._queue.get_batch(BATCH_SIZE)
            if self._tracing is not None:
                export_carried(batch, self._tracing,
                               lambda: self._metrics.component_error(SPAN_COMPONENT))
            try:
                for consumer in self._consumers:
                    await self._consume(consumer, batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _consume(self, consumer: ObservationConsumer,
                       batch: Sequence[Observation]) -> None:
        try:
            await consumer.consume(batch)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._metrics.component_error(consumer.name)
            self._failures.exception(consumer.name, "observation consumer %r failed; "
                                     "continuing", consumer.name)

    async def stop(self, timeout: float) -> None:
        """Let queued observations drain for up to `timeout` seconds, then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
