"""The demo's shipped drift baseline: what tools/make_demo_baseline.py makes with the
real `lookout shadow baseline` command, and a detector the demo can use at once."""

from __future__ import annotations

import io
import math
import random
import subprocess
import sys

import numpy as np
from PIL import Image

from lookout.lookout_demo.baseline import BASELINE_IMAGES, BASELINE_SOURCE, DRIFT_BASELINE
from lookout.lookout_demo.camera import DEFAULT_SCHEDULE, encode_frame
from lookout.lookout_demo.run import _with_demo_model
from lookout.shadow_eval.baseline import Baseline
from lookout.shadow_eval.drift import DriftModel
from lookout.shadow_eval.features import feature_row
from lookout.shadow_eval.limits import FEATURES
from lookout.sidecar.config import Config
from tests.support.processes import REPO

PREFIX = 40  # rows regenerated: the scenes are read in order, so a prefix is a prefix


def _same(shipped: float | str | None, made: float | str | None) -> bool:
    """Equal, up to the last float bits onnxruntime may differ by across CPUs."""
    if isinstance(shipped, float) and isinstance(made, float):
        return math.isclose(shipped, made, rel_tol=1e-4, abs_tol=1e-6)
    return shipped == made


def test_the_shipped_baseline_is_what_the_tool_makes(tmp_path) -> None:
    out = tmp_path / "baseline.json"
    subprocess.run([sys.executable, "tools/make_demo_baseline.py", "--count", str(PREFIX),
                    "--out", str(out)], cwd=REPO, check=True, capture_output=True)
    made, shipped = Baseline.load(out), Baseline.load(DRIFT_BASELINE)
    assert (made.source, made.created) == (shipped.source, shipped.created) \
        == (BASELINE_SOURCE, 0.0)
    assert len(shipped.rows) == BASELINE_IMAGES
    for index, (row, expected) in enumerate(zip(made.rows, shipped.rows, strict=False)):
        assert set(row) == set(expected) == set(FEATURES)
        different = {k: (row[k], expected[k]) for k in FEATURES if not _same(expected[k], row[k])}
        assert not different, f"row {index}: {different}"
    assert len(made.rows) == PREFIX


def _demo_drift_model(tmp_path) -> DriftModel:
    """The detector as the demo configures it (its settings, the shipped baseline)."""
    config = _with_demo_model(Config(sample_dir=str(tmp_path)))
    assert config.drift_baseline_path == str(DRIFT_BASELINE)
    return DriftModel.from_rows(Baseline.load(config.drift_baseline_path).rows, FEATURES,
                                window=config.drift_window,
                                false_alarm_images=config.drift_false_alarm_images,
                                clear_windows=config.drift_clear_windows, seed=0)


def test_the_demo_detector_alarms_on_brightness_as_the_lights_dim(tmp_path) -> None:
    model = _demo_drift_model(tmp_path)
    assert set(model.detectors) == set(FEATURES) and not model.skipped
    dimming = next(phase for phase in DEFAULT_SCHEDULE if phase.kind == "dark")
    raised: list[tuple[float, str]] = []
    for index in range(int(dimming.start * 10) + 60):  # the camera's 10 frames a second
        elapsed = index / 10
        jpeg = encode_frame(index, DEFAULT_SCHEDULE, elapsed)
        with Image.open(io.BytesIO(jpeg)) as image:
            rgb = np.asarray(image.convert("RGB"))
        row = feature_row(rgb, rgb.shape[1], rgb.shape[0], None, (), random.Random(0),
                          Config().drift_image_size)
        raised += [(elapsed, r.feature) for r in model.update(row) if r.raised]
    assert raised and raised[0][1] == "brightness", raised
    assert dimming.start < raised[0][0] <= dimming.start + 6, raised  # within 2 windows
