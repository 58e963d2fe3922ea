"""Pixels of an input image at the size a consumer needs, decoded as cheaply as that allows.

JPEG is decoded with Pillow's draft mode (DCT scaling): asking for a 256-pixel image of
a 4K frame decodes at 1/8 scale, several times faster than a full decode. The returned
scale maps coordinates on the decoded pixels back to the original image.

A chain decodes each input once, at the largest size any of its stages needs
(`DecodeSize`): the reference model's letterbox, the drift features' box, the
thumbnail's longest side. With no such stage it still decodes at 1/8, the cheapest
decode that proves the image is whole. With a reference model on, that size is its
input for every exchange, not only the share it evaluates: frames larger than it cost a
larger decode than drift alone would (docs/PERFORMANCE.md, issue 36).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from lookout.sidecar.pipeline.inputs import InputImage, decode_failures


@dataclass(frozen=True, slots=True)
class DecodedImage:
    rgb: np.ndarray  # HWC uint8
    scale: float  # original pixels per decoded pixel (>= 1)


@dataclass(slots=True)
class DecodeSize:
    """The largest size the stages of one chain need an input's pixels at: at least
    `width` x `height` (a model's input, the drift features' box) and a longest side of at
    least `longest` (thumbnails). Stages raise it when they know their need: the
    reference stage once its model is loaded."""

    width: int = 0
    height: int = 0
    longest: int = 0

    def need(self, width: int = 0, height: int = 0, longest: int = 0) -> None:
        self.width = max(self.width, width)
        self.height = max(self.height, height)
        self.longest = max(self.longest, longest)

    @property
    def needed(self) -> bool:
        return bool(self.width or self.height or self.longest)

    def request(self, width: int, height: int) -> tuple[int, int]:
        """The draft size for an image of `width` x `height`: every need covered, or 1/8
        when nothing needs its pixels."""
        if not self.needed:
            return max(width // 8, 1), max(height // 8, 1)
        scale = min(1.0, self.longest / max(width, height, 1))
        return max(self.width, round(width * scale)), max(self.height, round(height * scale))


def decode_rgb(image: InputImage, min_width: int = 0, min_height: int = 0) -> DecodedImage:
    """RGB pixels at least `min_width` x `min_height` where the original is that large
    (0: full size). Raises OSError/ValueError for images that do not decode."""
    if image.pixels is not None:
        return DecodedImage(image.pixels, 1.0)
    assert image.encoded is not None
    with Image.open(io.BytesIO(image.encoded)) as opened:
        if min_width or min_height:
            opened.draft("RGB", (max(min_width, 1), max(min_height, 1)))
        rgb = np.asarray(opened.convert("RGB"))
    return DecodedImage(rgb, image.width / rgb.shape[1])


def decode_at(image: InputImage, size: DecodeSize) -> DecodedImage:
    """The image decoded once for every stage `size` speaks for."""
    return decode_rgb(image, *size.request(image.width, image.height))


def decode_input(image: InputImage, size: DecodeSize) -> DecodedImage:
    """`decode_at`, its failures named as `open_encoded` names them (ParseFailure)."""
    with decode_failures():
        return decode_at(image, size)
