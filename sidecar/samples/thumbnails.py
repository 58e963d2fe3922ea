"""Small, privacy-aware copies of input images for postmortems.

JPEG inputs are decoded with Pillow's draft mode: libjpeg scales by 1/2, 1/4 or 1/8
during the inverse DCT, so a 4K frame becomes a 320-pixel thumbnail without ever
being decoded at full size (bench/thumbnail.py measures the gain). In the sidecar the
analyser has decoded the input already, once for every stage (`pipeline/images.py`,
never below the thumbnail's size), and the thumbnail is resized from those pixels. Tensor inputs (a
KServe request that carried pixels) are resized as they are. Boxes of configured
classes, or the whole image, are pixelated before encoding, and the encoder is handed
a fresh image so no EXIF (camera serial, GPS position) or ICC metadata survives.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from lookout.sidecar.pipeline.images import DecodedImage
from lookout.sidecar.pipeline.inputs import InputImage

FORMATS = {"jpeg": ("JPEG", "image/jpeg", "jpg"), "webp": ("WEBP", "image/webp", "webp")}
# pixels per side of a pixelated box: 8 blocks across the longer side leave no face,
# plate or text readable, and never fewer than 6 pixels a block
PIXELATE_BLOCKS = 8
MIN_BLOCK = 6
RESAMPLE = Image.Resampling.BILINEAR


@dataclass(frozen=True, slots=True)
class ThumbnailSettings:
    longest_side: int = 320
    format: str = "jpeg"
    quality: int = 80
    pixelate_classes: frozenset[str] = field(default_factory=frozenset)
    pixelate_all: bool = False


@dataclass(frozen=True, slots=True)
class Thumbnail:
    data: bytes
    width: int
    height: int
    scale: float  # thumbnail pixels per original pixel
    media_type: str
    extension: str
    pixels: np.ndarray  # the thumbnail's RGB pixels, before pixelation


def target_size(width: int, height: int, longest_side: int) -> tuple[int, int]:
    """Size with the longest side `longest_side`, never larger than the original."""
    scale = min(1.0, longest_side / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def reduced_image(image: InputImage, longest_side: int,
                  decoded: DecodedImage | None = None) -> Image.Image:
    """The input at (about) thumbnail size, from pixels already `decoded` or decoding as
    little as the format allows. Raises OSError/ValueError for images that do not
    decode."""
    size = target_size(image.width, image.height, longest_side)
    if decoded is not None:
        picture = Image.fromarray(decoded.rgb)
    elif image.pixels is not None:
        picture = Image.fromarray(image.pixels)
    else:
        assert image.encoded is not None
        picture = Image.open(io.BytesIO(image.encoded))
        picture.draft("RGB", size)  # a no-op for formats other than JPEG
        picture = picture.convert("RGB")
    if picture.size != size:
        # Pillow's bilinear filter widens with the scale factor (it is antialiased), and
        # costs 60% of bicubic's time for a visually equal 320-pixel thumbnail
        picture = picture.resize(size, RESAMPLE)
    return picture


def pixelate(picture: Image.Image, box: tuple[int, int, int, int]) -> None:
    """Coarsen the pixels of `box` (in place) so nothing in it can be recognised."""
    left, top, right, bottom = box
    width, height = right - left, bottom - top
    if width <= 0 or height <= 0:
        return
    block = max(MIN_BLOCK, math.ceil(max(width, height) / PIXELATE_BLOCKS))
    region = picture.crop(box)
    small = region.resize((max(1, math.ceil(width / block)), max(1, math.ceil(height / block))),
                          Image.Resampling.BOX)
    picture.paste(small.resize((width, height), Image.Resampling.NEAREST), box)


def _thumbnail_boxes(boxes: np.ndarray, scale: float, size: tuple[int, int]
                     ) -> Iterable[tuple[int, int, int, int]]:
    width, height = size
    for x1, y1, x2, y2 in (boxes * scale).tolist():
        left, top = max(0, math.floor(x1)), max(0, math.floor(y1))
        right, bottom = min(width, math.ceil(x2)), min(height, math.ceil(y2))
        if right > left and bottom > top:
            yield left, top, right, bottom


def make_thumbnail(image: InputImage, boxes: np.ndarray, labels: Sequence[str],
                   settings: ThumbnailSettings, decoded: DecodedImage | None = None
                   ) -> Thumbnail:
    """The thumbnail of `image` (from its `decoded` pixels when the caller has them);
    `boxes` (xyxy, original pixels) with their class `labels` decide what is
    pixelated."""
    picture = reduced_image(image, settings.longest_side, decoded)
    pixels = np.asarray(picture)
    scale = picture.width / image.width
    if settings.pixelate_all:
        pixelate(picture, (0, 0, picture.width, picture.height))
    elif settings.pixelate_classes and len(labels):
        private = np.array([label in settings.pixelate_classes for label in labels], bool)
        for box in _thumbnail_boxes(boxes.reshape(-1, 4)[private], scale, picture.size):
            pixelate(picture, box)
    return Thumbnail(encode(picture, settings.format, settings.quality), picture.width,
                     picture.height, scale, FORMATS[settings.format][1],
                     FORMATS[settings.format][2], pixels)


def encode(picture: Image.Image, image_format: str, quality: int) -> bytes:
    """Encode a metadata-free copy: a decoded JPEG carries its EXIF in `info`."""
    clean = Image.frombytes(picture.mode, picture.size, picture.tobytes())
    buffer = io.BytesIO()
    clean.save(buffer, FORMATS[image_format][0], quality=quality)
    return buffer.getvalue()


@dataclass(frozen=True, slots=True)
class BoxLayer:
    """One set of detections to draw, in thumbnail pixels."""

    boxes: np.ndarray
    labels: Sequence[str]
    colour: tuple[int, int, int]


def draw_boxes(data: bytes, layers: Sequence[BoxLayer], image_format: str = "jpeg") -> bytes:
    """The thumbnail with each layer's boxes and labels drawn on it."""
    with Image.open(io.BytesIO(data)) as opened:
        picture = opened.convert("RGB")
    pen = ImageDraw.Draw(picture)
    for layer in layers:
        for box, label in zip(layer.boxes.reshape(-1, 4).tolist(), layer.labels, strict=True):
            pen.rectangle(box, outline=layer.colour, width=2)
            pen.text((box[0] + 2, max(0, box[1] - 11)), label, fill=layer.colour)
    return encode(picture, image_format, 90)
