"""The demo's one line of narration: what the camera is doing to the frames, and what
the sidecar made of it — the drift alarm it raised (which feature, when), the precision
proxy on clean frames and now, and whether the proxies are to be believed. Built only
from the scene schedule and the metrics, so it says what a user's dashboards would."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from lookout.lookout_demo.camera import DriftPhase
from lookout.lookout_demo.reading import SidecarReading

RECENT_SECONDS = 10.0  # the span the view's "now" numbers are measured over
DISTRUST_REASONS = {
    "reference_boxes": "the reference's boxes per image left their normal band",
    "reference_flip_consistency": "the reference's boxes do not survive a mirror image",
}


def ratio(numerator: float, denominator: float) -> float | None:
    """A proxy's value, or None when nothing was measured (never a made-up 0)."""
    return numerator / denominator if denominator else None


def shown(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


@dataclass(frozen=True, slots=True)
class Measures:
    """The analysis measures between two readings; None where nothing was measured."""

    precision: float | None
    recall: float | None
    confidence: float | None
    flip: float | None
    per_frame: float | None

    @classmethod
    def between(cls, before: SidecarReading, now: SidecarReading) -> Measures:
        matched = now.shadow_matched - before.shadow_matched
        return cls(
            ratio(matched, now.shadow_primary - before.shadow_primary),
            ratio(matched, now.shadow_reference - before.shadow_reference),
            ratio(now.confidence_sum - before.confidence_sum,
                  now.confidence_count - before.confidence_count),
            ratio(2 * (now.flip_matched - before.flip_matched),
                  now.flip_boxes - before.flip_boxes),
            ratio(now.detections - before.detections, now.analysed - before.analysed))


class Recent:
    """Readings of the last RECENT_SECONDS: the view's numbers are measured over that
    span, not one refresh, so a second without an analysed frame shows the last value
    rather than flickering to nothing."""

    def __init__(self, first: SidecarReading) -> None:
        self._readings: deque[tuple[float, SidecarReading]] = deque([(0.0, first)])

    def add(self, elapsed: float, reading: SidecarReading) -> Measures:
        self._readings.append((elapsed, reading))
        while len(self._readings) > 2 and self._readings[1][0] <= elapsed - RECENT_SECONDS:
            self._readings.popleft()
        return Measures.between(self._readings[0][1], reading)


def trust_text(reading: SidecarReading, learning_images: int) -> str:
    """The trust signal in words, with its reason."""
    if reading.trusted is None:
        seen = min(int(reading.shadow_evaluated), learning_images)
        return (f"not judged yet: learning the reference's normal behaviour "
                f"({seen} of {learning_images} evaluated images)")
    if reading.trusted:
        return "trusted: the reference model behaves as on the clean frames"
    reasons = "; ".join(f"{DISTRUST_REASONS.get(r, r)} ({r})" for r in sorted(reading.distrust))
    return f"not trusted: {reasons or 'outside its normal band'}"


class Story:
    """Remembers the precision proxy over the clean warm-up and when each alarm fired,
    and tells the current phase's story in one line."""

    def __init__(self) -> None:
        self._clean_precision: float | None = None

    def line(self, phase: DriftPhase, reading: SidecarReading, recent: Measures,
             alarms: dict[str, float], drift: str) -> str:
        """`alarms`: feature -> elapsed seconds it has been firing since; `drift`: the
        detector's state in words when no alarm fires."""
        if phase.kind is None:  # the clean frames: their precision is the "before"
            self._clean_precision = ratio(reading.shadow_matched, reading.shadow_primary)
        precision = f"precision proxy {shown(self._clean_precision)}"
        if phase.kind is not None:
            precision += f" -> {shown(recent.precision)}"
        if reading.trusted is None:
            trust = "trust not judged yet"
        else:
            trust = "trusted" if reading.trusted else \
                f"not trusted ({', '.join(sorted(reading.distrust))})"
        return f"{phase.name}: {self._alarm(phase, alarms, drift)}; {precision}, {trust}"

    @staticmethod
    def _alarm(phase: DriftPhase, alarms: dict[str, float], drift: str) -> str:
        raised = sorted((at, feature) for feature, at in alarms.items() if at >= phase.start)
        if raised:
            at, feature = raised[0]
            return f"{feature} drift alarm at {at:.0f} s"
        if alarms:
            feature, at = min(alarms.items(), key=lambda item: item[1])
            return f"{feature} drift alarm firing since {at:.0f} s"
        return drift
