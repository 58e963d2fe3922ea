"""The trust judge on numbers: a band learnt from normal windows, and the reasons a
window outside it gives."""

from __future__ import annotations

import numpy as np

from lookout.shadow_eval.boxes import Detections
from lookout.shadow_eval.trust import Distrust, TrustBand, TrustJudge, WindowTally, confirmed


def _feed(judge: TrustJudge, boxes_per_image: int, score: float, flip=None):
    verdicts = []
    for _ in range(judge.window):
        verdicts.append(judge.add(np.full(boxes_per_image, score, np.float32), flip))
    return verdicts


def test_nothing_is_judged_while_the_band_is_learnt_then_windows_are() -> None:
    judge = TrustJudge(window=4, baseline_windows=3, margin=0.25)
    for boxes, score in ((3, 0.6), (4, 0.7), (5, 0.8)):
        assert _feed(judge, boxes, score, (boxes, boxes, boxes)) == [None] * 4
    assert judge.band is not None
    assert _feed(judge, 4, 0.7, (4, 4, 4))[-1] == []  # inside the band
    assert _feed(judge, 20, 0.7, (20, 20, 20))[-1] == [Distrust.BOXES]  # hallucinating
    assert _feed(judge, 4, 0.3, (4, 4, 4))[-1] == []  # less sure is not less right
    assert _feed(judge, 4, 0.7, (4, 4, 6))[-1] == []  # more consistent is no reason
    assert _feed(judge, 4, 0.7, (4, 4, 0))[-1] == [Distrust.FLIP]  # nothing survives a flip


def test_a_window_without_flip_checks_or_boxes_says_nothing_of_those() -> None:
    tally = WindowTally()
    tally.add(0, 0.0)
    statistics = tally.statistics()
    assert statistics[0] == 0 and np.isnan(statistics[1]) and np.isnan(statistics[2])
    judge = TrustJudge(window=2, baseline_windows=1, margin=0.25)
    _feed(judge, 3, 0.6, (3, 3, 3))
    assert _feed(judge, 3, 0.6)[-1] == []  # no flip-checked image: flip not judged


def test_confirmed_boxes_are_sure_and_survive_their_flip() -> None:
    width = 100.0
    detections = Detections.from_arrays(
        [[10, 10, 30, 30], [60, 10, 80, 30], [40, 40, 50, 50]], [0.9, 0.3, 0.8], [0, 0, 1])
    # the mirror view finds the first two (in mirrored coordinates), not the third
    mirrored = Detections.from_arrays([[70, 10, 90, 30], [20, 10, 40, 30]], [0.9, 0.3], [0, 0])
    sure, survived = confirmed(detections, mirrored, width, floor=0.35, iou=0.5)
    assert survived == 2
    assert len(sure) == 1 and sure.scores.tolist() == [np.float32(0.9)]


def test_a_factor_narrows_the_margin_without_relearning() -> None:
    # boxes per image 3..5 learnt: spread 2, margin 0.25 -> [2.5, 5.5]; at 0.5 [2.75, 5.25]
    band = TrustBand.learn(np.array([[3.0, 0.6, 1.0], [5.0, 0.8, 1.0]]), margin=0.25)
    assert band.low[0] == 3 and band.high[0] == 5 and band.spread[0] == 2  # kept raw
    just_inside = np.array([5.4, 0.7, 1.0])
    assert band.reasons(just_inside) == []
    assert band.reasons(just_inside, factor=0.5) == [Distrust.BOXES]
    assert band.reasons(np.array([2.6, 0.7, 1.0]), factor=0.5) == [Distrust.BOXES]
    assert band.reasons(just_inside) == []  # nothing learnt was changed


def test_the_judge_judges_with_its_current_factor() -> None:
    judge = TrustJudge(window=1, baseline_windows=2, margin=0.25)
    _feed(judge, 3, 0.6, (3, 3, 3))
    _feed(judge, 5, 0.6, (5, 5, 5))
    # 5.4 boxes per image is not an integer count: feed a window of 5 images instead
    judge.window = 5
    scores = [np.full(n, 0.6, np.float32) for n in (5, 5, 6, 6, 5)]  # 5.4 per image
    assert [judge.add(s) for s in scores][-1] == []
    judge.factor = 0.5
    assert [judge.add(s) for s in scores][-1] == [Distrust.BOXES]
    judge.factor = 1.0
    assert [judge.add(s) for s in scores][-1] == []
