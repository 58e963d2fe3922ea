"""The field conditions: a severity of 0 changes nothing, 1 changes the frame, the same
seed gives the same frame, and the ground truth follows the scene where it moves."""

from __future__ import annotations

import numpy as np
import pytest

from lookout.lookout_demo.field_conditions import (
    FIELD_CONDITIONS,
    NEGATIVE_CONTROLS,
    letterbox_bars,
    mirror,
    truncated_frame,
)
from lookout.lookout_demo.scenes import generate_scene

SCENE = generate_scene(7)


def _rng() -> np.random.Generator:
    return np.random.default_rng(3)


@pytest.mark.parametrize("name", sorted(FIELD_CONDITIONS))
def test_severity_zero_is_the_scene_and_one_changes_it(name: str) -> None:
    degrade = FIELD_CONDITIONS[name]
    untouched = degrade(SCENE, 0.0, _rng())
    assert np.array_equal(untouched.image, SCENE.image)
    assert np.array_equal(untouched.boxes, SCENE.boxes)
    severe = degrade(SCENE, 1.0, _rng())
    assert severe.image.shape == SCENE.image.shape and severe.image.dtype == np.uint8
    assert np.abs(severe.image.astype(int) - SCENE.image).mean() > 1.0
    assert np.array_equal(degrade(SCENE, 1.0, _rng()).image, severe.image)  # reproducible


@pytest.mark.parametrize("name", sorted(NEGATIVE_CONTROLS))
def test_negative_controls_keep_every_object(name: str) -> None:
    controlled = NEGATIVE_CONTROLS[name](SCENE, 1.0, _rng())
    assert len(controlled.boxes) == len(SCENE.boxes)
    if name != "mirror":
        assert np.abs(controlled.image.astype(int) - SCENE.image).mean() <= 2.0


def test_the_mirror_mirrors_the_boxes() -> None:
    mirrored = mirror(SCENE, 1.0, _rng())
    width = SCENE.size[0]
    assert np.allclose(mirrored.boxes[:, 0], width - SCENE.boxes[:, 2])
    assert np.array_equal(mirror(mirrored, 1.0, _rng()).image, SCENE.image)


def test_a_truncated_frame_loses_the_objects_it_hides() -> None:
    scene = next(s for s in map(generate_scene, range(100))
                 if (s.boxes[:, 1] > s.image.shape[0] * 0.5).any())
    cut = truncated_frame(scene, 1.0, _rng())
    start = round(scene.image.shape[0] * 0.4)
    assert (cut.image[start:] == 128).all()
    assert len(cut.boxes) < len(scene.boxes)
    assert (cut.boxes[:, 1] < start).all()


def test_letterbox_bars_move_the_boxes_with_the_picture() -> None:
    barred = letterbox_bars(SCENE, 1.0, _rng())
    height = SCENE.image.shape[0]
    assert (barred.image[:height // 4 - 1] == 0).all()
    assert (barred.boxes[:, 1] >= height // 4 - 1).all()
    assert (barred.boxes[:, 3] <= height - height // 4 + 1).all()
