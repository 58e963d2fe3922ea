"""An ONNX YOLO detector on onnxruntime: load (pinned by sha256), pre-process as
Ultralytics does, infer in micro-batches, decode.

The sidecar's reference model and the demo inference server both run through this
class, so the shadow comparison and the demo see exactly the same pre-processing.
Providers are tried in the order given (TensorRT, CUDA, CPU by default) among those
this onnxruntime build offers; the CPU provider is always the last resort.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookout.shadow_eval.boxes import Detections
from lookout.shadow_eval.decode import DecodeError, DecodeSettings, decode
from lookout.shadow_eval.letterbox import Letterbox, letterbox_image
from lookout.shadow_eval.names import ModelMetadataError, metadata_from_session

log = logging.getLogger(__name__)

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
DEFAULT_PROVIDERS = ("tensorrt", "cuda", "cpu")


class ModelLoadError(RuntimeError):
    """The model cannot be used: missing, corrupt, not the pinned file, no metadata."""


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def nvidia_driver_present() -> bool:
    """onnxruntime-gpu offers CUDA and TensorRT whether or not a GPU exists, then fails
    loudly trying them; without the kernel driver there is no point trying."""
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()


def choose_providers(wanted: Sequence[str], available: Sequence[str],
                     gpu: bool | None = None) -> list[str]:
    """onnxruntime provider names for `wanted` short names, in order, keeping only the
    available ones (GPU ones only with an NVIDIA driver), with the CPU provider always
    last so that loading cannot fail for want of a GPU."""
    unknown = [name for name in wanted if name not in PROVIDERS]
    if unknown:
        raise ModelLoadError(f"unknown execution provider(s) {unknown}; "
                             f"choose from {', '.join(PROVIDERS)}")
    gpu = nvidia_driver_present() if gpu is None else gpu
    chosen = [PROVIDERS[name] for name in wanted
              if PROVIDERS[name] in available and (gpu or name == "cpu")]
    if PROVIDERS["cpu"] not in chosen:
        chosen.append(PROVIDERS["cpu"])
    return chosen


def to_model_input(canvas: np.ndarray) -> np.ndarray:
    """HWC uint8 letterboxed image -> CHW float32 in [0, 1]."""
    return np.ascontiguousarray(canvas.transpose(2, 0, 1), np.float32) * np.float32(1 / 255)


class YoloDetector:
    """What every reference model offers the shadow stage, wherever it runs: Ultralytics'
    pre-processing, raw heads for a batch, and the same decoders. Subclasses provide
    `run` and the attributes below; the sidecar's remote reference is one."""

    names: tuple[str, ...]
    input_size: tuple[int, int]  # (height, width)
    settings: DecodeSettings
    sha256: str

    @property
    def provider(self) -> str:
        """Where the model runs (an onnxruntime provider, a server's URL)."""
        raise NotImplementedError

    @property
    def source(self) -> str:
        """What the model was loaded from, for messages."""
        raise NotImplementedError

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Raw heads for an [B, 3, H, W] float32 batch."""
        raise NotImplementedError

    def prepare(self, rgb: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """Ultralytics' letterbox; returns the CHW model input and the geometry."""
        height, width = self.input_size
        canvas, geometry = letterbox_image(rgb, width, height)
        return to_model_input(canvas), geometry

    def decode(self, heads: np.ndarray, geometries: Sequence[Letterbox | None]) -> list[Detections]:
        num_classes = len(self.names) or None
        return [decode(heads[i:i + 1], self.settings, geometry, num_classes)
                for i, geometry in enumerate(geometries)]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detections in source pixels for HWC uint8 RGB images of any sizes."""
        if not images:
            return []
        prepared = [self.prepare(image) for image in images]
        heads = self.run(np.stack([tensor for tensor, _ in prepared]))
        return self.decode(heads, [geometry for _, geometry in prepared])

    def warm_up(self, batch_size: int = 1) -> None:
        """First runs allocate memory and (with TensorRT) build engines: do it before
        the first real image, not on it. A head lookout cannot decode fails here."""
        height, width = self.input_size
        heads = self.run(np.full((batch_size, 3, height, width), 114 / 255, np.float32))
        try:
            self.decode(heads[:1], [None])
        except DecodeError as error:
            raise ModelLoadError(f"{self.source} gives outputs lookout cannot "
                                 f"decode: {error}") from None


@dataclass
class OnnxDetector(YoloDetector):
    """A loaded YOLO ONNX model with its Ultralytics metadata."""

    session: Any
    path: Path
    sha256: str
    names: tuple[str, ...]
    input_size: tuple[int, int]  # (height, width)
    input_name: str
    max_batch: int | None  # None: the model takes any batch size
    settings: DecodeSettings

    @classmethod
    def load(cls, path: str | os.PathLike[str], *,
             providers: Sequence[str] = DEFAULT_PROVIDERS,
             expected_sha256: str = "",
             settings: DecodeSettings | None = None,
             intra_op_threads: int = 0) -> OnnxDetector:
        import onnxruntime

        path = Path(path)
        try:
            sha256 = file_sha256(path)
        except OSError as error:
            raise ModelLoadError(f"model file {path}: {error.strerror or error}") from None
        if expected_sha256 and sha256 != expected_sha256.lower():
            raise ModelLoadError(f"model file {path} has sha256 {sha256}, but "
                                 f"{expected_sha256} is pinned; refusing to run it")
        chosen = choose_providers(providers, onnxruntime.get_available_providers())
        # onnxruntime-gpu lists CUDA even where no GPU is usable and then falls back to
        # the CPU, which is documented behaviour, not worth a warning per start
        onnxruntime.set_default_logger_severity(3)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        try:
            session = onnxruntime.InferenceSession(str(path), options, providers=chosen)
            metadata = metadata_from_session(session, f"model file {path}")
        except ModelMetadataError as error:
            raise ModelLoadError(str(error)) from None
        except Exception as error:  # onnxruntime raises its own unrelated exception types
            raise ModelLoadError(f"model file {path} cannot be loaded: {error}") from None
        source = session.get_inputs()[0]
        shape = source.shape
        fixed = lambda d: isinstance(d, int) and d > 0  # noqa: E731
        size = metadata.input_size or (
            (int(shape[2]), int(shape[3])) if fixed(shape[2]) and fixed(shape[3]) else None)
        if size is None:
            raise ModelLoadError(f"model file {path}: input size is neither in the metadata "
                                 f"('imgsz') nor fixed in the graph {shape}")
        detector = cls(session, path, sha256, metadata.names, size, source.name,
                       int(shape[0]) if fixed(shape[0]) else None, settings or DecodeSettings())
        log.info("loaded %s on %s: %d classes, input %s, batch %s", path,
                 session.get_providers()[0], len(metadata.names), size,
                 detector.max_batch or "dynamic")
        return detector

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    @property
    def source(self) -> str:
        return f"model file {self.path}"

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Raw heads for an [B, 3, H, W] batch, in chunks the model accepts."""
        step = self.max_batch or batch.shape[0]
        if step >= batch.shape[0]:
            return self.session.run(None, {self.input_name: batch})[0]
        return np.concatenate([self.session.run(None, {self.input_name: batch[i:i + step]})[0]
                               for i in range(0, batch.shape[0], step)])
