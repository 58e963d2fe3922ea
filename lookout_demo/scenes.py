"""Labelled synthetic scenes: coloured shapes on textured, gradient backgrounds.

Every scene is a pure function of its seed, so a training set, a held-out set and a
demo camera can all name their frames by number and get the same pixels and boxes on
any machine. Boxes are exact: computed from the shape's geometry, not from pixels.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross")
# a shape no model is trained on: the "unseen object class" perturbation adds it
UNSEEN_CLASS = "hexagon"
UNSEEN_CLASS_ID = -1
DEFAULT_SIZE = (384, 288)  # width, height


@dataclass(frozen=True, slots=True)
class Scene:
    """An RGB image with its ground truth: xyxy boxes in pixels and class ids
    (indices into CLASSES, or UNSEEN_CLASS_ID)."""

    image: np.ndarray  # HWC uint8
    boxes: np.ndarray  # float32 [N, 4]
    classes: np.ndarray  # int64 [N]
    seed: int

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]

    def to_pil(self) -> Image.Image:
        return Image.fromarray(self.image)

    def jpeg(self, quality: int = 90) -> bytes:
        """The scene as a camera would send it."""
        buffer = io.BytesIO()
        self.to_pil().save(buffer, "JPEG", quality=quality)
        return buffer.getvalue()


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cells: int) -> np.ndarray:
    """Low-frequency texture in [0, 1]: random values on a coarse grid, upsampled."""
    coarse = rng.random((cells, cells), dtype=np.float32)
    image = Image.fromarray((coarse * 255).astype(np.uint8)).resize(
        (width, height), Image.Resampling.BICUBIC)
    return np.asarray(image, np.float32) / 255.0


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A two-colour linear gradient in a random direction, modulated by soft texture."""
    start, end = rng.uniform(20, 235, (2, 3))
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = xs * math.cos(angle) + ys * math.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    image = start + (end - start) * ramp[..., None]
    texture = _smooth_noise(rng, width, height, int(rng.integers(4, 12))) - 0.5
    image += texture[..., None] * rng.uniform(10, 50)
    return np.clip(image, 0, 255).astype(np.uint8)


def _rotated(points: np.ndarray, angle: float, centre: np.ndarray) -> np.ndarray:
    cos, sin = math.cos(angle), math.sin(angle)
    return (points @ np.array([[cos, sin], [-sin, cos]], np.float32)) + centre


def _star(radius: float) -> np.ndarray:
    angles = np.arange(10) * math.pi / 5 - math.pi / 2
    radii = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
    return np.stack([np.cos(angles) * radii, np.sin(angles) * radii], axis=1)


def _regular(sides: int, radius: float) -> np.ndarray:
    angles = np.arange(sides) * 2 * math.pi / sides - math.pi / 2
    return np.stack([np.cos(angles) * radius, np.sin(angles) * radius], axis=1)


def _cross(radius: float) -> np.ndarray:
    arm = radius * 0.35
    r = radius
    return np.array([(-arm, -r), (arm, -r), (arm, -arm), (r, -arm), (r, arm), (arm, arm),
                     (arm, r), (-arm, r), (-arm, arm), (-r, arm), (-r, -arm), (-arm, -arm)],
                    np.float32)


def draw_shape(draw: ImageDraw.ImageDraw, name: str, centre: np.ndarray, radius: float,
               angle: float, colour: tuple[int, int, int]) -> np.ndarray:
    """Draw one shape and return its exact xyxy box."""
    cx, cy = float(centre[0]), float(centre[1])
    if name in ("circle", "ring"):
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        if name == "circle":
            draw.ellipse(box, fill=colour)
        else:
            draw.ellipse(box, outline=colour, width=max(2, round(radius * 0.3)))
        return np.array(box, np.float32)
    outline = {
        "square": lambda: np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], np.float32)
        * radius * 0.75,
        "triangle": lambda: _regular(3, radius),
        "star": lambda: _star(radius),
        "cross": lambda: _cross(radius),
        UNSEEN_CLASS: lambda: _regular(6, radius),
    }[name]()
    points = _rotated(outline.astype(np.float32), angle, centre.astype(np.float32))
    draw.polygon([tuple(p) for p in points.tolist()], fill=colour)
    return np.array([*points.min(axis=0), *points.max(axis=0)], np.float32)


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> tuple[int, int, int]:
    """A saturated colour far enough from the background under the object."""
    for _ in range(20):
        colour = rng.integers(0, 256, 3)
        colour[rng.integers(3)] = rng.choice((0, 255))
        if np.abs(colour.astype(int) - under.astype(int)).sum() > 180:
            break
    return tuple(int(c) for c in colour)


def _overlaps_too_much(box: np.ndarray, placed: list[np.ndarray], limit: float) -> bool:
    for other in placed:
        width = min(box[2], other[2]) - max(box[0], other[0])
        height = min(box[3], other[3]) - max(box[1], other[1])
        if width > 0 and height > 0:
            inter = width * height
            smaller = min((box[2] - box[0]) * (box[3] - box[1]),
                          (other[2] - other[0]) * (other[3] - other[1]))
            if inter / smaller > limit:
                return True
    return False


def place_objects(image: np.ndarray, rng: np.random.Generator, count: int,
                  class_names: tuple[str, ...], class_ids: tuple[int, ...],
                  existing: list[np.ndarray] | None = None,
                  radius_range: tuple[float, float] = (10.0, 48.0),
                  max_overlap: float = 0.35) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """Draw up to `count` shapes, keeping each within the frame and overlapping earlier
    ones by at most `max_overlap` of the smaller box."""
    height, width = image.shape[:2]
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    placed = list(existing or [])
    boxes, classes = [], []
    for _ in range(count):
        for _attempt in range(30):
            choice = int(rng.integers(len(class_names)))
            radius = float(rng.uniform(*radius_range))
            centre = np.array([rng.uniform(radius, width - radius),
                               rng.uniform(radius, height - radius)], np.float32)
            angle = float(rng.uniform(0, 2 * math.pi))
            probe = np.array([centre[0] - radius, centre[1] - radius,
                              centre[0] + radius, centre[1] + radius], np.float32)
            if not _overlaps_too_much(probe, placed, max_overlap):
                break
        else:
            continue
        under = image[int(centre[1]), int(centre[0])]
        box = draw_shape(draw, class_names[choice], centre, radius, angle,
                         _contrasting_colour(rng, under))
        box = np.clip(box, 0, [width, height, width, height]).astype(np.float32)
        placed.append(box)
        boxes.append(box)
        classes.append(class_ids[choice])
    return np.asarray(canvas), boxes, classes


def generate_scene(seed: int, size: tuple[int, int] = DEFAULT_SIZE, min_objects: int = 1,
                   max_objects: int = 6) -> Scene:
    """The scene for `seed`: same seed, same pixels and boxes, on any machine."""
    rng = np.random.default_rng([seed, 0x5CE7E])
    width, height = size
    image = background(rng, width, height)
    count = int(rng.integers(min_objects, max_objects + 1))
    image, boxes, classes = place_objects(image, rng, count, CLASSES,
                                          tuple(range(len(CLASSES))))
    return Scene(image, np.asarray(boxes, np.float32).reshape(-1, 4),
                 np.asarray(classes, np.int64), seed)
