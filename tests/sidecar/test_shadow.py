"""Shadow evaluation with the shipped models: proxies, flip consistency, budget, and
every way the reference model can fail leaving the proxy untouched."""

from __future__ import annotations

import dataclasses
import io
import queue

import numpy as np
import pytest
from PIL import Image

from lookout.lookout_demo.models import model_path
from lookout.lookout_demo.scenes import CLASSES, generate_scene
from lookout.shadow_eval.boxes import Detections
from lookout.shadow_eval.budget import ComputeBudget
from lookout.shadow_eval.decode import DecodeSettings
from lookout.shadow_eval.runner import OnnxDetector, file_sha256
from lookout.sidecar.config import load_config
from lookout.sidecar.pipeline.analysis import Analysis
from lookout.sidecar.pipeline.inputs import open_encoded
from lookout.sidecar.quality.shadow import ShadowEvaluator, ShadowSample, State, reference_class_ids
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.settings import ShadowSettings, of
from lookout.slo import catalog
from tests.sidecar.test_analysis import _observation

PRIMARY, REFERENCE = model_path("primary"), model_path("reference")


def _config(**values: str):
    return load_config({"model_name": "m", "model_version": "v", **values}, env={})


def _config_after_start_up(**values: str):
    """A configuration whose reference file went bad after start-up checked it (a volume
    changed under the pod): the evaluator must still disable itself alone."""
    path = values.pop("shadow_model_path")
    return dataclasses.replace(_config(**values), shadow_model_path=path)


def _value(metrics: SidecarMetrics, spec: catalog.MetricSpec, **labels: str) -> float:
    return metrics.registry.get_sample_value(spec.sample_name, {"model": "m", "version": "v",
                                                                **labels}) or 0.0


def _total(metrics: SidecarMetrics, spec: catalog.MetricSpec) -> float:
    return sum(sample.value for metric in metrics.registry.collect() if metric.name == spec.name
               for sample in metric.samples if sample.name == spec.sample_name)


@pytest.fixture(scope="module")
def primary_model() -> OnnxDetector:
    return OnnxDetector.load(PRIMARY, providers=("cpu",))


@pytest.fixture(scope="module")
def samples(primary_model) -> list[ShadowSample]:
    """JPEG scenes as clients send them, with the primary's detections on them."""
    result = []
    for seed in range(12):
        buffer = io.BytesIO()
        Image.fromarray(generate_scene(seed).image).save(buffer, "JPEG", quality=95)
        image = open_encoded(buffer.getvalue(), "raw")
        rgb = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
        [detections] = primary_model.detect_batch([rgb])
        result.append(ShadowSample(image, detections, flip=True))
    return result


def _started(config, **kwargs) -> tuple[ShadowEvaluator, SidecarMetrics]:
    metrics = SidecarMetrics("m", "v", process_metrics=False)
    evaluator = ShadowEvaluator(of(ShadowSettings, config), metrics, CLASSES, **kwargs)
    evaluator.start()
    assert evaluator.wait_started(60)
    return evaluator, metrics


def test_the_primary_as_its_own_reference_agrees_exactly(samples) -> None:
    evaluator, metrics = _started(_config(shadow_model_path=str(PRIMARY)))
    try:
        agreements = evaluator.evaluate(samples)
    finally:
        evaluator.close()
    primary = sum(len(s.primary) for s in samples)
    assert primary > 20
    assert [a.matched for a in agreements] == [len(s.primary) for s in samples]
    assert _total(metrics, catalog.SHADOW_MATCHED_BOXES) == primary
    assert _total(metrics, catalog.SHADOW_REFERENCE_BOXES) == primary
    assert _value(metrics, catalog.SHADOW_EVALUATIONS, outcome="ok") == len(samples)


def test_reference_proxies_on_clean_scenes(samples) -> None:
    evaluator, metrics = _started(_config(shadow_model_path=str(REFERENCE),
                                          shadow_model_sha256=file_sha256(REFERENCE)))
    try:
        evaluator.evaluate(samples)
    finally:
        evaluator.close()
    matched = _total(metrics, catalog.SHADOW_MATCHED_BOXES)
    precision = matched / _total(metrics, catalog.SHADOW_PRIMARY_BOXES)
    recall = matched / _total(metrics, catalog.SHADOW_REFERENCE_BOXES)
    # both models are good on clean scenes (mAP 0.93/0.94): the proxies must say so
    assert precision > 0.8 and recall > 0.8
    assert metrics.registry.get_sample_value(catalog.MODEL_INFO.name, {
        "model": "m", "version": "v", "sha256": file_sha256(REFERENCE), "role": "reference",
        "served_name": REFERENCE.name, "served_version": ""}) == 1
    per_class = {c: _value(metrics, catalog.SHADOW_REFERENCE_BOXES, **{"class": c})
                 for c in CLASSES}
    assert sum(per_class.values()) == _total(metrics, catalog.SHADOW_REFERENCE_BOXES)
    assert metrics.registry.get_sample_value(catalog.SHADOW_MATCH_IOU.count_name,
                                             {"model": "m", "version": "v"}) == matched


def test_flip_consistency_of_the_primary(samples) -> None:
    evaluator, metrics = _started(_config(shadow_model_path=str(REFERENCE),
                                          model_path=str(PRIMARY), flip_share="1"))
    try:
        evaluator.evaluate(samples)
    finally:
        evaluator.close()
    original = _value(metrics, catalog.FLIP_BOXES, view="original")
    flipped = _value(metrics, catalog.FLIP_BOXES, view="flipped")
    matched = _value(metrics, catalog.FLIP_MATCHED_BOXES)
    assert original == sum(len(s.primary) for s in samples)  # same model, same pixels
    assert 0.7 < 2 * matched / (original + flipped) <= 1.0


def test_sampling_budget_and_queue_overflow_are_counted(samples) -> None:
    config = _config(shadow_model_path=str(REFERENCE), shadow_sample_share="1",
                     shadow_queue_size="2")
    metrics = SidecarMetrics("m", "v", process_metrics=False)
    budget = ComputeBudget(rate_per_second=1e-9, burst=3, max_busy_share=1.0)
    evaluator = ShadowEvaluator(of(ShadowSettings, config), metrics, CLASSES, budget=budget)
    evaluator.state = State.RUNNING  # the worker is not started: nothing drains the queue
    for sample in samples[:5]:
        evaluator.offer(Analysis(_observation(b""), sample.image, sample.primary, None))
    assert _value(metrics, catalog.SHADOW_EVALUATIONS, outcome="over_budget") == 2
    assert _value(metrics, catalog.SHADOW_EVALUATIONS, outcome="dropped") == 1
    assert metrics.registry.get_sample_value(catalog.QUEUE_DROPPED.sample_name,
                                             {"queue": "shadow"}) == 1


class _VirtualClock:
    """Time that passes only while the reference model runs: a worker that is never
    idle while images wait (a CPU-saturated one), independent of this machine."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("share", ["1", "0.5"])
def test_a_saturated_reference_is_refused_only_below_a_share_of_1(samples, share) -> None:
    clock = _VirtualClock()
    config = _config(shadow_model_path=str(REFERENCE), shadow_sample_share="1",
                     shadow_max_busy_share=share, shadow_queue_size="16")
    budget = ComputeBudget(1e6, 1e6, float(share), window_seconds=10, clock=clock)
    evaluator, metrics = _started(config, budget=budget)
    assert evaluator.reference is not None
    run = evaluator.reference.run

    def one_second_run(batch):  # calls the real model through
        clock.now += 1.0
        return run(batch)

    evaluator.reference.run = one_second_run  # type: ignore[method-assign]
    try:
        for _ in range(20):
            before = _value(metrics, catalog.SHADOW_EVALUATIONS, outcome="ok")
            for sample in samples[:8]:
                evaluator.offer(Analysis(_observation(b""), sample.image, sample.primary,
                                         None))
            assert evaluator.drain(60)
            if _value(metrics, catalog.SHADOW_EVALUATIONS, outcome="ok") == before:
                clock.now += 1.0  # nothing admitted: the worker idled
    finally:
        evaluator.close()
    over = _value(metrics, catalog.SHADOW_EVALUATIONS, outcome="over_budget")
    evaluated = _value(metrics, catalog.SHADOW_EVALUATIONS, outcome="ok")
    assert over + evaluated == 160
    if share == "1":
        assert over == 0
    else:
        assert over > 0 and evaluated > 0


def test_images_without_detections_or_pixels_are_not_offered(samples) -> None:
    config = _config(shadow_model_path=str(REFERENCE), shadow_sample_share="1")
    evaluator = ShadowEvaluator(of(ShadowSettings, config),
                                SidecarMetrics("m", "v", process_metrics=False))
    evaluator.state = State.RUNNING
    evaluator.offer(Analysis(_observation(b""), samples[0].image, None, None))
    evaluator.offer(Analysis(_observation(b""), None, samples[0].primary, None))
    with pytest.raises(queue.Empty):
        evaluator._queue.get_nowait()


@pytest.mark.parametrize("problem", ["sha_mismatch", "corrupt", "missing"])
def test_unusable_reference_disables_shadow_only(problem, tmp_path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08garbage" * 64)
    values = {"sha_mismatch": {"shadow_model_path": str(REFERENCE),
                               "shadow_model_sha256": "ab" * 32},
              "corrupt": {"shadow_model_path": str(corrupt)},
              "missing": {"shadow_model_path": str(tmp_path / "nope.onnx")}}[problem]
    evaluator, metrics = _started(_config_after_start_up(**values))
    evaluator.close()
    assert evaluator.state is State.DISABLED
    assert metrics.registry.get_sample_value(catalog.COMPONENT_ERRORS.sample_name,
                                             {"component": "shadow"}) == 1
    info = [s for m in metrics.registry.collect() if m.name == catalog.MODEL_INFO.name
            for s in m.samples if s.labels.get("role") == "reference"]
    assert info == []


def test_a_model_that_throws_is_counted_and_the_worker_carries_on(samples) -> None:
    evaluator, metrics = _started(_config(shadow_model_path=str(REFERENCE),
                                          shadow_sample_share="1"))
    healthy = evaluator.reference.session

    class Exploding:
        def run(self, *args, **kwargs):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    try:
        evaluator.reference.session = Exploding()
        evaluator._safely(evaluator.evaluate, list(samples[:3]))
        assert _value(metrics, catalog.SHADOW_EVALUATIONS, outcome="error") == 3
        evaluator.reference.session = healthy
        evaluator._safely(evaluator.evaluate, list(samples[:2]))
        assert _value(metrics, catalog.SHADOW_EVALUATIONS, outcome="ok") == 2
    finally:
        evaluator.close()


def test_primary_classes_are_aligned_by_name() -> None:
    named = Detections.from_arrays(np.zeros((3, 4)), [0.9] * 3, [0, 0, 0],
                                   names=("square", "dog", "circle"))
    assert reference_class_ids(named, (), CLASSES).tolist() == [1, -1, 0]
    by_id = Detections.from_arrays(np.zeros((2, 4)), [0.9] * 2, [0, 1])
    assert reference_class_ids(by_id, ("square", "circle"), CLASSES).tolist() == [1, 0]
    assert reference_class_ids(by_id, CLASSES, CLASSES).tolist() == [0, 1]


def test_decode_settings_follow_config() -> None:
    evaluator, _ = _started(_config(shadow_model_path=str(REFERENCE),
                                    shadow_conf_threshold="0.6"))
    evaluator.close()
    assert evaluator.reference.settings == DecodeSettings(0.6, 0.45, 300)
