"""OnnxDetector on the shipped models: pinning, providers, batching, failures."""

from __future__ import annotations

import numpy as np
import pytest

from lookout.lookout_demo.models import model_path
from lookout.lookout_demo.scenes import generate_scene
from lookout.shadow_eval.runner import ModelLoadError, OnnxDetector, choose_providers, file_sha256

REFERENCE = model_path("reference")


@pytest.fixture(scope="module")
def reference() -> OnnxDetector:
    return OnnxDetector.load(REFERENCE, providers=("cpu",))


def test_pinned_sha256_is_checked() -> None:
    digest = file_sha256(REFERENCE)
    assert OnnxDetector.load(REFERENCE, expected_sha256=digest.upper()).sha256 == digest
    with pytest.raises(ModelLoadError, match="refusing to run it"):
        OnnxDetector.load(REFERENCE, expected_sha256="0" * 64)


def test_providers_keep_order_and_always_end_on_the_cpu() -> None:
    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(("tensorrt", "cuda", "cpu"), available, gpu=True) == available
    assert choose_providers(("cuda",), ["CPUExecutionProvider"], gpu=True) == \
        ["CPUExecutionProvider"]
    assert choose_providers(("cuda", "cpu"), available, gpu=False) == ["CPUExecutionProvider"]
    with pytest.raises(ModelLoadError, match="unknown execution provider"):
        choose_providers(("tpu",), available)


def test_a_batch_gives_the_detections_of_single_runs(reference) -> None:
    images = [generate_scene(seed).image for seed in range(5)]
    together = reference.detect_batch(images)
    alone = [reference.detect_batch([image])[0] for image in images]
    assert sum(len(d) for d in together) > 0
    for a, b in zip(together, alone, strict=True):
        assert np.allclose(a.boxes, b.boxes, atol=1e-3) and np.array_equal(a.classes, b.classes)


def test_fixed_batch_models_run_in_chunks(reference) -> None:
    chunked = OnnxDetector(**{**reference.__dict__, "max_batch": 2})
    batch = np.random.default_rng(0).random((5, 3, 256, 256), dtype=np.float32)
    assert np.allclose(chunked.run(batch), reference.run(batch), atol=1e-4)


def test_unusable_files_raise_a_clear_error(tmp_path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08garbage" * 50)
    with pytest.raises(ModelLoadError, match="cannot be loaded"):
        OnnxDetector.load(corrupt)
    with pytest.raises(ModelLoadError, match="No such file"):
        OnnxDetector.load(tmp_path / "missing.onnx")
