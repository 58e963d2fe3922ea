"""The mAP yardstick on cases whose answer is known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from lookout.lookout_demo.evaluate import average_precision, mean_average_precision
from lookout.shadow_eval.boxes import Detections

TRUTH = (np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32), np.array([0, 1]))


def test_perfect_detections_score_one() -> None:
    detections = Detections.from_arrays(TRUTH[0], [0.9, 0.8], TRUTH[1])
    assert mean_average_precision([detections], [TRUTH], 2) == (1.0, [1.0, 1.0])


def test_a_missed_object_halves_that_class() -> None:
    truth = (np.vstack([TRUTH[0], [[50, 50, 60, 60]]]).astype(np.float32), np.array([0, 1, 1]))
    detections = Detections.from_arrays(TRUTH[0], [0.9, 0.8], TRUTH[1])
    overall, per_class = mean_average_precision([detections], [truth], 2)
    assert per_class == [1.0, 0.5] and overall == pytest.approx(0.75)


def test_a_confident_false_positive_costs_precision() -> None:
    boxes = np.array([[100, 100, 110, 110], [0, 0, 10, 10]], np.float32)
    detections = Detections.from_arrays(boxes, [0.95, 0.9], [0, 0])
    _, per_class = mean_average_precision([detections], [(TRUTH[0][:1], TRUTH[1][:1])], 1)
    assert per_class == [pytest.approx(0.5)]


def test_wrong_class_or_poor_overlap_is_no_match_and_unseen_truth_is_ignored() -> None:
    detections = Detections.from_arrays([[0, 0, 10, 10], [25, 25, 45, 45]], [0.9, 0.9], [1, 1])
    truth = (np.vstack([TRUTH[0], [[70, 70, 80, 80]]]).astype(np.float32),
             np.array([0, 1, -1]))
    _, per_class = mean_average_precision([detections], [truth], 2)
    assert per_class[0] == 0.0  # the class-0 object was only found as class 1
    assert per_class[1] == 0.0  # IoU 0.39 with the real one: not a match


def test_average_precision_interpolates_the_envelope() -> None:
    assert average_precision(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 0.67])) == \
        pytest.approx(0.5 + 0.5 * 0.67)
