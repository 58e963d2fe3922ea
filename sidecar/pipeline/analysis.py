"""Turn observations into detection metrics: find the input image, decode it once for
the whole chain, decode the primary model's detections, record them. Off the request
path: in an analysis worker process. Anything it
cannot parse is counted in lookout_parse_failures_total{reason} and otherwise ignored,
and every observation it gets is counted once in lookout_observations_total{outcome}.

Each exchange becomes one `Analysis` record that the chain's stages fill as it passes
them (`chain.py`): the pixels here, then the drift features, the reference model's
result and the drift state, which the sample recorder reads instead of recomputing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lookout.shadow_eval.boxes import Detections
from lookout.shadow_eval.decode import DecodeSettings, HeadLayout
from lookout.shadow_eval.names import ModelMetadataError, read_model_metadata
from lookout.sidecar.pipeline.content_encoding import inflate_observation
from lookout.sidecar.pipeline.cost import exchange_seconds
from lookout.sidecar.pipeline.images import DecodedImage, DecodeSize, decode_at, decode_input
from lookout.sidecar.pipeline.inputs import InputImage, extract_image
from lookout.sidecar.pipeline.observation import Observation
from lookout.sidecar.pipeline.outcome import Outcome
from lookout.sidecar.pipeline.outputs import OutputSettings, ResponseMapping, extract_detections
from lookout.sidecar.pipeline.parse_errors import ParseFailure, Reason
from lookout.sidecar.runtime.logs import FailureLog
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.settings import AnalysisSettings
from lookout.slo import catalog

if TYPE_CHECKING:
    from lookout.shadow_eval.features import FeatureRow
    from lookout.sidecar.quality.shadow import ShadowResult

log = logging.getLogger(__name__)

OTHER_CLASS = "other"
# a response inventing class names must not inflate the label set without bound
MAX_CLASS_LABELS = 1000
# a roll-out shows two or three versions at once; more are one `other`
MAX_SERVED_VERSIONS = 8


@dataclass(slots=True, eq=False)
class Analysis:
    """What one exchange showed, one record from the analyser to the last stage: the
    input image and the primary model's detections, then what each stage adds. One
    thread holds it at a time (stages hand it on through queues), so it is filled in
    place."""

    observation: Observation
    image: InputImage | None
    detections: Detections | None
    failure: ParseFailure | None
    decoded: DecodedImage | None = None  # the pixels, at the largest size a stage needs
    features: FeatureRow | None = None  # drift features ({}: not sampled), DriftFeatures
    reference: ShadowResult | None = None  # the reference model's result, when it ran
    drifting: bool = False  # a drift alarm was raised when it passed the drift stage


def decoded_pixels(analysis: Analysis, size: DecodeSize) -> DecodedImage | None:
    """The analysis's pixels; decoded now (once, kept on the record) when it came without
    them: forwarded by another worker, which keeps its pixels. None: no usable image."""
    if analysis.decoded is None and analysis.image is not None:
        try:
            analysis.decoded = decode_at(analysis.image, size)
        except (OSError, ValueError, SyntaxError):
            analysis.image = None  # not decodable: no stage tries again
    return analysis.decoded


@dataclass(frozen=True, slots=True)
class ModelDescription:
    class_names: tuple[str, ...]
    input_size: tuple[int, int]  # (height, width)


def describe_model(config: AnalysisSettings) -> ModelDescription:
    """Class names from config, else from the model file's metadata; input size likewise."""
    names, size = config.class_names, (config.input_size, config.input_size)
    if config.model_path:
        try:
            metadata = read_model_metadata(config.model_path)
        except ModelMetadataError as error:
            log.warning("model metadata unavailable, using configured names: %s", error)
        else:
            names = names or metadata.names
            size = metadata.input_size or size
    return ModelDescription(tuple(names), size)


class ClassLabels:
    """Class id or name -> bounded `class` label value."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self._names = names
        self._seen: set[str] = set(names)

    def label(self, class_id: int, name: str | None) -> str:
        if name:
            if name in self._seen:
                return name
            if self._names or len(self._seen) >= MAX_CLASS_LABELS:
                return OTHER_CLASS
            self._seen.add(name)
            return name
        if 0 <= class_id < len(self._names):
            return self._names[class_id]
        if self._names or class_id < 0 or class_id >= MAX_CLASS_LABELS:
            return OTHER_CLASS
        return str(class_id)


class TrafficAnalyzer:
    """Observation consumer: parses bodies, records detection metrics, and decodes each
    input image once at `decode_size`, the largest size the chain's stages need."""

    name = "analysis"

    def __init__(self, config: AnalysisSettings, metrics: SidecarMetrics,
                 model: ModelDescription | None = None,
                 decode_size: DecodeSize | None = None) -> None:
        model = model or describe_model(config)
        self.model = model
        self._config = config
        self.decode_size = decode_size or DecodeSize()
        self._metrics = metrics
        self._failures = FailureLog(log)
        self._labels = ClassLabels(model.class_names)
        self._settings = OutputSettings(
            decode=DecodeSettings(config.conf_threshold, config.iou_threshold,
                                  config.max_detections),
            num_classes=len(model.class_names) or None,
            input_size=model.input_size,
            head_layout=None if config.head_layout == "auto" else HeadLayout(config.head_layout),
            mapping=ResponseMapping(config.detections_path, config.box_field, config.box_format,
                                    config.score_field, config.class_field),
        )
        labels = (config.model_name, config.model_version)
        self._per_request = metrics[catalog.DETECTIONS_PER_REQUEST].labels(*labels)
        self._confidence = metrics[catalog.DETECTION_CONFIDENCE].labels(*labels)
        self._box_area = metrics[catalog.DETECTION_BOX_AREA].labels(*labels)
        self._class_counters: dict[str, object] = {}
        self._served_versions: dict[str, object] = {}

    @property
    def metrics(self) -> SidecarMetrics:
        return self._metrics

    @staticmethod
    def worth_analysing(observation: Observation) -> bool:
        """Only successful exchanges that sent a body: health checks and errors carry
        no detections, and counting them as parse failures would be noise."""
        return 200 <= observation.status < 300 and (bool(observation.request_body)
                                                    or observation.request_truncated)

    @staticmethod
    def worth_offering(observation: Observation) -> bool:
        """Server errors carry no detections, but their inputs are what postmortems need
        (the sampler's `error` rule), so the stages see them too."""
        return observation.status >= 500 and bool(observation.request_body)

    def analyse_batch(self, observations: Sequence[Observation]) -> list[Analysis]:
        """Analyse (or pass over) each observation, counting each one's outcome; the
        analyses go on to the chain's stages. An unexpected error in one exchange is
        counted and does not stop the others."""
        results = []
        for observation in observations:
            try:
                result = self._one(observation)
            except Exception:
                self._metrics.component_error(self.name)
                self._metrics.observed(Outcome.ERROR)
                self._failures.exception("analysis", "analysis failed on %s %s",
                                         observation.method, observation.path)
                continue
            if result is not None:
                results.append(result)
        return results

    def _one(self, observation: Observation) -> Analysis | None:
        if self.worth_analysing(observation):
            observation, request_failure, response_failure = self.inflated(observation)
            if response_failure is not None:
                self._metrics.parse_failure(response_failure.reason)
                analysis = Analysis(observation, None, None, response_failure)
            else:
                analysis = self.over_budget(observation) or \
                    self.analyse(observation, request_failure)
            self._metrics.observed(Outcome.ANALYSED if analysis.failure is None
                                   else Outcome.PARSE_FAILED)
            return analysis
        self._metrics.observed(Outcome.NOT_ANALYSED)
        return self.describe_error(observation) if self.worth_offering(observation) else None

    def inflated(self, observation: Observation
                 ) -> tuple[Observation, ParseFailure | None, ParseFailure | None]:
        return inflate_observation(observation, self._config.observe_max_bytes)

    def over_budget(self, observation: Observation) -> Analysis | None:
        """The exchange's skipped analysis (counted) when decoding it is estimated to
        cost more than `analysis_budget`; None when it may be analysed."""
        cost = exchange_seconds(observation.request_headers, observation.request_body,
                                observation.response_headers, observation.response_body)
        if cost <= self._config.analysis_budget:
            return None
        self._metrics.parse_failure(Reason.OVER_BUDGET)
        return Analysis(observation, None, None, ParseFailure(
            Reason.OVER_BUDGET, f"estimated {cost:.2f}s of decoding, over analysis_budget "
            f"({self._config.analysis_budget:g}s)"))

    def analyse(self, observation: Observation,
                request_failure: ParseFailure | None = None) -> Analysis:
        """Parse and record one exchange (in an analysis thread)."""
        image: InputImage | None = None
        decoded: DecodedImage | None = None
        try:
            image, decoded = self._image(observation, request_failure)
            if observation.response_truncated:
                raise ParseFailure(Reason.RESPONSE_TOO_LARGE,
                                   f"response larger than observe_max_bytes "
                                   f"({self._config.observe_max_bytes} bytes)")
            served: dict[str, str] = {}
            detections = extract_detections(observation.response_headers,
                                            observation.response_body, image, self._settings,
                                            served, observation.path)
        except ParseFailure as failure:
            self._metrics.parse_failure(failure.reason)
            log.debug("could not parse %s %s: %s", observation.method, observation.path,
                      failure)
            return Analysis(observation, image, None, failure, decoded)
        self._record(detections, image)
        if "model_version" in served:
            self._served(served["model_version"])
        return Analysis(observation, image, detections, None, decoded)

    def _counter(self, spec: catalog.MetricSpec, cache: dict[str, object], label: str):
        """This model's child of `spec` for one more label value, kept: `labels()` costs
        microseconds a call."""
        counter = cache.get(label)
        if counter is None:
            counter = cache[label] = self._metrics[spec].labels(
                self._config.model_name, self._config.model_version, label)
        return counter

    def _served(self, version: str) -> None:
        """Count the version the server says answered, a bounded set per model."""
        if version not in self._served_versions and \
                len(self._served_versions) >= MAX_SERVED_VERSIONS:
            version = OTHER_CLASS
        self._counter(catalog.SERVED_RESPONSES, self._served_versions, version).inc()

    def describe_error(self, observation: Observation) -> Analysis:
        """The input of a failed exchange; nothing is recorded or counted for it."""
        observation, request_failure, _ = self.inflated(observation)
        if observation.request_truncated or request_failure is not None:
            return Analysis(observation, None, None, None)
        try:
            image, decoded = self._decoded(observation)
        except ParseFailure:
            return Analysis(observation, None, None, None)
        return Analysis(observation, image, None, None, decoded)

    def _image(self, observation: Observation, request_failure: ParseFailure | None = None
               ) -> tuple[InputImage | None, DecodedImage | None]:
        """The input image and its pixels, or None when it cannot be had: detections are
        still worth recording without it, so a request-side failure is counted and
        tolerated."""
        if observation.request_truncated:  # only a prefix was kept: not decodable
            self._metrics.parse_failure(Reason.REQUEST_TOO_LARGE)
            return None, None
        if request_failure is not None:  # a compressed body that would not inflate
            self._metrics.parse_failure(request_failure.reason)
            return None, None
        try:
            return self._decoded(observation)
        except ParseFailure as failure:
            self._metrics.parse_failure(failure.reason)
            return None, None

    def _decoded(self, observation: Observation
                 ) -> tuple[InputImage | None, DecodedImage | None]:
        """The image found and decoded once: at the chain's size when a stage needs its
        pixels (kept), else only checked whole by `extract_image` (at 1/8, no pixels
        kept). Raises ParseFailure."""
        needed = self.decode_size.needed
        image = extract_image(observation.path, observation.request_headers,
                              observation.request_body, self._config.image_fields,
                              check=not needed)
        if image is None or not needed:
            return image, None
        return image, decode_input(image, self.decode_size)

    def _record(self, detections: Detections, image: InputImage | None) -> None:
        count = len(detections)
        self._per_request.observe(count)
        if not count:
            return
        names = detections.names or (None,) * count
        for class_id, name in zip(detections.classes.tolist(), names, strict=True):
            label = self._labels.label(class_id, name or None)
            self._counter(catalog.DETECTIONS, self._class_counters, label).inc()
        for score in detections.scores.tolist():
            self._confidence.observe(score)
        for ratio in self._area_ratios(detections, image).tolist():
            self._box_area.observe(ratio)

    def _area_ratios(self, detections: Detections, image: InputImage | None) -> np.ndarray:
        areas = detections.areas()
        if image is not None:
            return np.clip(areas / float(image.width * image.height), 0.0, 1.0)
        if detections.boxes.size and float(detections.boxes.max()) <= 1.0:
            return np.clip(areas, 0.0, 1.0)  # normalised coordinates
        return np.zeros(0)  # no frame size to relate to

    def close(self) -> None:
        """Holds nothing that needs closing (the chain calls it at the end)."""
