"""Class-aware matching, the flip map and the compute budget."""

from __future__ import annotations

import numpy as np
import pytest

from lookout.shadow_eval.boxes import Detections
from lookout.shadow_eval.budget import ComputeBudget
from lookout.shadow_eval.matching import flip_horizontally, match


def dets(rows: list[tuple[float, float, float, float, float, int]]) -> Detections:
    array = np.asarray(rows, np.float32).reshape(-1, 6)
    return Detections.from_arrays(array[:, :4], array[:, 4], array[:, 5])


def test_identical_detections_agree_fully() -> None:
    boxes = dets([(0, 0, 10, 10, 0.9, 0), (20, 20, 40, 40, 0.8, 1), (50, 50, 60, 70, 0.7, 1)])
    agreement = match(boxes, boxes)
    assert agreement.matched == agreement.primary == agreement.reference == 3
    assert agreement.matched_per_class == {0: 1, 1: 2}
    assert np.allclose(agreement.match_ious, 1.0) and np.allclose(agreement.confidence_gaps, 0)


def test_matching_is_class_aware_and_one_to_one() -> None:
    reference = dets([(0, 0, 10, 10, 0.9, 0)])
    primary = dets([(0, 0, 10, 10, 0.6, 1),      # right place, wrong class
                    (0, 0, 10, 10, 0.95, 0),     # the match (highest confidence first)
                    (1, 0, 11, 10, 0.5, 0)])     # duplicate: the reference is taken
    agreement = match(primary, reference)
    assert agreement.matched == 1 and agreement.primary == 3 and agreement.reference == 1
    assert agreement.primary_per_class == {0: 2, 1: 1}
    assert agreement.confidence_gaps.tolist() == pytest.approx([0.05], abs=1e-6)


def test_iou_threshold_decides_a_match() -> None:
    reference = dets([(0, 0, 10, 10, 0.9, 0)])
    shifted = dets([(4, 0, 14, 10, 0.9, 0)])  # IoU 6/14 = 0.43
    assert match(shifted, reference, 0.5).matched == 0
    assert match(shifted, reference, 0.4).matched == 1
    assert match(shifted, reference, 0.4).match_ious[0] == pytest.approx(6 / 14)


def test_empty_sides() -> None:
    some = dets([(0, 0, 10, 10, 0.9, 2)])
    assert match(Detections.empty(), some).reference_per_class == {2: 1}
    assert match(some, Detections.empty()).matched == 0
    assert match(Detections.empty(), Detections.empty()).primary == 0


def test_flip_is_its_own_inverse() -> None:
    original = dets([(10, 5, 30, 25, 0.9, 0)])
    flipped = flip_horizontally(original, 100)
    assert flipped.boxes.tolist() == [[70, 5, 90, 25]]
    assert np.array_equal(flip_horizontally(flipped, 100).boxes, original.boxes)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_bursts_then_the_rate() -> None:
    clock = FakeClock()
    budget = ComputeBudget(rate_per_second=2, burst=3, max_busy_share=1.0, clock=clock)
    assert [budget.try_acquire() for _ in range(4)] == [True, True, True, False]
    clock.now = 0.5  # one token refilled
    assert [budget.try_acquire() for _ in range(2)] == [True, False]


def test_busy_share_cap_refuses_until_the_window_forgets() -> None:
    clock = FakeClock()
    budget = ComputeBudget(rate_per_second=1000, burst=1000, max_busy_share=0.2,
                           window_seconds=10, clock=clock)
    budget.spent(1.5)
    assert budget.try_acquire()
    budget.spent(0.5)  # 2 s of the last 10 s: at the cap
    assert budget.busy_share() == pytest.approx(0.2)
    assert not budget.try_acquire()
    clock.now = 10.5  # both reports are older than the window
    assert budget.busy_share() == 0 and budget.try_acquire()


def test_budget_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        ComputeBudget(rate_per_second=0, burst=1, max_busy_share=0.5)
    with pytest.raises(ValueError):
        ComputeBudget(rate_per_second=1, burst=1, max_busy_share=1.5)


@pytest.mark.parametrize("share", [1.0, 0.5])
def test_a_saturated_worker_is_busy_as_it_spends_time(share: float) -> None:
    """300 images, 8 offered a step; the admitted ones are one run of 1 s, and a step
    with none admitted idles 1 s. A worker busy all the time is busy 1.0, not more, so
    a share of 1 refuses nothing; 0.5 still refuses some and admits some."""
    clock = FakeClock()
    budget = ComputeBudget(rate_per_second=1e6, burst=1e6, max_busy_share=share,
                           window_seconds=10, clock=clock)
    admitted = refused = 0
    for _ in range(300 // 8):
        taken = [budget.try_acquire() for _ in range(8)]
        admitted, refused = admitted + sum(taken), refused + taken.count(False)
        if any(taken):
            with budget.running():
                clock.now += 0.5
                assert budget.busy_share() <= 1.0  # the run counts as it goes
                clock.now += 0.5
        else:
            clock.now += 1.0
        assert budget.busy_share() <= 1.0
    if share == 1.0:
        assert refused == 0 and admitted == 296
    else:
        assert refused > 0 and admitted > 0


def test_a_run_in_progress_counts_before_it_ends() -> None:
    clock = FakeClock()
    budget = ComputeBudget(rate_per_second=1000, burst=1000, max_busy_share=0.5,
                           window_seconds=10, clock=clock)
    with budget.running():
        clock.now = 4.0
        assert budget.busy_share() == pytest.approx(0.4) and budget.try_acquire()
        clock.now = 6.0
        assert not budget.try_acquire()  # 6 s of the last 10 s, still running
    clock.now = 20.0
    assert budget.busy_share() == 0 and budget.try_acquire()


def test_only_the_part_of_a_run_inside_the_window_counts() -> None:
    clock = FakeClock()
    budget = ComputeBudget(rate_per_second=1000, burst=1000, max_busy_share=0.5,
                           window_seconds=10, clock=clock)
    clock.now = 30.0
    budget.spent(30.0)  # busy since 0: only the last 10 s are in the window
    assert budget.busy_share() == pytest.approx(1.0)
    clock.now = 35.0
    assert budget.busy_share() == pytest.approx(0.5)
