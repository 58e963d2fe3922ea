"""Blind spots both models share, which agreement cannot see: when the primary and the
reference report the same box, the precision proxy counts it as right whatever it is.
Boxes both found on a flat, textureless patch (a uniform bar, an overexposed wall) or
touching the frame's edge are where such shared false detections were seen; they are
marked suspect so that a human looks at them, not counted as errors."""

from __future__ import annotations

import numpy as np

from lookout.shadow_eval.boxes import Detections

BORDER = "border"
LOW_TEXTURE = "low_texture"
DRIFT_JUMP = "drift_jump"  # marked by the sampler, which knows the drift state
BORDER_SHARE = 0.01  # of the frame's width or height
LOW_TEXTURE_STD = 4.0  # grey levels: a filled region, not an object with edges


def suspect_reasons(agreed: Detections, rgb: np.ndarray) -> list[list[str]]:
    """For each box both models found (in `rgb`'s pixels), why it is suspect."""
    height, width = rgb.shape[:2]
    grey = rgb.mean(axis=2) if rgb.ndim == 3 else rgb.astype(np.float32)
    reasons = []
    for x1, y1, x2, y2 in agreed.boxes.tolist():
        found = []
        if (x1 <= BORDER_SHARE * width or y1 <= BORDER_SHARE * height
                or x2 >= (1 - BORDER_SHARE) * width or y2 >= (1 - BORDER_SHARE) * height):
            found.append(BORDER)
        left, top = max(int(x1), 0), max(int(y1), 0)
        right, bottom = min(int(np.ceil(x2)), width), min(int(np.ceil(y2)), height)
        patch = grey[top:bottom, left:right]
        if patch.size >= 4 and float(patch.std()) < LOW_TEXTURE_STD:
            found.append(LOW_TEXTURE)
        reasons.append(found)
    return reasons
