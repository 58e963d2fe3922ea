"""Class names and input size from an Ultralytics-exported ONNX model's metadata.

Ultralytics writes `names` as a Python dict literal (`{0: 'person', 1: 'bicycle'}`)
and `imgsz` as a list literal (`[640, 640]`) into the ONNX custom metadata.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ModelMetadataError(ValueError):
    """The model file or its metadata cannot be used; the message says which."""


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    names: tuple[str, ...]
    input_size: tuple[int, int] | None  # (height, width)
    stride: int | None


def parse_names(text: str) -> tuple[str, ...]:
    """`{0: 'a', 1: 'b'}` or `['a', 'b']` -> ('a', 'b'); ids must be 0..n-1."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as error:
        raise ModelMetadataError(f"'names' is not a Python literal: {error}") from None
    if isinstance(value, list | tuple):
        return tuple(str(name) for name in value)
    if isinstance(value, dict):
        ids = sorted(value)
        if ids != list(range(len(ids))):
            raise ModelMetadataError(f"'names' ids are not 0..{len(ids) - 1}: {ids[:10]}")
        return tuple(str(value[i]) for i in ids)
    raise ModelMetadataError(f"'names' must be a dict or list, got {type(value).__name__}")


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    value = ast.literal_eval(text)
    if isinstance(value, int):
        return (value, value)
    height, width = (int(v) for v in value)
    return (height, width)


def metadata_from_session(session: Any, source: str = "model") -> ModelMetadata:
    """Names, input size and stride of an already loaded onnxruntime session, so that a
    model in service is read once rather than loaded again for its metadata."""
    meta = session.get_modelmeta().custom_metadata_map
    if "names" not in meta:
        raise ModelMetadataError(f"{source} has no 'names' metadata")
    try:
        size = _parse_size(meta.get("imgsz"))
        stride = int(ast.literal_eval(meta["stride"])) if meta.get("stride") else None
    except (ValueError, SyntaxError, TypeError) as error:
        raise ModelMetadataError(f"{source}: bad imgsz/stride metadata: {error}") from None
    return ModelMetadata(parse_names(meta["names"]), size, stride)


def read_model_metadata(path: str | Path) -> ModelMetadata:
    """Names, input size and stride from an ONNX file, via onnxruntime."""
    import onnxruntime

    path = Path(path)
    if not path.is_file():
        raise ModelMetadataError(f"model file {path} does not exist")
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own unrelated exception types
        raise ModelMetadataError(f"model file {path} cannot be loaded: {error}") from None
    return metadata_from_session(session, f"model file {path}")
