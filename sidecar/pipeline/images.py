"""Pixels of an input image at the size a consumer needs, decoded as cheaply as that allows.

JPEG is decoded with Pillow's draft mode (DCT scaling): asking for a 256-pixel image of
a 4K frame decodes at 1/8 scale, several times faster than a full decode. The returned
scale maps coordinates on the decoded pixels back to the original image.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from lookout.sidecar.pipeline.inputs import InputImage


@dataclass(frozen=True, slots=True)
class DecodedImage:
    rgb: np.ndarray  # HWC uint8
    scale: float  # original pixels per decoded pixel (>= 1)


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
