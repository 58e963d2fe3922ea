"""Error budgets and multi-window, multi-burn-rate alerting (the SRE Workbook's scheme),
for any SLO period.

A tier pages or tickets when both its long and its short window burn faster than
`factor`. The Workbook states the factors for 30 days (14.4, 6, 3, 1); they come from
the share of the budget a tier may spend in its long window — 2% in 1 hour, 5% in 6
hours, 10% in 1 day, 10% in 3 days — so factor = share x period / long window, which
gives 13.44, 5.6, 2.8 and 0.93 for 28 days. The same numbers drive the generated
Prometheus rules and the in-process evaluation below (used by the canary gate and to
cross-check the rules).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

HOUR = 3600
DAY = 86400


@dataclass(frozen=True, slots=True)
class BurnRateWindow:
    tier: str  # the long window's name, also the `burn_tier` label
    long_seconds: int
    short_seconds: int
    budget_share: float  # share of the period's budget this tier may spend in `long`
    severity: str  # page or ticket

    def factor(self, period_seconds: int) -> float:
        return self.budget_share * period_seconds / self.long_seconds


TIERS: tuple[BurnRateWindow, ...] = (
    BurnRateWindow("1h", HOUR, 5 * 60, 0.02, "page"),
    BurnRateWindow("6h", 6 * HOUR, 30 * 60, 0.05, "page"),
    BurnRateWindow("1d", DAY, 2 * HOUR, 0.10, "ticket"),
    BurnRateWindow("3d", 3 * DAY, 6 * HOUR, 0.10, "ticket"),
)
# every window a recording rule is kept for, besides the SLO period itself
RECORDING_WINDOWS: tuple[int, ...] = (5 * 60, 30 * 60, HOUR, 2 * HOUR, 6 * HOUR, DAY, 3 * DAY)


@dataclass(frozen=True, slots=True)
class CounterSample:
    timestamp: float
    value: float


def increase(samples: Sequence[CounterSample], start: float, end: float) -> float:
    """How much a counter grew between the first and last sample in (start, end],
    resets included — what Prometheus' `increase` sees before its extrapolation, which
    cancels out in a ratio of two counters scraped together."""
    inside = [s for s in samples if start < s.timestamp <= end]
    total = 0.0
    for before, after in itertools.pairwise(inside):
        total += after.value - before.value if after.value >= before.value else after.value
    return total


def error_ratio(bad: Sequence[CounterSample], total: Sequence[CounterSample],
                window_seconds: float, at: float) -> float | None:
    """Bad events / all events in the window ending at `at`; None without events."""
    events = increase(total, at - window_seconds, at)
    if events <= 0:
        return None
    return increase(bad, at - window_seconds, at) / events


def burn_rate(ratio: float | None, budget: float) -> float | None:
    return None if ratio is None else ratio / budget


@dataclass(frozen=True, slots=True)
class TierDecision:
    tier: BurnRateWindow
    long_burn: float | None
    short_burn: float | None
    events: float
    firing: bool


def evaluate_tiers(bad: Sequence[CounterSample], total: Sequence[CounterSample],
                   budget: float, period_seconds: int, at: float, min_events: int,
                   window_scale: float = 1.0) -> list[TierDecision]:
    """The alerting decision of every tier at time `at`, as the generated rules make it."""
    decisions = []
    for tier in TIERS:
        long_window = tier.long_seconds * window_scale
        short_window = tier.short_seconds * window_scale
        long_burn = burn_rate(error_ratio(bad, total, long_window, at), budget)
        short_burn = burn_rate(error_ratio(bad, total, short_window, at), budget)
        events = increase(total, at - long_window, at)
        factor = tier.factor(period_seconds)
        firing = (long_burn is not None and short_burn is not None and long_burn > factor
                  and short_burn > factor and events >= min_events)
        decisions.append(TierDecision(tier, long_burn, short_burn, events, firing))
    return decisions
