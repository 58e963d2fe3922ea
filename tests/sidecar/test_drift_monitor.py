"""The sidecar's drift monitor on generated scenes: learning, alarming, storing."""

from __future__ import annotations

import io
import os
import time

import numpy as np
import pytest
from PIL import Image

from lookout.lookout_demo.scenes import CLASSES, generate_scene
from lookout.shadow_eval.baseline import Baseline
from lookout.shadow_eval.boxes import Detections
from lookout.sidecar.config import load_config
from lookout.sidecar.pipeline.analysis import Analysis
from lookout.sidecar.pipeline.inputs import open_encoded
from lookout.sidecar.quality.drift_features import DriftFeatures
from lookout.sidecar.quality.feature_store import read_rows
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.settings import DriftSettings, of
from lookout.slo import catalog
from tests.sidecar.test_analysis import _observation

LABELS = {"model": "m", "version": "v"}


def _analysis(seed: int, darken: float = 1.0) -> Analysis:
    scene = generate_scene(seed)
    pixels = np.clip(scene.image.astype(np.float32) * darken, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    detections = Detections.from_arrays(scene.boxes, np.full(len(scene.boxes), 0.8),
                                        scene.classes.clip(0, len(CLASSES) - 1))
    return Analysis(_observation(b""), open_encoded(buffer.getvalue(), "raw"), detections, None)


def _monitor(tmp_path, before_start=lambda: None, **values: str):
    """`before_start` runs after the start-up checks, as a volume changing would."""
    from lookout.sidecar.quality.drift import DriftMonitor

    config = load_config({"model_name": "m", "model_version": "v", "drift_baseline_size": "80",
                          "drift_window": "20", "drift_false_alarm_images": "100000",
                          **values}, env={})
    before_start()
    metrics = SidecarMetrics("m", "v", process_metrics=False)
    return DriftMonitor(of(DriftSettings, config), metrics, CLASSES, seed=0), metrics


def _gauge(metrics: SidecarMetrics, spec: catalog.MetricSpec, feature: str) -> float | None:
    return metrics.registry.get_sample_value(spec.name, {**LABELS, "feature": feature})


def test_learns_a_baseline_then_alarms_on_a_brightness_drop(tmp_path) -> None:
    monitor, metrics = _monitor(tmp_path)
    for seed in range(80):
        monitor.offer(_analysis(seed))
    assert monitor.calibrated.wait(60) and monitor.model is not None
    assert _gauge(metrics, catalog.DRIFT_THRESHOLD, "brightness") > 0
    for seed in range(80, 120):  # stationary: two quiet windows
        monitor.offer(_analysis(seed))
    assert _gauge(metrics, catalog.DRIFT_ALARM, "brightness") == 0
    assert not monitor.alarming  # what the sampler's `drift` rule asks (soak finding)
    assert metrics.registry.get_sample_value(catalog.DRIFT_WINDOWS.sample_name,
                                             {**LABELS, "feature": "brightness"}) == 2
    for seed in range(120, 160):  # 30% darker
        monitor.offer(_analysis(seed, darken=0.7))
    assert _gauge(metrics, catalog.DRIFT_ALARM, "brightness") == 1
    assert monitor.alarming
    assert _gauge(metrics, catalog.DRIFT_STATISTIC, "brightness") > \
        _gauge(metrics, catalog.DRIFT_THRESHOLD, "brightness")
    assert _gauge(metrics, catalog.DRIFT_PSI, "brightness") > 0.25


def test_a_pinned_baseline_is_used_and_a_broken_one_disables_drift(tmp_path) -> None:
    learner, metrics = _monitor(tmp_path)
    features = DriftFeatures(learner._config, metrics, CLASSES, seed=0)
    rows = [features.row(_analysis(seed)) for seed in range(80)]
    path = tmp_path / "baseline.json"
    Baseline.from_rows(rows, "scenes 0-79").save(path)
    pinned, _ = _monitor(tmp_path, drift_baseline_path=str(path))
    assert pinned.calibrated.wait(60)
    assert pinned.model is not None and "brightness" in pinned.model.detectors
    broken, metrics = _monitor(tmp_path, lambda: path.write_text("not json"),
                               drift_baseline_path=str(path))
    assert broken.calibrated.is_set() and broken.disabled and broken.model is None
    assert metrics.registry.get_sample_value(catalog.COMPONENT_ERRORS.sample_name,
                                             {"component": "drift"}) == 1
    broken.offer(_analysis(1))  # ignored, no error


def test_features_are_stored_and_read_back_by_time(tmp_path) -> None:
    monitor, _ = _monitor(tmp_path, feature_store_dir=str(tmp_path / "features"))
    for seed in range(3):
        monitor.offer(_analysis(seed))
    monitor.close()
    rows = list(read_rows(tmp_path / "features"))
    assert len(rows) == 3 and {"brightness", "class", "time", "trace_id"} <= set(rows[0])
    assert list(read_rows(tmp_path / "features", since=time.time() + 60)) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_drops_rows_and_counts_it(tmp_path) -> None:
    store = tmp_path / "features"
    store.mkdir()
    hour = time.strftime("%Y%m%d%H", time.gmtime(0.0))  # _observation() starts at 0.0
    (store / f"features-{hour}.jsonl").symlink_to("/dev/full")  # writes fail with ENOSPC
    monitor, metrics = _monitor(tmp_path, feature_store_dir=str(store))
    for seed in range(3):
        monitor.offer(_analysis(seed))
    assert metrics.registry.get_sample_value(catalog.COMPONENT_ERRORS.sample_name,
                                             {"component": "feature_store"}) == 3
    assert len(monitor._learning) == 3  # drift testing goes on without the store
