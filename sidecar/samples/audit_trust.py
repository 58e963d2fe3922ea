"""What an audit teaches the trust signal: where the labels found a proxy wrong that the
trust signal let through, its band is too wide for this traffic, so the model's band
narrows until a newer audit agrees.

An audit *disagrees* when a proxy (precision or recall, every class: the record's `all`
row) lies outside the audited 95% interval by more than `PROXY_BIAS_MARGIN`: the same
rule and margin as the LookoutProxyBiasHigh alert (`alerts/operational.py`), so a
narrowed band and a firing alert mean the same audit. It disagrees *with "trusted"*
when the images behind those proxies were ones the trust signal believed. The record
cannot tell that today (the audit's proxies are computed on images the reference
evaluated, and a sample does not keep its window's verdict), so every disagreement is
taken as one with "trusted": the cost of a wrong guess is a band that distrusts sooner
until the next audit, which is the safe side for a signal that gates the quality SLOs.

Only a model's newest estimated audit counts (any version: the band judges the
reference on this pod's traffic, which a new primary version does not change); a newer
one that agrees restores the factor to 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lookout.sidecar.samples.audit_metrics import newest_audits
from lookout.sidecar.samples.audit_records import ALL_CLASSES, RATES
from lookout.slo.catalog import PROXY_BIAS_MARGIN

NARROWED = 0.5  # the band's margin while the newest audit disagrees


def outside_by(entry: Mapping[str, Any]) -> float | None:
    """How far one rate's proxy lies outside the audited interval (0 inside it); None
    when the entry lacks the proxy or the interval."""
    interval = entry.get("interval") or (None, None)
    proxy, lower, upper = entry.get("proxy"), interval[0], interval[1]
    if proxy is None or lower is None or upper is None:
        return None
    return max(float(lower) - float(proxy), float(proxy) - float(upper), 0.0)


def disagrees(record: Mapping[str, Any], margin: float = PROXY_BIAS_MARGIN) -> bool:
    """Whether an estimated audit found a proxy of every class outside its interval by
    more than `margin` (LookoutProxyBiasHigh's condition)."""
    row = (record.get("estimates") or {}).get(ALL_CLASSES) or {}
    for rate in RATES:
        distance = outside_by(row.get(rate) or {})
        if distance is not None and distance > margin:
            return True
    return False


def margin_factors(records: Iterable[Mapping[str, Any]], models: Sequence[str],
                   margin: float = PROXY_BIAS_MARGIN) -> dict[str, float]:
    """Each of `models`' trust-band margin factor from its newest estimated audit: 1
    without one, or while it agrees; `NARROWED` while it disagrees."""
    factors = {model: 1.0 for model in models}
    decided: set[str] = set()
    for record in newest_audits(records, {model: () for model in models}):  # newest first
        model = str(record["model"])
        if model not in decided:
            decided.add(model)
            factors[model] = NARROWED if disagrees(record, margin) else 1.0
    return factors
