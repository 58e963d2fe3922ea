"""The analysis chain: one declared order whatever is switched on, every analysis reaching
each stage exactly once, a failing stage counted as itself, and each input image decoded
once and its drift features computed once however many stages use them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from PIL import ImageFile

from lookout.lookout_demo.models import PRIMARY, REFERENCE
from lookout.lookout_demo.scenes import generate_scene
from lookout.shadow_eval import features as shadow_features
from lookout.shadow_eval.runner import OnnxDetector
from lookout.sidecar.chain import STAGES, AnalysisChain, in_declared_order
from lookout.sidecar.composition import model_settings
from lookout.sidecar.config import load_config
from lookout.sidecar.pipeline import images
from lookout.sidecar.pipeline.analysis import Analysis
from lookout.sidecar.quality.drift import DriftMonitor
from lookout.sidecar.quality.drift_features import DriftFeatures
from lookout.sidecar.quality.reference import NoReference
from lookout.sidecar.quality.shadow import ShadowEvaluator
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.samples import recorder as recorder_module
from lookout.sidecar.samples.query import SampleQuery
from lookout.sidecar.samples.recorder import SampleRecorder
from lookout.sidecar.settings import DriftSettings, of
from lookout.slo import catalog
from tests.sidecar.test_analysis import _observation


def _chain(tmp_path: Path, **options: str) -> tuple[AnalysisChain, SidecarMetrics]:
    config = load_config({"model_path": str(PRIMARY), **options}, env={})
    metrics = SidecarMetrics("m", "v", process_metrics=False)
    return AnalysisChain.build(model_settings(config), metrics), metrics


@pytest.mark.parametrize(("options", "kinds"), [
    ({"drift": "false"}, [NoReference]),
    ({}, [DriftFeatures, NoReference, DriftMonitor]),
    ({"shadow_model_path": str(REFERENCE)}, [DriftFeatures, ShadowEvaluator, DriftMonitor]),
    ({"shadow_model_path": str(REFERENCE), "sample_dir": "SAMPLES", "drift": "false"},
     [ShadowEvaluator, SampleRecorder]),
    ({"sample_dir": "SAMPLES"}, [DriftFeatures, NoReference, DriftMonitor, SampleRecorder]),
])
def test_the_chain_has_one_shape(tmp_path: Path, options: dict[str, str], kinds) -> None:
    options = {k: v.replace("SAMPLES", str(tmp_path / "s")) for k, v in options.items()}
    chain, _ = _chain(tmp_path, **options)
    try:
        assert [type(stage) for stage in chain.stages] == kinds
        assert in_declared_order(chain.stages)
        places = [next(i for i, place in enumerate(STAGES) if kind in place) for kind in kinds]
        assert places == sorted(places)
    finally:
        chain.abandon()


def test_stages_out_of_their_declared_order_are_refused(tmp_path: Path) -> None:
    chain, _ = _chain(tmp_path)
    try:
        assert chain.drift is not None and chain.features is not None
        assert not in_declared_order([chain.drift, chain.reference])
        assert not in_declared_order([chain.features])  # no reference stage
        with pytest.raises(ValueError, match="declared order"):  # drift before reference
            AnalysisChain(chain.analyzer, chain.reference, None, None,
                          features=chain.drift)  # type: ignore[arg-type]
    finally:
        chain.abandon()


class _Failing(DriftMonitor):
    """The real drift monitor, made to raise after doing its work."""

    name = "broken"

    def offer(self, analysis: Analysis) -> bool:
        super().offer(analysis)
        raise RuntimeError("a broken stage")


def test_every_analysis_passes_once_and_a_failing_stage_is_counted_as_itself(
        tmp_path: Path) -> None:
    built, metrics = _chain(tmp_path, sample_dir=str(tmp_path / "s"),
                            sample_strategies="random share=1 per_minute=100")
    failing = _Failing(of(DriftSettings, load_config({}, env={})), metrics)
    chain = AnalysisChain(built.analyzer, built.reference, failing, built.samples,
                          built.features)
    assert chain.samples is not None
    chain.start()
    assert chain.samples.ready.wait(30)
    analyses = chain.analyse_batch([_scene(seed) for seed in range(2)])
    assert chain.samples.drain(30)
    assert len(analyses) == 2
    errors = metrics.registry.get_sample_value(catalog.COMPONENT_ERRORS.sample_name,
                                               {"component": "broken"})
    assert errors == 2
    assert chain.samples.store is not None
    assert len(chain.samples.store.query(SampleQuery(limit=10)).samples) == 2  # recorded
    chain.drain_and_close(1.0)


def _scene(seed: int):
    """A real exchange: a JPEG scene and the primary model's own detections of it."""
    scene = generate_scene(seed)
    [found] = _primary().detect_batch([scene.image])
    body = json.dumps([{"box": box, "score": score, "class": int(c)} for box, score, c in zip(
        found.boxes.tolist(), found.scores.tolist(), found.classes.tolist(), strict=True)])
    observation = _observation(body.encode(), request=scene.jpeg())
    return dataclasses.replace(observation, trace_id=f"{seed:032x}")


_PRIMARY: list[OnnxDetector] = []


def _primary() -> OnnxDetector:
    if not _PRIMARY:
        _PRIMARY.append(OnnxDetector.load(PRIMARY, providers=("cpu",)))
    return _PRIMARY[0]


class _Calls:
    """Counts the calls of a real function and calls it through."""

    def __init__(self, function) -> None:
        self.function, self.calls = function, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.function(*args, **kwargs)


class _PixelLoads:
    """Counts Pillow's decodes of encoded pixels (a load with tiles still to decode)."""

    def __init__(self, load) -> None:
        self.calls = 0
        real = load

        def counting(image: ImageFile.ImageFile):
            self.calls += bool(image.tile)
            return real(image)

        self.load = counting


def test_each_image_is_decoded_once_and_its_features_computed_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stage that reads pixels or features is on and takes every exchange: the
    reference model evaluates each (share 1, budget unbounded), drift samples each, the
    recorder keeps each. Still one decode (the project's decoder and Pillow's own pixel
    loads both count it) and one feature row per exchange."""
    count = 6
    chain, _ = _chain(
        tmp_path, shadow_model_path=str(REFERENCE), shadow_sample_share="1",
        shadow_rate="1000", shadow_burst="1000", shadow_max_busy_share="1",
        # every image kept: a quota the pacing of the random draw never reaches
        sample_dir=str(tmp_path / "s"), sample_strategies="random share=1 per_minute=100000",
        drift_baseline_size="1000")
    exchanges = [_scene(seed) for seed in range(count)]  # encoded before counting
    decodes = _Calls(images.decode_rgb)
    monkeypatch.setattr(images, "decode_rgb", decodes)
    pixel_loads = _PixelLoads(ImageFile.ImageFile.load)
    monkeypatch.setattr(ImageFile.ImageFile, "load", pixel_loads.load)
    rows = _Calls(shadow_features.feature_row)
    for module in (shadow_features, recorder_module,
                   __import__("lookout.sidecar.quality.drift_features",
                              fromlist=["feature_row"])):
        monkeypatch.setattr(module, "feature_row", rows)
    shadow = chain.shadow
    assert shadow is not None and chain.samples is not None
    chain.start()
    try:
        assert shadow.wait_started(60) and chain.samples.ready.wait(30)
        analyses = chain.analyse_batch(exchanges)
        assert shadow.drain(60) and chain.samples.drain(60)
        assert shadow.evaluated == count  # the reference saw every image...
        assert chain.samples.store is not None  # ...and the recorder kept every one
        stored = chain.samples.store.query(SampleQuery(limit=count)).samples
        assert len(stored) == count
        assert decodes.calls == count and pixel_loads.calls == count
        assert rows.calls == count
        for analysis in analyses:  # one record carried it all
            assert analysis.decoded is not None and analysis.features
            assert analysis.reference is not None
        size = chain.analyzer.decode_size  # the largest need: the reference's input
        assert (size.width, size.height) == shadow.reference.input_size[::-1]
        by_trace = {a.observation.trace_id: a.features for a in analyses}
        for sample in stored:  # the recorder stored the drift stage's row
            assert sample.features["brightness"] == pytest.approx(
                by_trace[sample.trace_id]["brightness"])
    finally:
        chain.drain_and_close(5.0)
