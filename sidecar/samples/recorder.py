"""Choose inputs by policy and write them to the sample store, off the request path.

It is the last stage of the chain (`chain.py`): every analysis reaches it once, with
what the stages before it left on it (the reference model's result when that model
evaluated the image, so the `disagreement` rule can be judged in its place in the
policy and the stored sample carries the reference detections; the drift state, for
the `drift` rule; the drift features). The decision itself is cheap; a chosen input
goes to a bounded queue (full: dropped and counted) and one writer thread makes the
thumbnail from the pixels the analyser decoded and stores it with the features the
drift stage computed. Only what no stage did is done here, once: pixels for an analysis
another worker forwarded without them, features when drift did not sample the image.

A full or failing volume pauses sampling (drops counted as `disk_full` or
`write_error`) and retries after a back-off that doubles from `FIRST_PAUSE` to
`LONGEST_PAUSE`, so a volume that frees up is used again within a minute and without
a restart. No failure here reaches a user request.

With `sample_url`, the store is also the spool of the fleet's object store: the
recorder starts the sink (`sink.py`) once the store is open, tells it of each sample
it adds, and closes it (a last flush, bounded) when it stops.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from lookout.shadow_eval.boxes import Detections
from lookout.shadow_eval.features import FeatureRow, feature_row
from lookout.shadow_eval.suspects import DRIFT_JUMP
from lookout.sidecar.pipeline.analysis import Analysis
from lookout.sidecar.pipeline.images import DecodedImage, DecodeSize, decode_at
from lookout.sidecar.pipeline.inputs import InputImage, image_format
from lookout.sidecar.pipeline.stage import HandOn, end_of_chain
from lookout.sidecar.quality.shadow import ShadowResult
from lookout.sidecar.runtime import worker_queue
from lookout.sidecar.runtime.backoff import RetryBackoff
from lookout.sidecar.runtime.logs import FailureLog
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.samples.policy import (
    Candidate,
    SamplingPolicy,
    Strategy,
    agreement_score,
    parse_policy,
)
from lookout.sidecar.samples.sink import SampleSink
from lookout.sidecar.samples.spool import LOST
from lookout.sidecar.samples.store import (
    Sample,
    SampleFile,
    SampleStore,
    StoreError,
    StoreFull,
    new_id,
)
from lookout.sidecar.samples.thumbnails import ThumbnailSettings, make_thumbnail
from lookout.sidecar.settings import SampleSettings
from lookout.slo import catalog

log = logging.getLogger(__name__)

SAMPLE_QUEUE = "samples"
FIRST_PAUSE = 1.0
LONGEST_PAUSE = 60.0
STOP_TIMEOUT = 5.0
JUMP_FACTOR = 2.0  # detections per frame this many times the running mean (plus 2)
JUMP_SMOOTHING = 0.05  # of the running mean of detections per frame


class DropReason(StrEnum):
    QUOTA = "quota"  # a rule wanted it, none had quota left
    BYTE_QUOTA = "byte_quota"  # the day's byte quota is spent
    QUEUE_FULL = "queue_full"
    DISK_FULL = "disk_full"
    WRITE_ERROR = "write_error"  # read-only volume, I/O error
    NO_IMAGE = "no_image"  # chosen, but the request carried no usable image
    STORE_UNAVAILABLE = "store_unavailable"  # the store could not be opened
    SPOOL_FULL = LOST  # deleted by retention before it reached the object store


@dataclass(frozen=True, slots=True)
class SampledExchange:
    """What a sample keeps of an analysis: no request or response bodies, so a queue of
    these stays small however large the traffic's payloads."""

    time: float
    trace_id: str | None
    model: str
    version: str
    route: str
    status: int
    latency: float
    parse_failed: bool
    image: InputImage | None
    detections: Detections | None
    decoded: DecodedImage | None = None  # the analyser's pixels
    features: FeatureRow | None = None  # the drift stage's ({}: it did not sample it)
    drifting: bool = False  # the drift stage's alarm state when it passed

    @classmethod
    def of(cls, analysis: Analysis) -> SampledExchange:
        o = analysis.observation
        return cls(o.started_at, o.trace_id, o.model, o.version, o.route, o.status,
                   o.duration, analysis.failure is not None, analysis.image,
                   analysis.detections, analysis.decoded, analysis.features,
                   analysis.drifting)


@dataclass(frozen=True, slots=True)
class Job:
    exchange: SampledExchange
    strategy: str
    shadow: ShadowResult | None
    agreement: float | None  # with the reference model, when it evaluated the image
    inclusion_probability: float | None = None  # `random` only: the draw's probability


def detections_json(detections: Detections | None, names: Sequence[str]
                    ) -> list[dict[str, Any]] | None:
    """Boxes in original-image pixels, as the API and the exports present them."""
    if detections is None:
        return None
    return [{"box": [round(v, 1) for v in box], "score": round(score, 4), "class_id": class_id,
             "class": label}
            for box, score, class_id, label in zip(
                detections.boxes.tolist(), detections.scores.tolist(),
                detections.classes.tolist(), detections.labels(names), strict=True)]


@dataclass(frozen=True, slots=True)
class ModelSampling:
    """What sampling needs of one model: its class names and its rules."""

    names: tuple[str, ...]
    policy: SamplingPolicy


class SampleRecorder:
    """The chain's last stage and its writer thread; see the module docstring."""

    name = "samples"

    def __init__(self, config: SampleSettings, metrics: SidecarMetrics,
                 class_names: Sequence[str] = (), seed: int | None = None) -> None:
        self._config = config
        self.decode_size = DecodeSize(longest=config.sample_image_size)
        self._metrics = metrics
        self._failures = FailureLog(log)
        self._seed = seed
        self.policy = SamplingPolicy(parse_policy(config.sample_strategies), seed)
        self._default = ModelSampling(tuple(class_names), self.policy)
        # the models of a multi-model pod: their names, drift, rules and quotas
        self._models: dict[str, ModelSampling] = {}
        self._random = random.Random(seed)
        self._mean_detections: dict[str, float] = {}  # per model, smoothed
        self._settings = ThumbnailSettings(config.sample_image_size, config.sample_format,
                                           config.sample_quality,
                                           frozenset(config.sample_pixelate_classes),
                                           config.sample_pixelate_all)
        self._queue: queue.Queue[Job | None] = queue.Queue(config.sample_queue_size)
        self._thread = threading.Thread(target=self._run, name="lookout-samples", daemon=True)
        self.store: SampleStore | None = None
        # with sample_url, the store is the spool of the fleet's object store
        self.sink = SampleSink(config, metrics) if config.sample_url else None
        self.ready = threading.Event()  # the store was opened (or could not be)
        self._pauses = RetryBackoff(FIRST_PAUSE, LONGEST_PAUSE)  # failing: writes paused
        self._pause_reason = DropReason.DISK_FULL
        self._day, self._day_bytes = -1, 0
        self._stored = {strategy.value: metrics[catalog.SAMPLES_STORED].labels(
            strategy.value) for strategy in Strategy}
        self._dropped = {reason: metrics[catalog.SAMPLES_DROPPED].labels(reason.value)
                         for reason in DropReason}
        self._store_bytes = metrics[catalog.SAMPLE_STORE_BYTES]

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, hand_on: HandOn = end_of_chain) -> None:
        """`hand_on` is not used: nothing follows this stage."""
        self._thread.start()

    def close(self) -> None:
        """Write what is queued (bounded by STOP_TIMEOUT), then stop."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=STOP_TIMEOUT)
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT)
        if self.sink is not None:
            self.sink.close()
        if self.store is not None:
            self.store.close()

    def drain(self, timeout: float) -> bool:
        """Wait until every queued sample is written; False on timeout."""
        return worker_queue.drain(self._queue, self._thread, timeout)

    # -- the reference stage's thread (analysis, or the shadow worker) -------------------

    def offer(self, analysis: Analysis) -> bool:
        self.decide(SampledExchange.of(analysis), analysis.reference)
        return False

    def add_model(self, name: str, class_names: Sequence[str], strategies: str) -> None:
        """Another model of the pod, sampled by its own rules with quotas of its own."""
        self._models[name] = ModelSampling(
            tuple(class_names), SamplingPolicy(parse_policy(strategies), self._seed))

    def _model(self, name: str) -> ModelSampling:
        return self._models.get(name) or self._default

    def _jumped(self, exchange: SampledExchange, count: int, drifting: bool) -> bool:
        """Detections per frame well above this model's running mean while its input
        drifts: a new kind of frame both models may be fooled by alike. Counted."""
        mean = self._mean_detections.get(exchange.model)
        self._mean_detections[exchange.model] = count if mean is None else \
            (1 - JUMP_SMOOTHING) * mean + JUMP_SMOOTHING * count
        if not drifting or mean is None or count < JUMP_FACTOR * mean + 2:
            return False
        self._metrics[catalog.SUSPECT_DETECTIONS].labels(
            exchange.model, exchange.version, DRIFT_JUMP).inc(count)
        return True

    def decide(self, exchange: SampledExchange, shadow: ShadowResult | None) -> None:
        detections = exchange.detections
        model = self._model(exchange.model)
        agreement = None
        if shadow is not None:
            a = shadow.agreement
            agreement = agreement_score(a.primary, a.reference, a.matched)
        drifting = exchange.drifting
        suspects = shadow.suspects if shadow is not None else ()
        if detections is not None and self._jumped(exchange, len(detections), drifting):
            suspects = (*suspects, DRIFT_JUMP)
        candidate = Candidate(
            exchange.status, exchange.parse_failed, exchange.latency,
            detections.scores if detections is not None else None,
            tuple(detections.labels(model.names)) if detections is not None else (),
            agreement, drifting, suspects)
        decision = model.policy.decide(candidate, exchange.time)
        if decision.strategy is None:
            if decision.wanted:
                self._drop(DropReason.QUOTA)
            return
        if exchange.image is None:
            self._drop(DropReason.NO_IMAGE)
        elif not self._pauses.allows():
            self._drop(self._pause_reason)
        elif self._over_byte_quota(exchange.time):
            self._drop(DropReason.BYTE_QUOTA)
        else:
            try:
                self._queue.put_nowait(Job(exchange, decision.strategy.value, shadow,
                                           agreement, decision.inclusion_probability))
            except queue.Full:
                self._drop(DropReason.QUEUE_FULL)
                self._metrics.queue_dropped(SAMPLE_QUEUE)

    def _drop(self, reason: DropReason) -> None:
        self._dropped[reason].inc()

    def _over_byte_quota(self, now: float) -> bool:
        return int(now // 86400) == self._day and \
            self._day_bytes >= self._config.sample_bytes_per_day

    # -- writer thread --------------------------------------------------------------------

    def _open(self) -> None:
        config = self._config
        try:
            self.store = SampleStore(config.sample_dir, max_bytes=config.sample_store_max_bytes,
                                     retention_seconds=config.sample_retention_hours * 3600)
        except StoreError as error:
            self._metrics.component_error(self.name)
            log.error("sampling disabled: %s", error)
        else:
            if self.sink is not None:
                self.sink.start(self.store)  # before retention: it counts unsent losses
            self.store.enforce_retention()
            self._store_bytes.set(self.store.disk_bytes())
            log.info("sample store %s: %d samples, %d bytes", self.store.directory,
                     self.store.count(), self.store.disk_bytes())
        finally:
            self.ready.set()

    def _run(self) -> None:
        self._open()
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                if self.store is None:
                    self._drop(DropReason.STORE_UNAVAILABLE)
                else:
                    self._write(job)
            except Exception:
                self._metrics.component_error(self.name)
                self._failures.exception("write", "writing a sample failed")
            finally:
                self._queue.task_done()

    def _write(self, job: Job) -> None:
        assert self.store is not None and job.exchange.image is not None
        if not self._pauses.allows():
            self._drop(self._pause_reason)
            return
        exchange, image = job.exchange, job.exchange.image
        detections = exchange.detections or Detections.empty()
        names = self._model(exchange.model).names
        try:
            decoded = exchange.decoded or decode_at(image, self.decode_size)
            thumbnail = make_thumbnail(image, detections.boxes,
                                       detections.labels(names), self._settings, decoded)
        except (OSError, ValueError):
            self._drop(DropReason.NO_IMAGE)
            return
        features = exchange.features or feature_row(
            decoded.rgb, image.width, image.height, exchange.detections, names,
            self._random, self._config.drift_image_size)
        original = SampleFile(image.encoded, _extension(image.encoded)) \
            if self._config.sample_keep_original and image.encoded is not None else None
        reference = job.shadow.reference if job.shadow is not None else None
        sample = Sample(
            id=new_id(exchange.time), time=exchange.time, trace_id=exchange.trace_id,
            model=exchange.model, version=exchange.version, strategy=job.strategy,
            route=exchange.route, status=exchange.status, latency=exchange.latency,
            width=image.width, height=image.height, thumbnail_width=thumbnail.width,
            thumbnail_height=thumbnail.height, media_type=thumbnail.media_type, file="",
            file_bytes=0, primary_detections=detections_json(exchange.detections, names),
            reference_detections=detections_json(reference, ()),
            agreement=job.agreement, inclusion_probability=job.inclusion_probability,
            features={k: _plain(v) for k, v in features.items()},
            classes=tuple(detections.labels(names)))
        size = len(thumbnail.data) + (len(original.data) if original else 0)
        try:
            self.store.enforce_retention(exchange.time, extra_bytes=size)
            self.store.add(sample, SampleFile(thumbnail.data, thumbnail.extension), original)
        except StoreFull as error:
            self._pause(DropReason.DISK_FULL, error)
            return
        except StoreError as error:
            self._pause(DropReason.WRITE_ERROR, error)
            return
        if self._pauses.failing:
            log.info("sample store %s: writing again", self.store.directory)
            self._pauses.succeeded()
        self._count_bytes(exchange.time, size)
        self._stored[job.strategy].inc()
        if self.sink is not None:
            self.sink.notify()
        self._store_bytes.set(self.store.disk_bytes())

    def _pause(self, reason: DropReason, error: OSError) -> None:
        self._drop(reason)
        self._metrics.component_error(self.name)
        if not self._pauses.failing:
            log.error("sample store %s: cannot write (%s); sampling paused, retrying in "
                      "%g s and backing off to %g s", self._config.sample_dir, error,
                      FIRST_PAUSE, LONGEST_PAUSE)
        self._pauses.failed()
        self._pause_reason = reason

    def _count_bytes(self, now: float, size: int) -> None:
        day = int(now // 86400)
        if day != self._day:
            self._day, self._day_bytes = day, 0
        self._day_bytes += size


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars and NaN become plain values (NaN: null)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def _extension(data: bytes) -> str:
    found = image_format(data) or "bin"
    return "jpg" if found == "jpeg" else found
