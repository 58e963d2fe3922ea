"""What production cameras and video pipelines do to frames, beyond the ten
perturbations the models were first measured on: weather, optics, sensor faults and
pipeline faults, each with a severity knob from 0 (no change) to 1 (severe) and exact
ground truth, and negative controls that should change nothing a detector cares about.

Ground truth changes only where the scene does: a mirrored frame mirrors its boxes, a
frame rescaled into letterbox bars moves them, and an object a truncated frame hides
for more than half of its area is no longer there to be found. Streaks, flakes, glare
and textures never move an object, so its box stays.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from lookout.lookout_demo.scenes import Scene

Degrade = Callable[[Scene, float, np.random.Generator], Scene]


def _pixels(scene: Scene, image: np.ndarray) -> Scene:
    return Scene(np.clip(image, 0, 255).round().astype(np.uint8), scene.boxes.copy(),
                 scene.classes.copy(), scene.seed)


def _float(scene: Scene) -> np.ndarray:
    return scene.image.astype(np.float32)


# -- weather ---------------------------------------------------------------------------

def fog(scene: Scene, severity: float, rng: np.random.Generator) -> Scene:
    """Haze: every pixel pulled towards a bright grey airlight, contrast lost."""
    airlight = float(rng.uniform(180, 220))
    amount = 0.75 * severity
    return _pixels(scene, _float(scene) * (1 - amount) + airlight * amount)


def rain(scene: Scene, severity: float, rng: np.random.Generator) -> Scene:
    """Slanted bright streaks over the frame and a slight softening, as drops in front
    of the lens smear."""
    image = Image.fromarray(scene.image)
    draw = ImageDraw.Draw(image, "RGBA")
    width, height = scene.size
    slant = float(rng.uniform(-0.4, 0.4))
    for _ in range(int(600 * severity)):
        x, y = float(rng.uniform(0, width)), float(rng.uniform(0, height))
        length = float(rng.uniform(8, 20))
        shade = int(rng.uniform(190, 240))
        draw.line([(x, y), (x + slant * length, y + length)],
                  fill=(shade, shade, shade, int(90 + 120 * severity)), width=1)
    image = image.filter(ImageFilter.GaussianBlur(0.8 * severity))
    return _pixels(scene, np.asarray(image, np.float32))


def snow(scene: Scene, severity: float, rng: np.random.Generator) -> Scene:
    """White flakes of a few sizes, some out of focus."""
    image = Image.fromarray(scene.image)
    draw = ImageDraw.Draw(image, "RGBA")
    width, height = scene.size
    for _ in range(int(400 * severity)):
        x, y = float(rng.uniform(0, width)), float(rng.uniform(0, height))
        radius = float(rng.choice([0.8, 1.5, 2.5]))
        draw.ellipse([x - radius, y - radius, x + radius, y + radius],
                     fill=(245, 245, 250, int(rng.uniform(150, 255))))
    return _pixels(scene, np.asarray(image, np.float32))


# -- optics ----------------------------------------------------------------------------

def _radius_map(scene: Scene, centre: tuple[float, float]) -> np.ndarray:
    height, width = scene.image.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.hypot(xs - centre[0], ys - centre[1]) / np.hypot(width, height)


def glare(scene: Scene, severity: float, rng: np.random.Generator) -> Scene:
    """A low sun or a headlight: a bright bloom that washes out part of the frame."""
    width, height = scene.size
    centre = (float(rng.uniform(0, width)), float(rng.uniform(0, height)))
    bloom = np.exp(-(_radius_map(scene, centre) / (0.08 + 0.25 * severity)) ** 2)
    return _pixels(scene, _float(scene) + 255.0 * severity * bloom[..., None])


def vignetting(scene: Scene, severity: float, rng: np.random.Generator) -> Scene:
    """A cheap wide lens: the corners fall off towards black."""
    width, height = scene.size
    falloff = 1 - np.clip(_radius_map(scene, (width / 2, height / 2)) * 2, 0, 1) ** 2
    gain = 1 - severity * (1 - falloff)
    return _pixels(scene, _float(scene) * gain[..., None])


def chromatic_aberration(scene: Scene, severity: float, rng: np.random.Generator) -> Scene:
    """Red and blue focused apart: the channels shifted opposite ways."""
    shift = round(6 * severity)
    image = scene.image.copy()
    image[..., 0] = np.roll(scene.image[..., 0], shift, axis=1)
    image[..., 2] = np.roll(scene.image[..., 2], -shift, axis=1)
    return _pixels(scene, image.astype(np.float32))


# -- sensor ----------------------------------------------------------------------------

def salt_and_pepper(scene: Scene, severity: float, rng: np.random.Generator) -> Scene:
    """Dead and stuck pixels, or bit errors on the link: impulse noise."""
    image = scene.image.copy()
    hit = rng.random(image.shape[:2]) < 0.08 * severity
    image[hit] = np.where(rng.random((int(hit.sum()), 1)) < 0.5, 0, 255)
    return _pixels(scene, image.astype(np.float32))


def banding(scene: Scene, severity: float, rng: np.random.Generator) -> Scene:
    """Row noise of a rolling-shutter sensor with a bad readout: horizontal bands."""
    height = scene.image.shape[0]
    rows = rng.normal(0, 35 * severity, height).astype(np.float32)
    rows = np.convolve(rows, np.ones(3, np.float32) / 3, mode="same")
    return _pixels(scene, _float(scene) + rows[:, None, None])


def low_resolution(scene: Scene, severity: float, rng: np.random.Generator) -> Scene:
    """A sub-stream at a fraction of the resolution, upscaled back for the model."""
    width, height = scene.size
    factor = 1 - 0.8 * severity
    small = scene.to_pil().resize((max(8, round(width * factor)), max(8, round(height * factor))),
                                  Image.Resampling.BILINEAR)
    return _pixels(scene, np.asarray(small.resize((width, height), Image.Resampling.NEAREST),
                                     np.float32))


def background_texture(scene: Scene, severity: float, rng: np.random.Generator) -> Scene:
    """Busy backgrounds — foliage, gravel, patterned floors: strong fine texture laid over
    the frame outside the objects, where a detector looks for edges."""
    height, width = scene.image.shape[:2]
    cell = int(rng.integers(3, 7))
    coarse = rng.random((height // cell + 1, width // cell + 1)).astype(np.float32)
    texture = np.kron(coarse, np.ones((cell, cell), np.float32))[:height, :width] - 0.5
    mask = np.ones((height, width), np.float32)
    for x1, y1, x2, y2 in scene.boxes.astype(int):
        mask[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = 0
    return _pixels(scene, _float(scene) + (140 * severity * texture * mask)[..., None])


# -- pipeline faults -------------------------------------------------------------------

def channel_swap(scene: Scene, severity: float, rng: np.random.Generator) -> Scene:
    """BGR frames fed as RGB (a decoder or colour-conversion mistake), mixed in by
    severity as a partially wrong white balance would be."""
    return _pixels(scene, _float(scene) * (1 - severity) + _float(scene)[..., ::-1] * severity)


def interlacing(scene: Scene, severity: float, rng: np.random.Generator) -> Scene:
    """Interlaced video shown without deinterlacing: odd rows a field later, shifted."""
    shift = round(8 * severity)
    image = scene.image.copy()
    image[1::2] = np.roll(scene.image[1::2], shift, axis=1)
    return _pixels(scene, image.astype(np.float32))


def truncated_frame(scene: Scene, severity: float, rng: np.random.Generator) -> Scene:
    """A frame cut short in transit: the bottom rows grey, as a decoder fills them.
    Objects hidden for more than half their area are no longer in the ground truth."""
    height = scene.image.shape[0]
    start = round(height * (1 - 0.6 * severity))
    image = scene.image.copy()
    image[start:] = 128
    visible = np.clip(start - scene.boxes[:, 1], 0, None) / np.maximum(
        scene.boxes[:, 3] - scene.boxes[:, 1], 1)
    kept = visible > 0.5
    return Scene(image, scene.boxes[kept].copy(), scene.classes[kept].copy(), scene.seed)


def letterbox_bars(scene: Scene, severity: float, rng: np.random.Generator) -> Scene:
    """A stream re-encoded to another aspect ratio: the picture squeezed between flat
    black bars at the frame's edges; boxes follow it."""
    width, height = scene.size
    inner = max(16, round(height * (1 - 0.5 * severity)))
    top = (height - inner) // 2
    squeezed = np.asarray(scene.to_pil().resize((width, inner), Image.Resampling.BILINEAR))
    image = np.zeros_like(scene.image)
    image[top:top + inner] = squeezed
    boxes = scene.boxes.copy()
    boxes[:, [1, 3]] = boxes[:, [1, 3]] * inner / height + top
    return Scene(image, boxes, scene.classes.copy(), scene.seed)


# -- negative controls: nothing a detector should see changes -----------------------------

def png_roundtrip(scene: Scene, severity: float, rng: np.random.Generator) -> Scene:
    buffer = io.BytesIO()
    scene.to_pil().save(buffer, "PNG")
    return _pixels(scene, np.asarray(Image.open(io.BytesIO(buffer.getvalue())), np.float32))


def mirror(scene: Scene, severity: float, rng: np.random.Generator) -> Scene:
    width = scene.size[0]
    boxes = scene.boxes.copy()
    boxes[:, [0, 2]] = width - scene.boxes[:, [2, 0]]
    return Scene(np.ascontiguousarray(scene.image[:, ::-1]), boxes, scene.classes.copy(),
                 scene.seed)


def brightness_jitter(scene: Scene, severity: float, rng: np.random.Generator) -> Scene:
    """Auto-exposure hunting by a grey level or two."""
    return _pixels(scene, _float(scene) + float(rng.choice([-2.0, -1.0, 1.0, 2.0])))


def jpeg_high_quality(scene: Scene, severity: float, rng: np.random.Generator) -> Scene:
    buffer = io.BytesIO()
    scene.to_pil().save(buffer, "JPEG", quality=95)
    return _pixels(scene, np.asarray(Image.open(io.BytesIO(buffer.getvalue())), np.float32))


FIELD_CONDITIONS: dict[str, Degrade] = {
    "fog": fog, "rain": rain, "snow": snow,
    "glare": glare, "vignetting": vignetting, "chromatic_aberration": chromatic_aberration,
    "salt_and_pepper": salt_and_pepper, "banding": banding, "low_resolution": low_resolution,
    "background_texture": background_texture,
    "channel_swap": channel_swap, "interlacing": interlacing,
    "truncated_frame": truncated_frame, "letterbox_bars": letterbox_bars,
}
# severity is ignored: each is a change that should leave detections as they are
NEGATIVE_CONTROLS: dict[str, Degrade] = {
    "png_roundtrip": png_roundtrip, "mirror": mirror, "brightness_jitter": brightness_jitter,
    "jpeg_high_quality": jpeg_high_quality,
}
