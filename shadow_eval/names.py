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


# what a file that is not ONNX usually is, by its first bytes
_NOT_ONNX = ((b"PK\x03\x04", "a zip archive (a PyTorch .pt checkpoint?)"),
             (b"\x80", "a Python pickle (a PyTorch checkpoint?)"),
             (b"\x89HDF", "an HDF5 file (a Keras model?)"),
             (b"TFL3", "a TensorFlow Lite model"))
_EXPORT_HINT = "export it with `yolo export model=... format=onnx`"


def _open_session(path: Path) -> Any:
    import onnxruntime

    check_onnx_file(path)  # a clear word for the usual impostors before onnxruntime's
    try:
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own unrelated exception types
        raise ModelMetadataError(f"model file {path} is not a loadable ONNX model "
                                 f"({error}); {_EXPORT_HINT}") from None


# ModelProto's fields (onnx.proto3): 1 ir_version, 7 graph; wire types 0 varint, 1 64-bit,
# 2 length-delimited, 5 32-bit
_IR_VERSION, _GRAPH = 1, 7


def _varint(model: Any) -> int | None:
    value = shift = 0
    while True:
        byte = model.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
        shift += 7
        if shift > 63:
            return None


def check_onnx_file(path: str | Path) -> None:
    """Refuse, with what the file seems to be, a file that is not an ONNX model: its
    first bytes name the usual impostors, then the top level of the protobuf is walked
    (field headers only, contents skipped) and must end exactly at the end of the file
    with an ir_version and a graph. Structural, so the process validating configuration
    needs neither onnxruntime nor numpy; a model whose graph onnxruntime then rejects
    disables only its stage, counted, as before."""
    path = Path(path)
    if not path.is_file():
        raise ModelMetadataError(f"model file {path} does not exist")
    try:
        size = path.stat().st_size
        with path.open("rb") as model:
            head = model.read(8)
            for magic, what in _NOT_ONNX:
                if head.startswith(magic):
                    raise ModelMetadataError(f"model file {path} is {what}, not ONNX; "
                                             f"{_EXPORT_HINT}")
            model.seek(0)
            seen = set()
            while model.tell() < size:
                key = _varint(model)
                if key is None or key >> 3 == 0:
                    break
                field, wire = key >> 3, key & 7
                if wire == 0:
                    if _varint(model) is None:
                        break
                elif wire in (1, 5):
                    model.seek(8 if wire == 1 else 4, 1)
                elif wire == 2:
                    length = _varint(model)
                    if length is None or model.tell() + length > size:
                        break
                    model.seek(length, 1)
                else:
                    break
                seen.add(field)
            else:
                if {_IR_VERSION, _GRAPH} <= seen and model.tell() == size:
                    return
    except OSError as error:
        raise ModelMetadataError(f"model file {path}: {error.strerror or error}") from None
    raise ModelMetadataError(f"model file {path} is not a loadable ONNX model (not a ModelProto "
                             f"with an ir_version and a graph, or cut short); "
                             f"{_EXPORT_HINT}")


def read_model_metadata(path: str | Path) -> ModelMetadata:
    """Names, input size and stride from an ONNX file, via onnxruntime."""
    path = Path(path)
    return metadata_from_session(_open_session(path), f"model file {path}")
