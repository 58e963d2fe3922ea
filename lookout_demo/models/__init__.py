"""The shipped detectors (package data), trained by tools/train_tiny_yolo.py."""

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
PRIMARY = MODELS_DIR / "primary.onnx"
REFERENCE = MODELS_DIR / "reference.onnx"


def model_path(name: str) -> Path:
    """`primary` or `reference` -> its ONNX file."""
    path = MODELS_DIR / f"{name}.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"no shipped model named {name!r} in {MODELS_DIR}")
    return path
