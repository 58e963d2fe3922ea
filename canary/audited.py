"""A canary judged by its labels where it has them: an audit of the canary version
(`lookout audit import`) takes the place of the precision and recall proxies.

The proxies measure agreement with a reference model, which can share the primary's
blind spots; an audit measures the truth on a random sample of the version's traffic,
with a 95% interval. Where both versions were audited the intervals are compared: the
canary is worse only when its whole interval lies below the baseline's (better, above),
which is conservative for two independent intervals. Where only the canary was audited
the proxies still judge (a labelled number cannot be compared with an agreement) and
the row says what the audit found. The audit records are read by the command line
(`lookout canary judge --store`); this module takes them as plain documents.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lookout.slo.judge import Judgement, JudgeSettings, MetricJudgement, MetricOutcome, overall

# canary metric name -> the audit's rate (slo/canary.py's PRECISION and RECALL)
AUDITED_METRICS = {"precision": "precision", "recall": "recall"}
ALL_CLASSES = "all"


@dataclass(frozen=True, slots=True)
class AuditedRate:
    """One version's audited rate over every class, with its 95% interval."""

    batch_id: str
    value: float
    low: float
    high: float
    images: int

    def describe(self) -> str:
        return (f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}] (audit {self.batch_id}, "
                f"{self.images} images)")


def newest_audit(records: Iterable[Mapping[str, Any]], model: str, version: str
                 ) -> Mapping[str, Any] | None:
    """The newest estimated audit of this model version, or None."""
    estimated = [r for r in records if r.get("status") == "estimated"
                 and r.get("model") == model and r.get("version") == version
                 and (r.get("estimates") or {}).get(ALL_CLASSES)]
    return max(estimated, key=lambda r: float(r.get("estimated") or r.get("created") or 0),
               default=None)


def audited_rates(record: Mapping[str, Any] | None) -> dict[str, AuditedRate]:
    """Canary metric name -> the audit's rate, where it has a value and an interval."""
    if record is None:
        return {}
    row = record["estimates"][ALL_CLASSES]
    images = int((record.get("labels") or {}).get("random", 0))
    rates = {}
    for metric, rate in AUDITED_METRICS.items():
        entry = row.get(rate) or {}
        if entry.get("audited") is not None and entry.get("interval"):
            low, high = entry["interval"]
            rates[metric] = AuditedRate(str(record["batch_id"]), float(entry["audited"]),
                                        float(low), float(high), images)
    return rates


def _compared(metric: MetricJudgement, canary: AuditedRate, baseline: AuditedRate
              ) -> MetricJudgement:
    if canary.high < baseline.low:
        outcome, how = MetricOutcome.WORSE, "below the baseline's interval"
    elif canary.low > baseline.high:
        outcome, how = MetricOutcome.BETTER, "above the baseline's interval"
    else:
        outcome, how = MetricOutcome.SAME, "the intervals overlap"
    return dataclasses.replace(
        metric, outcome=outcome,
        reason=f"audited in place of the proxy: canary {canary.describe()} vs baseline "
               f"{baseline.describe()}: {how}",
        baseline=baseline.value, canary=canary.value, shift=canary.value - baseline.value,
        shift_low=canary.low - baseline.high, shift_high=canary.high - baseline.low,
        tolerance=None, p_value=None, effect_size=None,
        baseline_events=float(baseline.images), canary_events=float(canary.images))


def with_audits(judgement: Judgement, settings: JudgeSettings,
                canary: Mapping[str, AuditedRate], baseline: Mapping[str, AuditedRate]
                ) -> Judgement:
    """The judgement with the audited metrics judged by their audits (see the module
    docstring); unchanged without an audit of the canary."""
    if not canary:
        return judgement
    metrics: list[MetricJudgement] = []
    replaced: list[str] = []
    for metric in judgement.metrics:
        audit = canary.get(metric.metric)
        if audit is None:
            metrics.append(metric)
        elif metric.metric in baseline:
            metrics.append(_compared(metric, audit, baseline[metric.metric]))
            replaced.append(metric.metric)
        else:
            metrics.append(dataclasses.replace(
                metric, reason=f"{metric.reason}; the canary's audit found "
                               f"{audit.describe()}, the baseline has none: the proxy judges"))
    result = overall(metrics, judgement.burn, settings)
    notes = _notes(replaced, [m for m in canary if m not in baseline and
                              any(j.metric == m for j in metrics)])
    return dataclasses.replace(result, reason=f"{result.reason}{notes}")


def _notes(replaced: Sequence[str], canary_only: Sequence[str]) -> str:
    parts = []
    if replaced:
        parts.append(f"audited {', '.join(replaced)} judged in place of the proxies")
    if canary_only:
        parts.append(f"canary audited for {', '.join(canary_only)} (no baseline audit)")
    return f" [{'; '.join(parts)}]" if parts else ""
