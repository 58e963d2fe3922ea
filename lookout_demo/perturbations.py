"""Reproducible image degradations with a severity knob, for drift and robustness.

`perturb(scene, kind, severity, seed)` returns a new Scene; severity runs from 0 (no
change) to 1 (severe), 0.5 being the "medium" level that docs/MODELS.md reports on.
Boxes follow the image where the geometry changes (scale) and gain the new objects
where objects are added (unseen class); occluders do not change the ground truth.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

from lookout.lookout_demo.scenes import UNSEEN_CLASS, UNSEEN_CLASS_ID, Scene, place_objects

PERTURBATIONS: tuple[str, ...] = (
    "dark", "overexposed", "defocus_blur", "motion_blur", "noise", "jpeg", "occlusion",
    "colour_cast", "scale", "unseen_class",
)
MEDIUM = 0.5


class UnknownPerturbation(ValueError):
    pass


def _as_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(image, 0, 255).round().astype(np.uint8)


def _dark(image, severity, rng):
    # low light: less signal and a darker gamma, as an under-exposed camera gives
    gain = 1.0 - 0.85 * severity
    return _to_uint8(255.0 * (_as_float(image) / 255.0) ** (1.0 + 1.2 * severity) * gain)


def _overexposed(image, severity, rng):
    return _to_uint8(_as_float(image) * (1.0 + 2.0 * severity) + 60.0 * severity)


def _defocus_blur(image, severity, rng):
    radius = 4.0 * severity
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


def _motion_blur(image, severity, rng):
    length = max(1, round(1 + 14 * severity))
    angle = float(rng.uniform(0, 180))
    kernel = np.zeros((length, length), np.float32)
    centre = (length - 1) / 2
    offsets = np.linspace(-centre, centre, length * 3)
    rows = np.clip(np.round(centre + offsets * np.sin(np.radians(angle))), 0, length - 1)
    cols = np.clip(np.round(centre + offsets * np.cos(np.radians(angle))), 0, length - 1)
    kernel[rows.astype(int), cols.astype(int)] = 1.0
    kernel /= kernel.sum()
    padded = np.pad(_as_float(image), ((length, length), (length, length), (0, 0)),
                    mode="edge")
    out = np.zeros_like(padded)
    for dy, dx in zip(*np.nonzero(kernel), strict=True):
        out += kernel[dy, dx] * np.roll(padded, (int(dy - centre), int(dx - centre)), (0, 1))
    return _to_uint8(out[length:-length, length:-length])


def _noise(image, severity, rng):
    sigma = 40.0 * severity
    return _to_uint8(_as_float(image) + rng.normal(0, sigma, image.shape))


def _jpeg(image, severity, rng):
    quality = round(95 - 90 * severity)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=max(quality, 3))
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def _colour_cast(image, severity, rng):
    channel = int(rng.integers(3))
    gains = np.ones(3, np.float32) * (1.0 - 0.5 * severity)
    gains[channel] = 1.0 + 0.6 * severity
    return _to_uint8(_as_float(image) * gains)


def _occlusion(scene: Scene, severity: float, rng: np.random.Generator) -> Scene:
    """Grey patches over part of each object (up to ~60% of its box at severity 1)."""
    image = scene.image.copy()
    for box in scene.boxes:
        x1, y1, x2, y2 = box.astype(int)
        width, height = max(x2 - x1, 1), max(y2 - y1, 1)
        fraction = 0.6 * severity
        patch_w, patch_h = int(width * np.sqrt(fraction)), int(height * np.sqrt(fraction))
        if patch_w < 1 or patch_h < 1:
            continue
        px = x1 + int(rng.integers(0, max(width - patch_w, 0) + 1))
        py = y1 + int(rng.integers(0, max(height - patch_h, 0) + 1))
        image[py:py + patch_h, px:px + patch_w] = rng.integers(90, 160)
    return Scene(image, scene.boxes.copy(), scene.classes.copy(), scene.seed)


def _scale(scene: Scene, severity: float, rng: np.random.Generator) -> Scene:
    """Objects appear smaller: the frame shrinks and is re-centred on a grey canvas (a
    camera further away), boxes scaled with it."""
    factor = 1.0 - 0.6 * severity
    width, height = scene.size
    new_w, new_h = max(1, round(width * factor)), max(1, round(height * factor))
    small = np.asarray(Image.fromarray(scene.image).resize((new_w, new_h),
                                                             Image.Resampling.BILINEAR))
    canvas = np.full_like(scene.image, int(scene.image.mean()))
    left, top = (width - new_w) // 2, (height - new_h) // 2
    canvas[top:top + new_h, left:left + new_w] = small
    boxes = scene.boxes * np.array([new_w / width, new_h / height] * 2, np.float32)
    boxes += np.array([left, top, left, top], np.float32)
    return Scene(canvas, boxes, scene.classes.copy(), scene.seed)


def _unseen_class(scene: Scene, severity: float, rng: np.random.Generator) -> Scene:
    count = round(1 + 3 * severity) if severity > 0 else 0
    image, boxes, classes = place_objects(
        scene.image, rng, count, (UNSEEN_CLASS,), (UNSEEN_CLASS_ID,),
        existing=list(scene.boxes))
    all_boxes = np.concatenate([scene.boxes, np.asarray(boxes, np.float32).reshape(-1, 4)])
    all_classes = np.concatenate([scene.classes, np.asarray(classes, np.int64)])
    return Scene(image, all_boxes, all_classes, scene.seed)


_PIXEL_ONLY = {
    "dark": _dark, "overexposed": _overexposed, "defocus_blur": _defocus_blur,
    "motion_blur": _motion_blur, "noise": _noise, "jpeg": _jpeg, "colour_cast": _colour_cast,
}
_GEOMETRIC = {"occlusion": _occlusion, "scale": _scale, "unseen_class": _unseen_class}


def perturb(scene: Scene, kind: str, severity: float = MEDIUM, seed: int = 0) -> Scene:
    """`scene` degraded by `kind` at `severity` in [0, 1]; same inputs, same output."""
    if not 0.0 <= severity <= 1.0:
        raise ValueError(f"severity must be within [0, 1], got {severity}")
    rng = np.random.default_rng([scene.seed, seed, PERTURBATIONS.index(kind)]
                                if kind in PERTURBATIONS else None)
    if kind in _PIXEL_ONLY:
        if severity == 0.0:
            return scene
        image = _PIXEL_ONLY[kind](scene.image, severity, rng)
        return Scene(image, scene.boxes.copy(), scene.classes.copy(), scene.seed)
    if kind in _GEOMETRIC:
        return _GEOMETRIC[kind](scene, severity, rng)
    raise UnknownPerturbation(
        f"unknown perturbation {kind!r}; choose from {', '.join(PERTURBATIONS)}")
