"""The shipped detectors (package data): `primary` and `reference`, trained by
tools/train_tiny_yolo.py, and `coarse` (the primary regrouped into three classes at a
320-pixel input, for multi-model pods, and `coarse_reference` likewise from
`reference`), derived by tools/derive_coarse_model.py."""

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
PRIMARY = MODELS_DIR / "primary.onnx"
REFERENCE = MODELS_DIR / "reference.onnx"


def model_path(name: str) -> Path:
    """`primary`, `reference`, `coarse` or `coarse_reference` -> its ONNX file."""
    path = MODELS_DIR / f"{name}.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"no shipped model named {name!r} in {MODELS_DIR}")
    return path
