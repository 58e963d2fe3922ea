"""Per-image features whose distribution drifts when the camera, the scene or the model
changes: what the input looks like, and what the primary model made of it.

Every feature is one value per image, so that images (not boxes) are the independent
units the drift detector's calibration assumes. Per-box quantities are summarised per
image: mean confidence, median relative box area, and the class of one randomly chosen
box (which keeps the class mix unbiased without counting crowded images many times).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np
from PIL import Image

from lookout.shadow_eval.boxes import Detections

FeatureRow = dict[str, float | str | None]


def analysis_pixels(rgb: np.ndarray, longest_side: int) -> np.ndarray:
    """Resize so the longest side is `longest_side` (never up): sharpness depends on
    scale, so every image is measured at the same one."""
    height, width = rgb.shape[:2]
    if max(height, width) <= longest_side:
        return rgb
    scale = longest_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))


def image_features(rgb: np.ndarray, width: int, height: int) -> FeatureRow:
    """Input features of HWC uint8 RGB pixels; `width`/`height` of the original image."""
    pixels = rgb.astype(np.float32)
    luma = pixels @ np.array([0.299, 0.587, 0.114], np.float32)
    # channel by channel: numpy reduces a 3-wide innermost axis ten times slower
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    high = np.maximum(np.maximum(red, green), blue).astype(np.float32)
    low = np.minimum(np.minimum(red, green), blue).astype(np.float32)
    saturation = np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0)
    laplacian = (4 * luma[1:-1, 1:-1] - luma[:-2, 1:-1] - luma[2:, 1:-1]
                 - luma[1:-1, :-2] - luma[1:-1, 2:])
    return {
        "brightness": float(luma.mean()),
        "contrast": float(luma.std()),
        "saturation": float(saturation.mean()),
        "sharpness": float(laplacian.var()) if laplacian.size else 0.0,
        "resolution": f"{width}x{height}",
        "aspect_ratio": f"{width / height:.2f}" if height else "0",
    }


def output_features(detections: Detections, width: int, height: int,
                    names: Sequence[str], chooser: random.Random) -> FeatureRow:
    """Output features of the primary's detections on an image of `width` x `height`."""
    count = len(detections)
    if not count:
        return {"detections": 0.0, "confidence": None, "box_size": None, "class": None}
    area = float(width * height) or 1.0
    pick = chooser.randrange(count)
    if detections.names:
        label = detections.names[pick]
    else:
        class_id = int(detections.classes[pick])
        label = names[class_id] if 0 <= class_id < len(names) else str(class_id)
    return {
        "detections": float(count),
        "confidence": float(detections.scores.mean()),
        "box_size": float(np.median(np.clip(detections.areas() / area, 0, 1))),
        "class": label,
    }


def feature_row(rgb: np.ndarray, width: int, height: int, detections: Detections | None,
                names: Sequence[str], chooser: random.Random, longest_side: int) -> FeatureRow:
    """Every feature of one image, as the sidecar, the baseline command and the drift
    bench all compute it: input features at `longest_side`, output features when the
    primary's detections are known."""
    row = image_features(analysis_pixels(rgb, longest_side), width, height)
    if detections is not None:
        row.update(output_features(detections, width, height, names, chooser))
    return row


def is_missing(value: float | str | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
