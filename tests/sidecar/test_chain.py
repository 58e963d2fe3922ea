"""The analysis chain: one wiring whatever is switched on, every analysis reaching the
stages after the reference stage exactly once, and a failing stage counted as itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lookout.lookout_demo.models import PRIMARY, REFERENCE
from lookout.sidecar.chain import AnalysisChain
from lookout.sidecar.composition import model_settings
from lookout.sidecar.config import load_config
from lookout.sidecar.pipeline.analysis import Analysis
from lookout.sidecar.quality.drift import DriftMonitor
from lookout.sidecar.quality.drift_features import DriftFeatures
from lookout.sidecar.quality.reference import NoReference
from lookout.sidecar.quality.shadow import ShadowEvaluator
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.samples.recorder import SampleRecorder
from lookout.slo import catalog
from tests.sidecar.test_analysis import _observation


def _chain(tmp_path: Path, **options: str) -> tuple[AnalysisChain, SidecarMetrics]:
    config = load_config({"model_path": str(PRIMARY), **options}, env={})
    metrics = SidecarMetrics("m", "v", process_metrics=False)
    return AnalysisChain.build(model_settings(config), metrics), metrics


@pytest.mark.parametrize(("options", "kinds"), [
    ({"drift": "false"}, [NoReference]),
    ({}, [NoReference, DriftMonitor]),
    ({"shadow_model_path": str(REFERENCE)}, [ShadowEvaluator, DriftMonitor]),
    ({"shadow_model_path": str(REFERENCE), "sample_dir": "SAMPLES", "drift": "false"},
     [ShadowEvaluator, SampleRecorder]),
    ({"sample_dir": "SAMPLES"}, [NoReference, DriftMonitor, SampleRecorder]),
])
def test_the_chain_has_one_shape(tmp_path: Path, options: dict[str, str], kinds) -> None:
    options = {k: v.replace("SAMPLES", str(tmp_path / "s")) for k, v in options.items()}
    chain, _ = _chain(tmp_path, **options)
    try:
        features = [DriftFeatures] if DriftMonitor in kinds else []
        assert [type(stage) for stage in chain.stages[1:]] == [*features, *kinds]
        first = chain.features or chain.reference
        assert list(chain.analyzer._listeners) == [first]
        if chain.features is not None:  # computed in every worker, tested by the lead
            assert list(chain.features.listeners) == [chain.reference]
        after = chain.stages.index(chain.reference) + 1
        assert list(chain.reference.listeners) == chain.stages[after:]
    finally:
        chain.abandon()


class _Counting:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name, self.fail, self.seen = name, fail, []

    def consider(self, analysis: Analysis, reference) -> None:
        self.seen.append((analysis, reference))
        if self.fail:
            raise RuntimeError("a broken stage")


def test_every_analysis_passes_once_and_a_failing_stage_is_counted_as_itself(
        tmp_path: Path) -> None:
    chain, metrics = _chain(tmp_path, drift="false")
    broken, after = _Counting("broken", fail=True), _Counting("after")
    chain.reference.add_listener(broken)
    chain.reference.add_listener(after)
    analysis = Analysis(_observation(b"[]"), None, None, None)
    chain.reference.offer(analysis)
    chain.reference.offer(analysis)
    assert after.seen == [(analysis, None)] * 2 and len(broken.seen) == 2
    errors = metrics.registry.get_sample_value(catalog.COMPONENT_ERRORS.sample_name,
                                               {"component": "broken"})
    assert errors == 2
    asyncio.run(chain.stop(1.0))
