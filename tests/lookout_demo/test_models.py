"""The shipped detectors, loaded with onnxruntime and scored on generated scenes."""

from __future__ import annotations

from pathlib import Path

import pytest

from lookout.lookout_demo.models import MODELS_DIR, model_path
from lookout.lookout_demo.perturbations import perturb
from lookout.lookout_demo.scenes import CLASSES, generate_scene
from lookout.shadow_eval.names import read_model_metadata
from lookout.shadow_eval.runner import OnnxDetector
from tools.evaluate_models import HELD_OUT_SEED, evaluate

SCENES = 40  # a small fixed held-out set keeps this fast; docs/MODELS.md uses 300


@pytest.fixture(scope="module")
def scenes():
    return [generate_scene(HELD_OUT_SEED + i) for i in range(SCENES)]


@pytest.fixture(scope="module", params=["primary", "reference"])
def model(request) -> tuple[str, OnnxDetector]:
    return request.param, OnnxDetector.load(model_path(request.param))


def test_models_carry_ultralytics_metadata(model) -> None:
    name, _ = model
    metadata = read_model_metadata(MODELS_DIR / f"{name}.onnx")
    assert metadata.names == CLASSES
    assert metadata.input_size == (256, 256) and metadata.stride == 16
    assert (MODELS_DIR / f"{name}.onnx").stat().st_size < 5_000_000


def test_models_are_above_their_documented_floor(model, scenes) -> None:
    name, detector = model
    floor = {"primary": 0.80, "reference": 0.90}[name]
    assert evaluate(detector, scenes) >= floor


def test_reference_holds_up_where_the_primary_degrades(scenes) -> None:
    primary = OnnxDetector.load(model_path("primary"))
    reference = OnnxDetector.load(model_path("reference"))
    for kind in ("dark", "occlusion"):
        degraded = [perturb(scene, kind, 0.5, seed=7) for scene in scenes]
        assert evaluate(reference, degraded) > evaluate(primary, degraded) + 0.1, kind


def test_model_files_live_in_the_package() -> None:
    assert Path(__file__).resolve().parents[2] / "lookout_demo" / "models" == MODELS_DIR
    with pytest.raises(FileNotFoundError, match="no shipped model"):
        model_path("enormous")
