"""The scene generator and perturbations: deterministic, exact boxes, graded severity."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lookout.lookout_demo.perturbations import (
    MEDIUM,
    PERTURBATIONS,
    UnknownPerturbation,
    perturb,
)
from lookout.lookout_demo.scenes import (
    CLASSES,
    UNSEEN_CLASS,
    UNSEEN_CLASS_ID,
    draw_shape,
    generate_scene,
)


def test_a_seed_always_gives_the_same_scene() -> None:
    first, again, other = generate_scene(11), generate_scene(11), generate_scene(12)
    assert np.array_equal(first.image, again.image)
    assert np.array_equal(first.boxes, again.boxes)
    assert not np.array_equal(first.image, other.image)


def test_scenes_have_valid_labelled_boxes() -> None:
    seen = set()
    for seed in range(40):
        scene = generate_scene(seed)
        width, height = scene.size
        assert 1 <= len(scene.boxes) <= 6
        assert scene.boxes.shape == (len(scene.classes), 4)
        assert np.all(scene.boxes[:, 2] > scene.boxes[:, 0] + 8)
        assert np.all(scene.boxes[:, 3] > scene.boxes[:, 1] + 8)
        assert np.all(scene.boxes[:, [0, 2]] <= width) and np.all(scene.boxes >= 0)
        assert np.all(scene.boxes[:, [1, 3]] <= height)
        seen.update(scene.classes.tolist())
    assert seen == set(range(len(CLASSES)))


@pytest.mark.parametrize("name", [*CLASSES, UNSEEN_CLASS])
def test_boxes_are_exact_for_every_shape(name: str) -> None:
    canvas = Image.new("RGB", (200, 200), (0, 0, 0))
    box = draw_shape(ImageDraw.Draw(canvas), name, np.array([100.0, 100.0]), 40.0, 0.7,
                     (255, 255, 255))
    ys, xs = np.nonzero(np.asarray(canvas)[..., 0])
    drawn = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    np.testing.assert_allclose(drawn, box, atol=1.5)


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_perturbations_are_reproducible_and_keep_the_frame(kind: str) -> None:
    scene = generate_scene(5)
    first, again = perturb(scene, kind, MEDIUM, seed=3), perturb(scene, kind, MEDIUM, seed=3)
    assert np.array_equal(first.image, again.image)
    assert np.array_equal(first.boxes, again.boxes)
    assert first.image.shape == scene.image.shape and first.image.dtype == np.uint8
    assert not np.array_equal(first.image, scene.image)


def _brightness(scene) -> float:
    return float(scene.image.mean())


def _sharpness(scene) -> float:
    grey = scene.image.astype(np.float32).mean(axis=2)
    return float(np.abs(np.diff(grey, axis=1)).mean())


def _noise_level(scene, clean) -> float:
    return float(np.abs(scene.image.astype(int) - clean.image.astype(int)).mean())


@pytest.mark.parametrize(("kind", "measure", "direction"), [
    ("dark", _brightness, -1), ("overexposed", _brightness, +1),
    ("defocus_blur", _sharpness, -1), ("motion_blur", _sharpness, -1),
])
def test_severity_grades_the_effect(kind, measure, direction) -> None:
    scene = generate_scene(8)
    values = [measure(perturb(scene, kind, s)) for s in (0.0, 0.25, 0.5, 1.0)]
    steps = np.diff(values) * direction
    assert np.all(steps > 0), values


def test_noise_and_compression_grow_with_severity() -> None:
    scene = generate_scene(8)
    noise = [_noise_level(perturb(scene, "noise", s), scene) for s in (0.2, 0.5, 1.0)]
    assert noise == sorted(noise) and noise[0] > 0
    # heavier JPEG loses detail: the decoded frame differs more from the original
    lossy = [_noise_level(perturb(scene, "jpeg", s), scene) for s in (0.1, 0.5, 1.0)]
    assert lossy == sorted(lossy)


def test_severity_zero_changes_nothing_and_out_of_range_is_refused() -> None:
    scene = generate_scene(9)
    # (jpeg is left out: re-encoding at quality 95 is not the identity)
    for kind in ("dark", "noise", "scale", "occlusion", "unseen_class"):
        assert np.array_equal(perturb(scene, kind, 0.0).image, scene.image), kind
    with pytest.raises(ValueError, match="within"):
        perturb(scene, "dark", 1.5)
    with pytest.raises(UnknownPerturbation, match="choose from"):
        perturb(scene, "fog")


def test_scale_shrinks_boxes_with_the_image() -> None:
    scene = generate_scene(21)
    smaller = perturb(scene, "scale", 0.5)
    ratio = (smaller.boxes[:, 2] - smaller.boxes[:, 0]) / (scene.boxes[:, 2] - scene.boxes[:, 0])
    np.testing.assert_allclose(ratio, 0.7, atol=0.02)


def test_unseen_class_adds_labelled_objects_of_a_new_shape() -> None:
    scene = generate_scene(2)
    changed = perturb(scene, "unseen_class", 1.0)
    added = changed.classes[len(scene.classes):]
    assert len(added) >= 1 and set(added.tolist()) == {UNSEEN_CLASS_ID}
    assert np.array_equal(changed.boxes[: len(scene.boxes)], scene.boxes)


def test_occlusion_covers_objects_but_keeps_their_boxes() -> None:
    scene = generate_scene(4)
    occluded = perturb(scene, "occlusion", 1.0)
    assert np.array_equal(occluded.boxes, scene.boxes)
    x1, y1, x2, y2 = scene.boxes[0].astype(int)
    assert not np.array_equal(occluded.image[y1:y2, x1:x2], scene.image[y1:y2, x1:x2])
