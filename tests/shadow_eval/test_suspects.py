"""Shared blind spots: boxes both models found on flat patches or at the frame's edge."""

from __future__ import annotations

import numpy as np

from lookout.shadow_eval.boxes import Detections
from lookout.shadow_eval.suspects import BORDER, LOW_TEXTURE, suspect_reasons


def test_flat_patches_and_the_frames_edge_are_suspect_textured_interiors_are_not() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (100, 200, 3)).astype(np.uint8)  # texture everywhere
    rgb[20:60, 120:170] = 40  # a flat filled region inside the frame
    boxes = Detections.from_arrays(
        [[30, 30, 60, 60], [125, 25, 165, 55], [0, 40, 20, 70], [180, 0, 199.5, 20]],
        [0.9] * 4, [0] * 4)
    assert suspect_reasons(boxes, rgb) == [[], [LOW_TEXTURE], [BORDER], [BORDER]]
