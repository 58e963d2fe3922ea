"""The analysis chain, declared once: analysis, drift features (when drift is on), then
the reference stage (shadow evaluation, which adds the reference model's detections, or
`NoReference`), then drift and the sample recorder. The wiring is the same whatever is
switched on, and the stop order is the chain's order, so what a stage still holds always
reaches the next one."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from itertools import pairwise

from lookout.sidecar.config import Config
from lookout.sidecar.pipeline.analysis import TrafficAnalyzer
from lookout.sidecar.quality.drift import DriftMonitor
from lookout.sidecar.quality.drift_features import DriftFeatures
from lookout.sidecar.quality.feature_store import FeatureStore
from lookout.sidecar.quality.reference import NoReference
from lookout.sidecar.quality.shadow import SHADOW_QUEUE, ShadowEvaluator
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.samples.recorder import SAMPLE_QUEUE, SampleRecorder
from lookout.sidecar.settings import (
    AnalysisSettings,
    DriftSettings,
    SampleSettings,
    ShadowSettings,
    of,
)


@dataclass
class AnalysisChain:
    analyzer: TrafficAnalyzer
    reference: ShadowEvaluator | NoReference
    drift: DriftMonitor | None
    samples: SampleRecorder | None
    features: DriftFeatures | None = None  # drift features, before the reference stage
    stages: list = field(init=False)

    def __post_init__(self) -> None:
        after = [stage for stage in (self.drift, self.samples) if stage is not None]
        before = [self.features] if self.features is not None else []
        self.stages = [self.analyzer, *before, self.reference, *after]
        for stage, following in pairwise([self.analyzer, *before, self.reference]):
            stage.add_listener(following)
        for stage in after:
            self.reference.add_listener(stage)

    @classmethod
    def build(cls, config: Config, metrics: SidecarMetrics) -> AnalysisChain:
        analyzer = TrafficAnalyzer(of(AnalysisSettings, config), metrics)
        names = analyzer.model.class_names
        reference = ShadowEvaluator(of(ShadowSettings, config), metrics, names) \
            if config.shadow_model_path else NoReference(metrics)
        drift = DriftMonitor(of(DriftSettings, config), metrics, names) if config.drift \
            else None
        samples = SampleRecorder(of(SampleSettings, config), metrics, names, drift) \
            if config.sample_dir else None
        features = DriftFeatures(of(DriftSettings, config), metrics, names) if drift \
            else None
        return cls(analyzer, reference, drift, samples, features)

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
        names = [stage.name for stage in self.stages if not isinstance(stage, NoReference)]
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
