"""Shadow evaluation: a stronger reference model re-detects a sample of live images and
the agreement with the primary's detections becomes precision and recall proxies.

It is the pipeline's reference stage (`quality/reference.py`): the analysis thread
offers every analysis; a random share within the compute budget enters a bounded queue
(full: dropped and counted) and is handed on to the stages after this one once
evaluated, its `reference` set to the result; every other analysis goes on at once,
without one. One worker thread loads the reference model (so a slow load or TensorRT
engine build never delays start-up), then letterboxes the pixels the analyser decoded
(at least the model's input size, which it tells the chain once loaded; an analysis
forwarded without pixels is decoded here, once), micro-batches, infers, matches and
records. Nothing here touches the event
loop. A model that cannot be loaded or is not the pinned file disables shadow
evaluation: `lookout_model_info{role="reference"}` stays absent, the failure is logged
and counted, and the proxy carries on.

The reference may instead be served remotely (`remote_reference.py`), shared by many
sidecars: the same budget, queue and decoding apply; while it cannot be reached, the
sampled images count as `reference_error` and requests to it back off, from the start
(it may come up after the pod) and whenever it goes away.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from lookout.shadow_eval.boxes import Detections
from lookout.shadow_eval.budget import ComputeBudget
from lookout.shadow_eval.decode import DecodeSettings
from lookout.shadow_eval.letterbox import Letterbox
from lookout.shadow_eval.matching import Agreement, flip_horizontally, match, matched_mask
from lookout.shadow_eval.runner import ModelLoadError, OnnxDetector, YoloDetector
from lookout.shadow_eval.suspects import suspect_reasons
from lookout.shadow_eval.trust import confirmed
from lookout.sidecar.pipeline.analysis import OTHER_CLASS, Analysis, decoded_pixels
from lookout.sidecar.pipeline.images import DecodedImage, DecodeSize, decode_rgb
from lookout.sidecar.pipeline.inputs import InputImage
from lookout.sidecar.pipeline.stage import HandOn, end_of_chain
from lookout.sidecar.quality.remote_reference import ReferenceUnavailable, RemoteDetector
from lookout.sidecar.quality.trust import ProxyTrust
from lookout.sidecar.runtime import worker_queue
from lookout.sidecar.runtime.backoff import RetryBackoff
from lookout.sidecar.runtime.logs import FailureLog
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.settings import ShadowSettings
from lookout.slo import catalog

log = logging.getLogger(__name__)

SHADOW_QUEUE = "shadow"
STOP_TIMEOUT = 5.0


class ShadowOutcome(StrEnum):
    OK = "ok"
    OVER_BUDGET = "over_budget"
    DROPPED = "dropped"
    NO_IMAGE = "no_image"
    ERROR = "error"
    REFERENCE_ERROR = "reference_error"


class State(StrEnum):
    LOADING = "loading"
    RUNNING = "running"
    DISABLED = "disabled"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class ShadowResult:
    """What the reference model made of one image, for whoever asked (the sampler)."""

    reference: Detections  # original-image pixels, class names filled in
    agreement: Agreement
    suspects: tuple[str, ...] = ()  # why boxes both models found may be wrong alike


@dataclass(frozen=True, slots=True)
class ShadowSample:
    image: InputImage
    primary: Detections
    flip: bool
    analysis: Analysis | None = None  # handed on to the next stages with the result
    reference_flip: bool = False  # the reference also sees it mirrored (robust recall, trust)


@dataclass(slots=True)
class PreparedBatch:
    """A micro-batch decoded and letterboxed, ready for the reference model."""

    size: int  # images taken from the queue, usable or not
    samples: list[ShadowSample] = field(default_factory=list)
    pixels: list[np.ndarray] = field(default_factory=list)
    scales: list[float] = field(default_factory=list)
    geometries: list[Letterbox] = field(default_factory=list)
    tensor: np.ndarray | None = None


def reference_class_ids(primary: Detections, primary_names: Sequence[str],
                        reference_names: Sequence[str]) -> np.ndarray:
    """The primary's classes in the reference model's id space, matched by name where
    names are known (-1: a class the reference does not know, which never matches)."""
    index = {name: i for i, name in enumerate(reference_names)}
    if primary.names:
        return np.array([index.get(name, -1) for name in primary.names], np.int64)
    if primary_names and reference_names and tuple(primary_names) != tuple(reference_names):
        return np.array([index.get(primary_names[c], -1) if 0 <= c < len(primary_names) else -1
                         for c in primary.classes.tolist()], np.int64)
    return primary.classes


class ShadowEvaluator:
    """The reference stage with a model, and its worker thread; see the module docstring."""

    name = "shadow"

    def __init__(self, config: ShadowSettings, metrics: SidecarMetrics,
                 primary_names: Sequence[str] = (),
                 budget: ComputeBudget | None = None, seed: int | None = None,
                 decode_size: DecodeSize | None = None,
                 margins: Callable[[str], float] | None = None) -> None:
        """`margins`: each model's trust-band margin factor (`quality/trust.py`)."""
        self._config = config
        self.decode_size = decode_size or DecodeSize()
        self._hand_on: HandOn = end_of_chain
        self._metrics = metrics
        self._failures = FailureLog(log)
        self._primary_names = tuple(primary_names)
        self._budget = budget or ComputeBudget(config.shadow_rate, config.shadow_burst,
                                               config.shadow_max_busy_share)
        self._random = random.Random(seed)
        self._flip_random = random.Random(None if seed is None else seed + 1)
        self.trust = ProxyTrust(config, metrics, margins)
        self._queue: queue.Queue[ShadowSample | None] = queue.Queue(config.shadow_queue_size)
        self._thread = threading.Thread(target=self._run, name="lookout-shadow", daemon=True)
        self.state = State.LOADING
        self.reference: YoloDetector | None = None
        self._backoff = RetryBackoff()
        self._stopping = threading.Event()
        self.primary: OnnxDetector | None = None
        self.evaluated = 0  # images compared so far; for tests and the demo view
        labels = (config.model_name, config.model_version)
        self._outcomes = {o: metrics[catalog.SHADOW_EVALUATIONS].labels(*labels, o.value)
                          for o in ShadowOutcome}
        self._duration = metrics[catalog.SHADOW_DURATION].labels(*labels)
        self._match_iou = metrics[catalog.SHADOW_MATCH_IOU].labels(*labels)
        self._confidence_gap = metrics[catalog.SHADOW_CONFIDENCE_GAP].labels(*labels)
        self._flip_boxes = {view: metrics[catalog.FLIP_BOXES].labels(*labels, view)
                            for view in ("original", "flipped")}
        self._flip_matched = metrics[catalog.FLIP_MATCHED_BOXES].labels(*labels)
        self._class_counters: dict[str, tuple] = {}

    # -- analysis thread ---------------------------------------------------------------

    def offer(self, analysis: Analysis) -> bool:
        """Maybe queue this image for evaluation; never waits. True when queued: the next
        stages then get it from the worker thread once it was evaluated (or could not
        be); otherwise they get it now, without a result."""
        return self._queued(analysis)

    def _queued(self, analysis: Analysis) -> bool:
        waiting = self.state is State.LOADING and self._backoff.failing  # reference down
        if not (self.state is State.RUNNING or waiting) or analysis.detections is None \
                or analysis.image is None:
            return False
        if self._random.random() >= self._config.shadow_sample_share:
            return False
        if waiting or not self._backoff.allows():
            self._outcomes[ShadowOutcome.REFERENCE_ERROR].inc()
            return False
        if not self._budget.try_acquire():
            self._outcomes[ShadowOutcome.OVER_BUDGET].inc()
            return False
        flip = self.primary is not None and self._random.random() < self._config.flip_share
        mirrored = self._flip_random.random() < self._config.reference_flip_share
        try:
            self._queue.put_nowait(ShadowSample(analysis.image, analysis.detections, flip,
                                                analysis, mirrored))
        except queue.Full:
            self._outcomes[ShadowOutcome.DROPPED].inc()
            self._metrics.queue_dropped(SHADOW_QUEUE)
            return False
        return True

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, hand_on: HandOn = end_of_chain) -> None:
        self._hand_on = hand_on
        self._thread.start()

    def close(self) -> None:
        if self.state is not State.DISABLED:
            self.state = State.STOPPED
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT)
        if isinstance(self.reference, RemoteDetector):
            self.reference.close()

    def drain(self, timeout: float) -> bool:
        """Wait until every queued image has been evaluated; False on timeout."""
        return worker_queue.drain(self._queue, self._thread, timeout)

    def wait_started(self, timeout: float) -> bool:
        """Whether loading finished (running or disabled) within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self.state is State.LOADING and time.monotonic() < deadline:
            self._thread.join(0.05)
        return self.state is not State.LOADING

    # -- worker thread -----------------------------------------------------------------

    def _load(self) -> None:
        config = self._config
        settings = DecodeSettings(config.shadow_conf_threshold, config.iou_threshold,
                                  config.max_detections)
        common = {"providers": config.shadow_providers, "settings": settings,
                  "intra_op_threads": config.shadow_threads}
        if config.shadow_reference_url:
            self.reference = self._connect_remote(settings)
        else:
            self.reference = OnnxDetector.load(
                config.shadow_model_path, expected_sha256=config.shadow_model_sha256,
                **common)
            self.reference.warm_up(config.shadow_batch_size)
            if not config.shadow_model_sha256:
                log.warning("reference model %s is not pinned (shadow_model_sha256); its "
                            "sha256 is %s", config.shadow_model_path, self.reference.sha256)
        if config.flip_share > 0 and config.model_path:
            primary_settings = DecodeSettings(config.conf_threshold, config.iou_threshold,
                                              config.max_detections)
            self.primary = OnnxDetector.load(config.model_path,
                                             **{**common, "settings": primary_settings})
            self.primary.warm_up(2)

    def _connect_remote(self, settings: DecodeSettings) -> RemoteDetector | None:
        """Metadata and one warm-up inference, retried with backoff until they work or
        the evaluator stops (None): the shared reference may start after this pod."""
        names = self._config.shadow_reference_class_names or self._primary_names
        while self.state is State.LOADING:
            remote = None
            try:
                remote = RemoteDetector.connect(self._config, names, settings)
                remote.warm_up(1)
                self._backoff.succeeded()
                return remote
            except (ReferenceUnavailable, ModelLoadError) as error:
                if remote is not None:
                    remote.close()
                delay = self._backoff.failed()
                self._failures.warning("connect", "remote reference not usable yet, "
                                       "retrying (every %gs at most): %s", delay, error)
                self._stopping.wait(delay)
        return None

    def _run(self) -> None:
        try:
            self._load()
        except Exception as error:  # any load failure disables shadow, never the sidecar
            self.state = State.DISABLED
            self._metrics.component_error(self.name)
            log.error("shadow evaluation disabled: %s", error)
            return
        if self.state is State.STOPPED or self.reference is None:
            return
        reference = self.reference
        if isinstance(reference, RemoteDetector):
            self._metrics.set_model_info(reference.sha256, role="reference",
                                         served_name=reference.served_name,
                                         served_version=reference.served_version)
        else:
            self._metrics.set_model_info(reference.sha256, role="reference",
                                         served_name=Path(self._config.shadow_model_path).name)
        height, width = reference.input_size
        self.decode_size.need(width, height)  # before any image is queued for it
        self.state = State.RUNNING
        log.info("shadow evaluation running: %s on %s", self.reference.source,
                 self.reference.provider)
        # two stages: while the reference model infers batch n (onnxruntime releases the
        # GIL), a second thread decodes and letterboxes batch n + 1
        with ThreadPoolExecutor(1, thread_name_prefix="lookout-shadow-prep") as preparer:
            pending: tuple[Future, int] | None = None  # (preparation, images it holds)
            while self.state is State.RUNNING or pending is not None:
                running = self.state is State.RUNNING
                batch = self._next_batch(block=pending is None) if running else []
                upcoming = (preparer.submit(self._safely, self.prepare, batch), len(batch)) \
                    if batch else None
                if pending is not None:
                    prepared = pending[0].result()
                    if prepared is not None:
                        self._safely(self.finish, prepared)
                    for _ in range(pending[1]):
                        self._queue.task_done()
                pending = upcoming

    def _next_batch(self, block: bool = True) -> list[ShadowSample]:
        try:
            first = self._queue.get(block)
        except queue.Empty:
            return []
        if first is None:
            self._queue.task_done()
            return []
        batch = [first]
        while len(batch) < self._config.shadow_batch_size:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.task_done()
                self.state = State.STOPPED if self.state is State.RUNNING else self.state
                break
            batch.append(item)
        return batch

    def _safely(self, stage: Callable[[Any], Any], work: Any) -> Any:
        """Run a stage; a failure counts every image of the batch as an error (of the
        remote reference, or lookout's own)."""
        try:
            return stage(work)
        except Exception as error:
            size = work.size if isinstance(work, PreparedBatch) else len(work)
            if isinstance(error, ReferenceUnavailable):
                self._outcomes[ShadowOutcome.REFERENCE_ERROR].inc(size)
                delay = self._backoff.failed()
                self._failures.warning("reference", "remote reference failed on %d images, "
                                       "next try in %gs: %s", size, delay, error)
            else:
                self._outcomes[ShadowOutcome.ERROR].inc(size)
                self._metrics.component_error(self.name)
                self._failures.exception("evaluation", "shadow evaluation of %d images "
                                         "failed", size)
            for sample in work.samples if isinstance(work, PreparedBatch) else work:
                self._report(sample, None)
            return None

    def _report(self, sample: ShadowSample, result: ShadowResult | None) -> None:
        """Hand the analysis on to the next stages; their failures are theirs (the
        chain counts them)."""
        if sample.analysis is not None:
            sample.analysis.reference = result
            self._hand_on(sample.analysis)

    def _pixels(self, sample: ShadowSample) -> DecodedImage | None:
        """The analysis's pixels (decoded once for the chain), or for a bare sample
        decoded here at the model's input size. None: it does not decode."""
        if sample.analysis is not None:
            return decoded_pixels(sample.analysis, self.decode_size)
        assert self.reference is not None
        height, width = self.reference.input_size
        try:
            return decode_rgb(sample.image, width, height)
        except (OSError, ValueError):
            return None

    def prepare(self, batch: Sequence[ShadowSample]) -> PreparedBatch:
        """Letterbox the pixels (decoding those an analysis came without): the CPU
        stage, overlapped with the previous inference."""
        assert self.reference is not None
        prepared = PreparedBatch(len(batch))
        tensors = []
        for sample in batch:
            decoded = self._pixels(sample)
            if decoded is None:
                self._outcomes[ShadowOutcome.NO_IMAGE].inc()
                self._report(sample, None)
                continue
            tensor, geometry = self.reference.prepare(decoded.rgb)
            prepared.samples.append(sample)
            prepared.pixels.append(decoded.rgb)
            prepared.scales.append(decoded.scale)
            prepared.geometries.append(geometry)
            tensors.append(tensor)
        prepared.tensor = np.stack(tensors) if tensors else None
        return prepared

    def finish(self, prepared: PreparedBatch) -> list[Agreement]:
        """Infer, decode, match and record a prepared batch."""
        assert self.reference is not None
        if prepared.tensor is None:
            return []
        # the reference's mirror views ride in the same run: the letterboxed tensor
        # mirrored is the mirrored frame letterboxed
        mirrored = [i for i, sample in enumerate(prepared.samples) if sample.reference_flip]
        tensor = np.concatenate([prepared.tensor, prepared.tensor[mirrored, :, :, ::-1]]) \
            if mirrored else prepared.tensor
        started = time.perf_counter()
        with self._budget.running():  # busy time accrues while the run is going
            heads = self.reference.run(np.ascontiguousarray(tensor))
        self._backoff.succeeded()
        count = len(prepared.samples)
        found = self.reference.decode(heads[:count], prepared.geometries)
        views = dict(zip(mirrored, self.reference.decode(
            heads[count:], [prepared.geometries[i] for i in mirrored]), strict=True))
        elapsed = time.perf_counter() - started
        agreements = []
        for index, (sample, detections, scale) in enumerate(zip(
                prepared.samples, found, prepared.scales, strict=True)):
            self._duration.observe(elapsed / len(found))
            reference = Detections(detections.boxes * scale, detections.scores,
                                   detections.classes)
            primary = Detections(sample.primary.boxes, sample.primary.scores,
                                 reference_class_ids(sample.primary, self._primary_names,
                                                     self.reference.names))
            agreement = match(primary, reference, self._config.shadow_iou_threshold)
            self._record(agreement)
            suspects = self._suspects(primary, reference, scale, prepared.pixels[index])
            self._judge_reference(agreement, primary, detections, views.get(index), scale,
                                  prepared.pixels[index].shape[1])
            agreements.append(agreement)
            if sample.analysis is not None:
                labelled = replace(
                    reference, names=tuple(reference.labels(self.reference.names)))
                self._report(sample, ShadowResult(labelled, agreement, suspects))
        for sample, rgb in zip(prepared.samples, prepared.pixels, strict=True):
            if sample.flip and self.primary is not None:
                self._check_flip(rgb)
        self.evaluated += len(found)
        return agreements

    def _suspects(self, primary: Detections, reference: Detections, scale: float,
                  rgb: np.ndarray) -> tuple[str, ...]:
        """Boxes both models found that sit where both may be wrong alike; counted."""
        both = matched_mask(primary, reference, self._config.shadow_iou_threshold)
        if not both.any():
            return ()
        agreed = Detections(primary.boxes[both] / scale, primary.scores[both],
                            primary.classes[both])
        found: dict[str, int] = {}
        for reasons in suspect_reasons(agreed, rgb):
            for reason in reasons:
                found[reason] = found.get(reason, 0) + 1
        for reason, boxes in found.items():
            self._metrics[catalog.SUSPECT_DETECTIONS].labels(
                self._config.model_name, self._config.model_version, reason).inc(boxes)
        return tuple(found)

    def _judge_reference(self, agreement: Agreement, primary: Detections,
                         detections: Detections, mirrored: Detections | None, scale: float,
                         width: int) -> None:
        """The robust recall counters and the trust signal, from the reference's own
        boxes (in decoded-image pixels) and, when it saw the frame mirrored, those."""
        counts = {"primary": agreement.primary, "reference": agreement.reference,
                  "matched": agreement.matched}
        if mirrored is None:
            self.trust.observe(detections.scores, None, counts)
            return
        sure, survived = confirmed(detections, mirrored, width,
                                   self._config.shadow_recall_floor,
                                   self._config.shadow_iou_threshold)
        sure = Detections(sure.boxes * scale, sure.scores, sure.classes)
        robust = match(primary, sure, self._config.shadow_iou_threshold)
        for index, per_class in ((3, robust.reference_per_class),
                                 (4, robust.matched_per_class)):
            for class_id, boxes in per_class.items():
                self._labels_for(class_id)[index].inc(boxes)
        counts.update(confirmed_reference=robust.reference, confirmed_matched=robust.matched)
        self.trust.observe(detections.scores, (len(detections), len(mirrored), survived),
                           counts)

    def evaluate(self, batch: Sequence[ShadowSample]) -> list[Agreement]:
        """One micro-batch start to end, in the calling thread."""
        return self.finish(self.prepare(batch))

    def _labels_for(self, class_id: int) -> tuple:
        names = self.reference.names if self.reference else ()
        label = names[class_id] if 0 <= class_id < len(names) else OTHER_CLASS
        counters = self._class_counters.get(label)
        if counters is None:
            labels = (self._config.model_name, self._config.model_version, label)
            counters = tuple(self._metrics[spec].labels(*labels) for spec in (
                catalog.SHADOW_PRIMARY_BOXES, catalog.SHADOW_REFERENCE_BOXES,
                catalog.SHADOW_MATCHED_BOXES, catalog.SHADOW_CONFIRMED_REFERENCE_BOXES,
                catalog.SHADOW_CONFIRMED_MATCHED_BOXES))
            self._class_counters[label] = counters
        return counters

    def _record(self, agreement: Agreement) -> None:
        for index, per_class in enumerate((agreement.primary_per_class,
                                           agreement.reference_per_class,
                                           agreement.matched_per_class)):
            for class_id, count in per_class.items():
                self._labels_for(class_id)[index].inc(count)
        for iou in agreement.match_ious.tolist():
            self._match_iou.observe(iou)
        for gap in agreement.confidence_gaps.tolist():
            self._confidence_gap.observe(gap)
        self._outcomes[ShadowOutcome.OK].inc()

    def _check_flip(self, rgb: np.ndarray) -> None:
        """Test-time augmentation consistency of the primary model: detections on the
        image and on its mirror image should be mirror images of each other."""
        assert self.primary is not None
        original, flipped = self.primary.detect_batch([rgb, np.ascontiguousarray(rgb[:, ::-1])])
        agreement = match(original, flip_horizontally(flipped, rgb.shape[1]),
                          self._config.shadow_iou_threshold)
        self._flip_boxes["original"].inc(len(original))
        self._flip_boxes["flipped"].inc(len(flipped))
        self._flip_matched.inc(agreement.matched)
