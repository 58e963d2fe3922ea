"""The analysis chain, declared once (`STAGES`): the analyser makes one `Analysis` record
per exchange and decodes its image once, at the largest size any stage needs; then the
drift features (when drift is on), the reference stage (shadow evaluation, which sets the
reference model's result, or `NoReference`; in a worker that is not the lead, the
`Forwarder` to the lead's), then drift and the sample recorder, each filling its part of
the record. One loop offers it to each stage in turn; a stage that fails is counted in
`lookout_component_errors_total` under its own name and the next one still gets the
analysis. A stage that works in its own thread (the reference model) keeps the analysis
and hands it on from there. The stop order is the chain's order, so what a stage still
holds always reaches the next one."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lookout.sidecar.pipeline.analysis import Analysis, TrafficAnalyzer
from lookout.sidecar.pipeline.images import DecodeSize
from lookout.sidecar.pipeline.observation import Observation
from lookout.sidecar.pipeline.stage import HandOn, Stage
from lookout.sidecar.processes.lead_forward import Forwarder
from lookout.sidecar.quality.drift import DriftMonitor
from lookout.sidecar.quality.drift_features import DriftFeatures
from lookout.sidecar.quality.feature_store import FeatureStore
from lookout.sidecar.quality.reference import NoReference
from lookout.sidecar.quality.shadow import SHADOW_QUEUE, ShadowEvaluator
from lookout.sidecar.runtime.logs import FailureLog
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.samples.recorder import SAMPLE_QUEUE, SampleRecorder
from lookout.sidecar.served_models import ModelSettings

log = logging.getLogger(__name__)

# The stages after the analyser, in order: one class per place, or the classes one place
# may hold. Every place but the reference stage's may be empty.
STAGES: tuple[tuple[type[Stage], ...], ...] = (
    (DriftFeatures,),
    (ShadowEvaluator, NoReference, Forwarder),  # the reference stage
    (DriftMonitor,),
    (SampleRecorder,),
)
REFERENCE_PLACE = 1


def in_declared_order(stages: Sequence[Stage]) -> bool:
    """Whether `stages` follow STAGES: each in its place, in order, the reference stage
    present."""
    places = []
    for stage in stages:
        found = [i for i, kinds in enumerate(STAGES) if isinstance(stage, kinds)]
        if not found:
            return False
        places.append(found[0])
    return places == sorted(set(places)) and REFERENCE_PLACE in places


@dataclass
class AnalysisChain:
    analyzer: TrafficAnalyzer
    reference: ShadowEvaluator | NoReference | Forwarder
    drift: DriftMonitor | None
    samples: SampleRecorder | None
    features: DriftFeatures | None = None  # drift features, before the reference stage
    owns_samples: bool = True  # False: one recorder shared by every model's chain
    stages: list[Stage] = field(init=False)  # after the analyser, in STAGES' order
    _failures: FailureLog = field(init=False)

    def __post_init__(self) -> None:
        candidates: list[Stage | None] = [self.features, self.reference, self.drift,
                                          self.samples]
        self.stages = [stage for stage in candidates if stage is not None]
        if not in_declared_order(self.stages):
            raise ValueError(f"stages out of their declared order: {self.stages}")
        self._failures = FailureLog(log)

    @classmethod
    def build(cls, model: ModelSettings, metrics: SidecarMetrics,
              samples: SampleRecorder | None = None,
              margins: Callable[[str], float] | None = None) -> AnalysisChain:
        """The whole chain for one model, as the lead worker runs it. `samples` is a
        recorder shared with other models' chains (one store, one writer); `margins`
        the trust bands' factors the lookout process publishes."""
        size = DecodeSize()  # raised by every stage that needs the pixels
        analyzer = TrafficAnalyzer(model.analysis, metrics, decode_size=size)
        names = analyzer.model.class_names
        reference = ShadowEvaluator(model.shadow, metrics, names, decode_size=size,
                                    margins=margins) if model.shadowed else NoReference()
        drift = DriftMonitor(model.drift, metrics, names) if model.drift else None
        shared = samples is not None
        if samples is None and model.samples.sample_dir:
            samples = SampleRecorder(model.samples, metrics, names)
        elif samples is not None:
            samples.add_model(model.name, names, model.samples.sample_strategies)
        if samples is not None:
            size.need(longest=model.samples.sample_image_size)
        features = DriftFeatures(model.drift, metrics, names, decode_size=size) \
            if model.drift else None
        return cls(analyzer, reference, drift, samples, features, owns_samples=not shared)

    @classmethod
    def forwarding(cls, model: ModelSettings, metrics: SidecarMetrics,
                   forwarder: Forwarder | None) -> AnalysisChain:
        """The chain of a worker that is not the lead: analysis and drift features
        here, then the analysis handed to the lead's reference stage."""
        size = DecodeSize()
        analyzer = TrafficAnalyzer(model.analysis, metrics, decode_size=size)
        features = DriftFeatures(model.drift, metrics, analyzer.model.class_names,
                                 decode_size=size) if model.drift else None
        return cls(analyzer, forwarder or NoReference(), None, None, features)

    @property
    def shadow(self) -> ShadowEvaluator | None:
        return self.reference if isinstance(self.reference, ShadowEvaluator) else None

    @property
    def queues(self) -> list[str]:
        return [*([SHADOW_QUEUE] if self.shadow else []),
                *([SAMPLE_QUEUE] if self.samples else [])]

    @property
    def components(self) -> list[str]:
        """The `component` label of every stage that can fail on its own."""
        names = [self.analyzer.name] + [stage.name for stage in self.stages
                                        if not isinstance(stage, NoReference | Forwarder)]
        return names + ([FeatureStore.name] if self.drift else [])

    # -- the one loop ----------------------------------------------------------------

    def analyse_batch(self, observations: Sequence[Observation]) -> list[Analysis]:
        """Analyse a batch and offer each analysis to the stages."""
        analyses = self.analyzer.analyse_batch(observations)
        for analysis in analyses:
            self._offer(analysis, 0)
        return analyses

    def offer_forwarded(self, analysis: Analysis) -> None:
        """An analysis another worker made (its features computed there): from the
        reference stage on."""
        self._offer(analysis, self.stages.index(self.reference))

    def _offer(self, analysis: Analysis, first: int) -> None:
        for stage in self.stages[first:]:
            try:
                if stage.offer(analysis):
                    return  # kept: the stage hands it on when it is done with it
            except Exception:
                self.analyzer.metrics.component_error(stage.name)
                self._failures.exception(stage.name, "%s failed on %s", stage.name,
                                         analysis.observation.path)

    def _hand_on(self, after: int) -> HandOn:
        return lambda analysis: self._offer(analysis, after)

    # -- lifecycle -------------------------------------------------------------------

    @property
    def _owned(self) -> list[Stage]:
        return [stage for stage in self.stages
                if stage is not self.samples or self.owns_samples]

    def start(self) -> None:
        for index, stage in enumerate(self.stages):
            if stage in self._owned:
                stage.start(self._hand_on(index + 1))

    def drain_and_close(self, timeout: float) -> None:
        """Stage by stage in chain order: each drains what it holds into the next."""
        for stage in self._owned:
            stage.drain(timeout)
            stage.close()
        self.analyzer.close()

    def abandon(self) -> None:
        for stage in reversed(self._owned):
            stage.close()
        self.analyzer.close()
