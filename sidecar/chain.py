"""The analysis chain, declared once: analysis, drift features (when drift is on), then
the reference stage (shadow evaluation, which adds the reference model's detections, or
`NoReference`), then drift and the sample recorder. The wiring is the same whatever is
switched on, and the stop order is the chain's order, so what a stage still holds always
reaches the next one."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from itertools import pairwise

from lookout.sidecar.pipeline.analysis import TrafficAnalyzer
from lookout.sidecar.processes.lead_forward import Forwarder
from lookout.sidecar.quality.drift import DriftMonitor
from lookout.sidecar.quality.drift_features import DriftFeatures
from lookout.sidecar.quality.feature_store import FeatureStore
from lookout.sidecar.quality.reference import NoReference
from lookout.sidecar.quality.shadow import SHADOW_QUEUE, ShadowEvaluator
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.samples.recorder import SAMPLE_QUEUE, SampleRecorder
from lookout.sidecar.served_models import ModelSettings


@dataclass
class AnalysisChain:
    analyzer: TrafficAnalyzer
    reference: ShadowEvaluator | NoReference | Forwarder
    drift: DriftMonitor | None
    samples: SampleRecorder | None
    features: DriftFeatures | None = None  # drift features, before the reference stage
    owns_samples: bool = True  # False: one recorder shared by every model's chain
    stages: list = field(init=False)

    def __post_init__(self) -> None:
        after = [stage for stage in (self.drift, self.samples) if stage is not None]
        before = [self.features] if self.features is not None else []
        owned = [s for s in after if s is not self.samples or self.owns_samples]
        self.stages = [self.analyzer, *before, self.reference, *owned]
        for stage, following in pairwise([self.analyzer, *before, self.reference]):
            stage.add_listener(following)
        for stage in after:
            self.reference.add_listener(stage)

    @classmethod
    def build(cls, model: ModelSettings, metrics: SidecarMetrics,
              samples: SampleRecorder | None = None) -> AnalysisChain:
        """The whole chain for one model, as the lead worker runs it. `samples` is a
        recorder shared with other models' chains (one store, one writer)."""
        analyzer = TrafficAnalyzer(model.analysis, metrics)
        names = analyzer.model.class_names
        reference = ShadowEvaluator(model.shadow, metrics, names) if model.shadowed \
            else NoReference(metrics)
        drift = DriftMonitor(model.drift, metrics, names) if model.drift \
            else None
        shared = samples is not None
        if samples is None and model.samples.sample_dir:
            samples = SampleRecorder(model.samples, metrics, names, drift)
        elif samples is not None:
            samples.add_model(model.name, names, drift, model.samples.sample_strategies)
        features = DriftFeatures(model.drift, metrics, names) if model.drift \
            else None
        return cls(analyzer, reference, drift, samples, features, owns_samples=not shared)

    @classmethod
    def forwarding(cls, model: ModelSettings, metrics: SidecarMetrics,
                   forwarder: Forwarder | None) -> AnalysisChain:
        """The chain of a worker that is not the lead: analysis and drift features
        here, then the analysis handed to the lead's reference stage."""
        analyzer = TrafficAnalyzer(model.analysis, metrics)
        features = DriftFeatures(model.drift, metrics,
                                 analyzer.model.class_names) if model.drift else None
        return cls(analyzer, forwarder or NoReference(metrics), None, None, features)

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
        names = [stage.name for stage in self.stages
                 if not isinstance(stage, NoReference | Forwarder)]
        return names + ([FeatureStore.name] if self.drift else [])

    def start(self) -> None:
        for stage in self.stages:
            if hasattr(stage, "start"):
                stage.start()

    def drain_and_close(self, timeout: float) -> None:
        """Stage by stage in chain order: each drains what it holds into the next."""
        for stage in self.stages:
            if hasattr(stage, "drain"):
                stage.drain(timeout)
            if hasattr(stage, "close"):
                stage.close()

    async def stop(self, timeout: float) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.drain_and_close, timeout)

    def abandon(self) -> None:
        for stage in reversed(self.stages):
            if hasattr(stage, "close"):
                stage.close()
