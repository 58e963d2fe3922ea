"""`lookout shadow baseline` and `lookout shadow report`, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from lookout.cli.shadow import parse_time
from lookout.lookout_demo.models import model_path
from lookout.lookout_demo.scenes import generate_scene
from lookout.shadow_eval.features import analysis_pixels, image_features
from lookout.sidecar.quality.feature_store import FeatureStore


def lookout(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lookout", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for seed in range(70):
        Image.fromarray(generate_scene(seed).image).save(folder / f"{seed}.jpg", quality=90)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return folder


def test_baseline_from_images_then_a_report_on_darker_stored_features(images, tmp_path):
    baseline = tmp_path / "baseline.json"
    made = lookout("shadow", "baseline", "--images", str(images), "--model",
                   str(model_path("primary")), "--out", str(baseline))
    assert made.returncode == 0, made.stderr
    assert "70 images" in made.stdout and "1 unreadable" in made.stderr
    document = json.loads(baseline.read_text())
    assert len(document["rows"]) == 70 and "confidence" in document["features"]

    store = FeatureStore(tmp_path / "features", keep_hours=24)
    for seed in range(100, 160):
        dark = (generate_scene(seed).image * 0.7).astype(np.uint8)
        store.append(time.time(), image_features(analysis_pixels(dark, 256), 384, 288), None)
    store.close()
    report = lookout("shadow", "report", "--baseline", str(baseline), "--features",
                     str(tmp_path / "features"), "--since", "1h", "--out",
                     str(tmp_path / "out" / "drift"))
    assert report.returncode == 0, report.stderr
    assert "brightness" in report.stdout.split("drifted (p < 0.05):")[1]
    result = json.loads((tmp_path / "out" / "drift.json").read_text())
    assert result["feature_tests"]["brightness"]["p_value"] < 1e-6
    assert result["feature_tests"]["resolution"]["p_value"] > 0.05  # unchanged
    evidently = {m["metric_name"]: m["value"] for m in result["evidently"]["metrics"]}
    assert any("column=brightness" in name for name in evidently)
    assert (tmp_path / "out" / "drift.html").stat().st_size > 10_000


def test_report_errors_are_clear(tmp_path) -> None:
    (tmp_path / "baseline.json").write_text("{}")
    result = lookout("shadow", "report", "--baseline", str(tmp_path / "baseline.json"),
                     "--features", str(tmp_path), "--out", str(tmp_path / "r"))
    assert result.returncode == 1 and "not a lookout drift baseline" in result.stderr
    empty = lookout("shadow", "baseline", "--features", str(tmp_path / "none"),
                    "--out", str(tmp_path / "b.json"))
    assert empty.returncode == 1 and "no usable rows" in empty.stderr


def test_times_are_iso_or_durations_ago() -> None:
    assert parse_time("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_time("1970-01-01T01:00") == 3600.0
    assert parse_time("1970-01-01T01:00+01:00") == 0.0
    with pytest.raises(Exception, match="neither a time ago"):
        parse_time("yesterday")
