"""When the reference model itself cannot be believed.

The proxies treat the reference's boxes as the truth, so they are only as good as the
reference is on the images at hand. Rain, snow, impulse noise and busy textures make a
detector report boxes that are not there; the recall proxy then falls while the
primary is fine (bench/quality.py measures it). What gives this away without labels is
the reference's own behaviour: how many boxes it reports per image, and whether its
boxes survive a mirror image of the frame. Each window of evaluated images is
summarised by those numbers (and its mean confidence, reported but not judged) and
compared with the band the first windows (the pod's normal traffic) spanned, widened by
a margin of that band: boxes per image outside it either way, or a flip consistency
below it, is distrust. A confidence that falls is not: on dark or fogged frames the
reference is less sure but no less right about what it reports, and the proxies still
track the truth there (bench/quality.py: judging confidence too left 63 of 121
conditions trusted instead of 81, for no condition more caught).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from lookout.shadow_eval.boxes import Detections
from lookout.shadow_eval.matching import flip_horizontally, matched_mask


class Distrust(StrEnum):
    """Why a window's proxies are not to be believed."""

    BOXES = "reference_boxes"  # boxes per image outside the normal band
    FLIP = "reference_flip_consistency"  # its boxes do not survive their own flip


# the reason, the column of WindowTally.statistics it reads, and which side distrusts
JUDGED = ((Distrust.BOXES, 0, "both"), (Distrust.FLIP, 2, "low"))
STATISTICS = tuple(reason for reason, _, _ in JUDGED)


@dataclass(slots=True)
class WindowTally:
    """What one window of evaluated images saw of the reference."""

    images: int = 0
    boxes: int = 0
    score_sum: float = 0.0
    flip_images: int = 0
    flip_boxes: int = 0  # on the original and the mirrored view, flip-checked images only
    flip_agreed: int = 0  # boxes found on both views, counted on each

    def add(self, boxes: int, score_sum: float,
            flip: tuple[int, int, int] | None = None) -> None:
        """One image's reference boxes and the sum of their confidences; for a
        flip-checked image (boxes on the original, boxes on the mirror, boxes of the
        original found on the mirror)."""
        self.images += 1
        self.boxes += boxes
        self.score_sum += score_sum
        if flip is not None:
            original, mirrored, agreed = flip
            self.flip_images += 1
            self.flip_boxes += original + mirrored
            self.flip_agreed += 2 * agreed

    def statistics(self) -> np.ndarray:
        """Boxes per image, mean confidence, flip consistency (NaN: nothing to say)."""
        return np.array([
            self.boxes / self.images if self.images else np.nan,
            self.score_sum / self.boxes if self.boxes else np.nan,
            self.flip_agreed / self.flip_boxes if self.flip_boxes else np.nan,
        ])


@dataclass(slots=True)
class TrustBand:
    """The normal range of each statistic, learnt from windows of normal traffic: the
    lowest and highest seen and their spread, kept raw so that the margin (widening the
    range by margin x spread either way) can be scaled later without relearning; an
    audit that finds the proxies wrong where they were trusted narrows it."""

    low: np.ndarray
    high: np.ndarray
    spread: np.ndarray
    margin: float

    @classmethod
    def learn(cls, windows: np.ndarray, margin: float) -> TrustBand:
        with warnings.catch_warnings():  # a statistic never seen (no flip checks): NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high = np.nanmin(windows, axis=0), np.nanmax(windows, axis=0)
        # a statistic that never moved still gets rounding room
        spread = np.maximum(np.nan_to_num(high - low), 1e-6 * np.abs(np.nan_to_num(high)))
        return cls(low, high, spread, margin)

    def bounds(self, factor: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """The band judged against, its margin scaled by `factor`."""
        room = self.margin * factor * self.spread
        return self.low - room, self.high + room

    def reasons(self, statistics: np.ndarray, factor: float = 1.0) -> list[Distrust]:
        """The judged statistics outside the band (its margin scaled by `factor`); a NaN
        (no flip-checked image) says nothing. A band that could not be learnt (NaN)
        judges nothing either."""
        low, high = self.bounds(factor)
        found = []
        with np.errstate(invalid="ignore"):
            for reason, column, side in JUDGED:
                value = statistics[column]
                if value < low[column] or (side == "both" and value > high[column]):
                    found.append(reason)
        return found


@dataclass(slots=True)
class TrustJudge:
    """Windows in, a verdict per window out: learning first, then judging."""

    window: int
    baseline_windows: int
    margin: float
    band: TrustBand | None = None
    factor: float = 1.0  # scales the band's margin from the next judged window on
    current: WindowTally = field(default_factory=WindowTally)
    _learnt: list[np.ndarray] = field(default_factory=list)

    @property
    def window_closed(self) -> bool:
        """Whether the last image ended a window (judged, or learnt from)."""
        return self.current.images == 0

    def add(self, scores: np.ndarray, flip: tuple[int, int, int] | None = None
            ) -> list[Distrust] | None:
        """One evaluated image's reference confidences. At the end of a judged window,
        its reasons for distrust (empty: trusted); otherwise None."""
        self.current.add(int(scores.size), float(scores.sum()), flip)
        if self.current.images < self.window:
            return None
        statistics, self.current = self.current.statistics(), WindowTally()
        if self.band is None:
            self._learnt.append(statistics)
            if len(self._learnt) >= self.baseline_windows:
                self.band = TrustBand.learn(np.array(self._learnt), self.margin)
            return None
        return self.band.reasons(statistics, self.factor)


def confirmed(detections: Detections, mirrored: Detections, width: float, floor: float,
              iou: float) -> tuple[Detections, int]:
    """The boxes of `detections` the reference is sure of — confidence at least `floor`
    and found again in `mirrored` (its detections on the mirrored frame) — and how many
    boxes survived the flip at all (for the flip consistency)."""
    stable = matched_mask(detections, flip_horizontally(mirrored, width), iou)
    keep = stable & (detections.scores >= floor)
    return (Detections(detections.boxes[keep], detections.scores[keep],
                       detections.classes[keep]), int(stable.sum()))
