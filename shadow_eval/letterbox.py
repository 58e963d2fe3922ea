"""Letterbox geometry as Ultralytics applies it: scale to fit, pad evenly with grey.

A raw YOLO head speaks in the model's input pixels; the user's image is usually of
another size. `Letterbox` maps boxes between the two exactly as Ultralytics'
`LetterBox` and `scale_boxes` do, rounding included, so decoded boxes match what the
user's own post-processing would produce.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Letterbox:
    source_width: int
    source_height: int
    input_width: int = 640
    input_height: int = 640

    @property
    def gain(self) -> float:
        return min(self.input_height / self.source_height, self.input_width / self.source_width)

    @property
    def resized(self) -> tuple[int, int]:
        """(width, height) of the image inside the padding."""
        return (round(self.source_width * self.gain), round(self.source_height * self.gain))

    @property
    def padding(self) -> tuple[int, int]:
        """(left, top) padding in input pixels, as `scale_boxes` computes it."""
        return (round((self.input_width - self.source_width * self.gain) / 2 - 0.1),
                round((self.input_height - self.source_height * self.gain) / 2 - 0.1))

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        """xyxy boxes in input pixels -> source pixels, clipped to the image."""
        left, top = self.padding
        out = (boxes - np.array([left, top, left, top], boxes.dtype)) / self.gain
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, self.source_width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, self.source_height)
        return out

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """xyxy boxes in source pixels -> input pixels (what the model would output)."""
        left, top = self.padding
        return boxes * self.gain + np.array([left, top, left, top], boxes.dtype)


def letterbox_image(image: np.ndarray, input_width: int = 640,
                    input_height: int = 640) -> tuple[np.ndarray, Letterbox]:
    """Resize to fit and pad with grey (114) exactly as Ultralytics' `LetterBox` does;
    returns the HWC uint8 model input and the geometry to map boxes back."""
    from PIL import Image

    height, width = image.shape[:2]
    geometry = Letterbox(width, height, input_width, input_height)
    new_w, new_h = geometry.resized
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h),
                                                       Image.Resampling.BILINEAR))
    left = round((input_width - new_w) / 2 - 0.1)
    top = round((input_height - new_h) / 2 - 0.1)
    canvas = np.full((input_height, input_width, 3), 114, np.uint8)
    canvas[top:top + new_h, left:left + new_w] = resized[..., :3]
    return canvas, geometry
