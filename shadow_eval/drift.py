"""Online drift detection, calibrated for an expected run time between false alarms.

Each feature's values are binned by what the baseline looked like: continuous
features into baseline quantile bins, categorical ones into the baseline's categories
plus "other". Values are tested in consecutive windows of `window` values (tumbling,
not sliding: consecutive windows are then independent, so if a window false-alarms
with probability alpha, alarms on a stationary stream are `window / alpha` values
apart on average — the calibration is exact rather than approximate). The statistic
is the binned Kolmogorov-Smirnov distance for continuous features and Pearson's
chi-square for categorical ones; the alarm threshold is the (1 - alpha) quantile of
the statistic under "no drift", found by simulation. The simulation draws the true
bin probabilities from their posterior given the baseline (Dirichlet) before drawing
each window, so a small baseline widens the threshold instead of causing alarms.

alpha is set from the target: F features each closing a window every `window` values
raise false alarms at F * alpha / window per image, so one false alarm every
`false_alarm_images` images overall needs alpha = window / (F * false_alarm_images).
(Features that skip images, such as confidence on images without detections, close
windows less often: the target is then met with room to spare.)

An alarm clears after `clear_windows` consecutive windows below the null's 90%
quantile (hysteresis: a drifted stream hovering at the threshold does not flap).
Each closed window also gets scipy's exact two-sample KS test (continuous) or
chi-square test (categorical) and the population stability index, for reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from lookout.shadow_eval.features import is_missing
from lookout.shadow_eval.limits import CATEGORICAL, MIN_BASELINE_VALUES

OTHER = "<other>"
QUANTILE_BINS = 10
# simulated windows: enough for ~20 beyond the threshold, within a few seconds
NULL_DRAWS_MIN = 40_000
NULL_DRAWS_MAX = 400_000
NULL_CHUNK = 20_000
CLEAR_QUANTILE = 0.9
PSI_EPSILON = 1e-4


class DriftConfigError(ValueError):
    """The baseline or settings cannot support a detector; the message says why."""


class FeatureProfile:
    """What one feature looked like in the baseline, as bins with probabilities."""

    def __init__(self, name: str, values: Sequence[float | str], categorical: bool) -> None:
        if len(values) < MIN_BASELINE_VALUES:
            raise DriftConfigError(f"feature {name!r}: {len(values)} baseline values, "
                                   f"at least {MIN_BASELINE_VALUES} are needed")
        self.name = name
        self.categorical = categorical
        if categorical:
            labels, counts = np.unique(np.asarray([str(v) for v in values]), return_counts=True)
            self.categories = {str(label): i for i, label in enumerate(labels)}
            self.counts = np.append(counts, 0).astype(np.float64)  # last bin: other
            self.values = np.zeros(0)
        else:
            self.values = np.asarray(values, np.float64)
            quantiles = np.quantile(self.values, np.linspace(0, 1, QUANTILE_BINS + 1)[1:-1])
            self.edges = np.unique(quantiles)
            self.counts = np.bincount(np.searchsorted(self.edges, self.values, "right"),
                                      minlength=self.edges.size + 1).astype(np.float64)
        self.probabilities = self.counts / self.counts.sum()

    @property
    def bins(self) -> int:
        return self.counts.size

    def bin(self, value: float | str) -> int:
        if self.categorical:
            return self.categories.get(str(value), self.bins - 1)
        return int(np.searchsorted(self.edges, float(value), "right"))

    def statistics(self, counts: np.ndarray) -> np.ndarray:
        """The statistic for window bin counts ([K] or [D, K])."""
        counts = np.asarray(counts, np.float64)
        totals = counts.sum(axis=-1, keepdims=True)
        if self.categorical:
            # "other" has no baseline mass; half a count keeps its expectation finite
            expected = (self.counts + 0.5) / (self.counts.sum() + 0.5 * self.bins) * totals
            return (((counts - expected) ** 2) / expected).sum(axis=-1)
        window_cdf = np.cumsum(counts, axis=-1) / totals
        return np.abs(window_cdf - np.cumsum(self.probabilities)).max(axis=-1)

    def null_statistics(self, window: int, draws: int, rng: np.random.Generator) -> np.ndarray:
        """The statistic on `draws` simulated windows of a stream that has not drifted
        (in chunks, so memory stays at a few MB whatever the draw count)."""
        chunks = []
        for start in range(0, draws, NULL_CHUNK):
            truth = rng.dirichlet(self.counts + 0.5, size=min(NULL_CHUNK, draws - start))
            chunks.append(self.statistics(rng.multinomial(window, truth)))
        return np.concatenate(chunks)

    def psi(self, counts: np.ndarray) -> float:
        window = (counts + PSI_EPSILON) / (counts.sum() + PSI_EPSILON * counts.size)
        base = (self.counts + PSI_EPSILON) / (self.counts.sum() + PSI_EPSILON * self.bins)
        return float(((window - base) * np.log(window / base)).sum())

    def exact_test(self, window_values: Sequence[float | str], counts: np.ndarray) -> float:
        """p-value of scipy's two-sample KS (continuous) or chi-square (categorical) test."""
        stats = _scipy_stats()
        if not self.categorical:
            return float(stats.ks_2samp(np.asarray(window_values, np.float64),
                                        self.values).pvalue)
        expected = (self.counts + 0.5) / (self.counts.sum() + 0.5 * self.bins) * counts.sum()
        return float(stats.chisquare(counts, expected).pvalue)


def _scipy_stats() -> ModuleType:
    """scipy.stats, imported when a detector is built: 60 MB that a process which only
    validates drift settings (the proxy's) does not need, and an import of seconds
    (tens on a busy machine: it parses its docstrings) that must not stall the first
    closed window's analysis, as it did when imported there."""
    from scipy import stats

    return stats


@dataclass(frozen=True, slots=True)
class WindowResult:
    feature: str
    statistic: float
    threshold: float
    alarm: bool  # state after this window
    raised: bool  # this window raised the alarm
    psi: float
    p_value: float


class DriftDetector:
    """One feature's tumbling-window detector with hysteresis."""

    def __init__(self, profile: FeatureProfile, window: int, alpha: float,
                 clear_windows: int = 2, rng: np.random.Generator | None = None) -> None:
        if not 0 < alpha < 1:
            raise DriftConfigError(f"per-window false alarm probability {alpha:g} is not in "
                                   f"(0, 1); raise the false-alarm target or shrink the window")
        rng = rng or np.random.default_rng()
        draws = int(min(max(NULL_DRAWS_MIN, 20 / alpha), NULL_DRAWS_MAX))
        null = profile.null_statistics(window, draws, rng)
        self.profile = profile
        self.window = window
        self.alpha = alpha
        self.threshold = float(np.quantile(null, 1 - alpha))
        self.clear_threshold = min(float(np.quantile(null, CLEAR_QUANTILE)), self.threshold)
        self.clear_windows = clear_windows
        self.alarm = False
        self._quiet = 0
        self._counts = np.zeros(profile.bins)
        self._values: list[float | str] = []

    def update(self, value: float | str) -> WindowResult | None:
        """Add one value; returns the window's result when this value closes it."""
        self._counts[self.profile.bin(value)] += 1
        self._values.append(value)
        if len(self._values) < self.window:
            return None
        counts, values = self._counts, self._values
        self._counts, self._values = np.zeros(self.profile.bins), []
        statistic = float(self.profile.statistics(counts))
        raised = False
        if not self.alarm and statistic > self.threshold:
            self.alarm, raised, self._quiet = True, True, 0
        elif self.alarm:
            self._quiet = self._quiet + 1 if statistic <= self.clear_threshold else 0
            if self._quiet >= self.clear_windows:
                self.alarm = False
        return WindowResult(self.profile.name, statistic, self.threshold, self.alarm, raised,
                            self.profile.psi(counts), self.profile.exact_test(values, counts))


class DriftModel:
    """Detectors for every feature the baseline can support."""

    def __init__(self, detectors: Mapping[str, DriftDetector], skipped: Mapping[str, str]):
        self.detectors = dict(detectors)
        self.skipped = dict(skipped)  # feature -> why it is not tested

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, float | str | None]],
                  features: Sequence[str], *, window: int, false_alarm_images: int,
                  clear_windows: int = 2, seed: int | None = None) -> DriftModel:
        _scipy_stats()  # the exact tests' module, imported while calibrating
        rows = list(rows)
        profiles, skipped = {}, {}
        for name in features:
            values = [row.get(name) for row in rows]
            values = [v for v in values if not is_missing(v)]
            try:
                profile = FeatureProfile(name, values, name in CATEGORICAL)
            except DriftConfigError as error:
                skipped[name] = str(error)
                continue
            if not profile.categorical and np.unique(profile.values).size < 2:
                skipped[name] = f"feature {name!r} is constant in the baseline"
                continue
            profiles[name] = profile
        if not profiles:
            raise DriftConfigError("no feature has enough baseline values to test: "
                                   + "; ".join(skipped.values()))
        alpha = window / (len(profiles) * false_alarm_images)
        rng = np.random.default_rng(seed)
        detectors = {name: DriftDetector(p, window, alpha, clear_windows, rng)
                     for name, p in profiles.items()}
        return cls(detectors, skipped)

    def update(self, row: Mapping[str, float | str | None]) -> list[WindowResult]:
        results = []
        for name, detector in self.detectors.items():
            value = row.get(name)
            if not is_missing(value):
                result = detector.update(value)
                if result is not None:
                    results.append(result)
        return results

    @property
    def alarms(self) -> list[str]:
        return [name for name, detector in self.detectors.items() if detector.alarm]
