"""`promtool test rules` unit tests, generated per SLO from the same spec as the rules.

Each SLO gets synthetic series in the metrics its SLI reads, and scenarios whose
expected alerts come from the in-process burn-rate model (`slo.burn`) — so every test
is also a cross-check that Prometheus, running the generated rules, decides exactly as
lookout's own math does:
- a fast burn (15x, or all-bad where the budget is too large for 15x) after 6 clean
  hours: no alert shortly before the first tier's threshold is crossed, that tier (and
  whatever else the model says) shortly after;
- steady 5x and 1x burns: tickets, and no page where the factors say so;
- a fast burn on 1 event a minute stays under the low-traffic guard;
- the error-ratio rule reads the series exactly (for latency: the right bucket).
Alert state is read from the `ALERTS` series, which carries every label but not the
annotations (their text holds the live value and is checked by the golden files).
Drift SLOs count alarmed minutes as their events. OpenSLO ratio SLOs use the user's own
queries, whose series lookout cannot synthesise: they get no scenarios.
"""

from __future__ import annotations

import itertools
from typing import Any

from prometheus_client.utils import floatToGoString

from lookout.alerts.rules import min_events, slo_labels
from lookout.slo import catalog
from lookout.slo.burn import CounterSample, evaluate_tiers
from lookout.slo.names import (
    AUDIT_AGE,
    BURN_ALERTS,
    ERROR_RATIO,
    PROXY_BIAS_HIGH,
    PROXY_CORRECTED,
    REFERENCE_OUT_OF_DISTRIBUTION,
)
from lookout.slo.sli import QUALITY_PROXIES
from lookout.slo.spec import SLO, Kind, ServiceSpec

CLEAN_MINUTES = 360  # history before a burn starts: fills the 6h window
TRAFFIC = 100.0  # events a minute
MARGIN = 0.05  # checks avoid moments when a burn rate is within 5% of a factor

Segments = list[tuple[float, int]]  # (events a minute, minutes)


def _values(segments: Segments) -> list[float]:
    """Counter values minute by minute, starting at 0 at minute 0."""
    values, value = [0.0], 0.0
    for rate, minutes in segments:
        for _ in range(minutes):
            value += rate
            values.append(value)
    return values


def _notation(values: list[float]) -> str:
    """promtool's expanding notation for a piecewise linear series."""
    parts, start = [], 0
    while start < len(values):
        step = values[start + 1] - values[start] if start + 1 < len(values) else 0.0
        end = start + 1
        while end < len(values) and abs(values[end] - values[end - 1] - step) < 1e-9:
            end += 1
        parts.append(f"{values[start]:.10g}+{step:.10g}x{end - 1 - start}")
        start = end
    return " ".join(parts)


def _series(spec: ServiceSpec, slo: SLO, good: list[float],
            bad: list[float]) -> list[dict[str, str]]:
    """Input series in the metrics `slo` reads, from good and bad counter values."""
    version = spec.version or "v1"
    total = [g + b for g, b in zip(good, bad, strict=True)]
    if slo.kind is Kind.DRIFT:
        alarmed = [int(after - before) for before, after in itertools.pairwise(bad)]
        series = f'{catalog.DRIFT_ALARM.name}{{model="{spec.model}",version="{version}",' \
                 f'feature="brightness"}}'
        return [{"series": series, "values": " ".join(str(v) for v in [0, *alarmed])}]
    base = f'model="{spec.model}",version="{version}",route="{slo.route or "/predict"}"'
    if slo.kind is Kind.AVAILABILITY:
        name = catalog.REQUESTS.sample_name
        return [{"series": f'{name}{{{base},code="200"}}', "values": _notation(good)},
                {"series": f'{name}{{{base},code="500"}}', "values": _notation(bad)}]
    if slo.kind is Kind.LATENCY:
        le = floatToGoString(slo.threshold)
        return [{"series": f'{catalog.REQUEST_DURATION.bucket_name}{{{base},le="{le}"}}',
                 "values": _notation(good)},
                {"series": f"{catalog.REQUEST_DURATION.count_name}{{{base}}}",
                 "values": _notation(total)}]
    base = f'model="{spec.model}",version="{version}",class="person"'
    proxy = QUALITY_PROXIES[slo.proxy or "precision"]
    return [{"series": f"{proxy.numerator.sample_name}{{{base}}}", "values": _notation(good)},
            {"series": f"{proxy.denominator.sample_name}{{{base}}}",
             "values": _notation(total)}]


def _alarm_values(pattern: list[tuple[float, int]]) -> tuple[list[float], list[float]]:
    """Drift SLOs: (share of minutes alarmed, minutes) segments as cumulative good and
    bad minute counts, alarms spread evenly (a share of 0.25 alarms every 4th minute)."""
    good, bad, alarmed = [0.0], [0.0], 0.0
    for share, minutes in pattern:
        for _ in range(minutes):
            target = alarmed + share
            bit = 1.0 if int(target + 1e-9) > int(alarmed + 1e-9) else 0.0
            alarmed = target
            bad.append(bad[-1] + bit)
            good.append(good[-1] + 1 - bit)
    return good, bad


class Scenario:
    """Good and bad events per minute, and what the in-process model expects of them."""

    def __init__(self, spec: ServiceSpec, slo: SLO, good: Segments, bad: Segments) -> None:
        self.spec, self.slo = spec, slo
        if slo.kind is Kind.DRIFT:  # events are minutes, alarmed or not
            shares = [(b / (g + b), m) for (g, m), (b, _) in zip(good, bad, strict=True)]
            self.good, self.bad = _alarm_values(shares)
        else:
            self.good, self.bad = _values(good), _values(bad)
        self._total = [CounterSample(60.0 * i, g + b)
                       for i, (g, b) in enumerate(zip(self.good, self.bad, strict=True))]
        self._bad = [CounterSample(60.0 * i, b) for i, b in enumerate(self.bad)]

    @property
    def minutes(self) -> int:
        return len(self.good) - 1

    def decisions(self, minute: int):
        return evaluate_tiers(self._bad, self._total, self.slo.budget,
                              self.spec.period_seconds, 60.0 * minute,
                              min_events(self.spec, self.slo))

    def clear_of_thresholds(self, minute: int) -> bool:
        """No burn rate within MARGIN of its factor: Prometheus' window edges cannot
        tip the decision either way."""
        for decision in self.decisions(minute):
            factor = decision.tier.factor(self.spec.period_seconds)
            for burn in (decision.long_burn, decision.short_burn):
                if burn is not None and abs(burn - factor) < MARGIN * factor:
                    return False
        return True

    def check(self, minute: int) -> dict[str, Any]:
        """Move `minute` off any threshold, then expect what the model decides there."""
        for offset in (0, 1, -1, 2, -2, 3, -3, 5, -5, 8, -8):
            candidate = minute + offset
            if 0 < candidate <= self.minutes and self.clear_of_thresholds(candidate):
                minute = candidate
                break
        firing = [d.tier for d in self.decisions(minute) if d.firing]
        labels = slo_labels(self.spec, self.slo)
        alert = BURN_ALERTS[self.slo.kind]
        matcher = f'ALERTS{{alertname="{alert}",slo="{self.slo.name}",alertstate="firing"}}'
        expected = []
        for tier in firing:
            pairs = {"alertname": alert, "alertstate": "firing", **labels, **self.spec.labels,
                     "severity": tier.severity, "burn_tier": tier.tier}
            text = ",".join(f'{k}="{v}"' for k, v in sorted(pairs.items()))
            expected.append({"labels": f"ALERTS{{{text}}}", "value": 1})
        return {"expr": matcher, "eval_time": f"{minute}m", "exp_samples": expected}

    def test(self, name: str, minutes: list[int]) -> dict[str, Any]:
        return {"name": f"{self.slo.name}: {name}", "interval": "1m",
                "input_series": _series(self.spec, self.slo, self.good, self.bad),
                "promql_expr_test": [self.check(m) for m in minutes]}


def _first_fire(scenario: Scenario, start: int) -> int | None:
    for minute in range(start, scenario.minutes + 1):
        if any(d.firing for d in scenario.decisions(minute)):
            return minute
    return None


def _fast_burn(spec: ServiceSpec, slo: SLO) -> tuple[Scenario, float]:
    """A fast burn after CLEAN_MINUTES clean ones, and its multiple of the budget."""
    fast = min(15.0, 0.95 / slo.budget)  # a burn above 1/budget would need > 100% errors
    bad_rate = TRAFFIC * slo.budget * fast
    return Scenario(spec, slo, [(TRAFFIC, CLEAN_MINUTES), (TRAFFIC - bad_rate, 240)],
                    [(0.0, CLEAN_MINUTES), (bad_rate, 240)]), fast


def _scenarios(spec: ServiceSpec, slo: SLO) -> list[dict[str, Any]]:
    budget = slo.budget
    burn, fast = _fast_burn(spec, slo)
    tests = []
    fire = _first_fire(burn, CLEAN_MINUTES)
    if fire is not None:
        elapsed = fire - CLEAN_MINUTES
        tests.append(burn.test(
            f"a {fast:.3g}x burn after {CLEAN_MINUTES // 60} clean hours alerts after "
            f"~{elapsed} minutes, not before",
            [CLEAN_MINUTES + int(elapsed * 0.85), CLEAN_MINUTES + int(elapsed * 1.15) + 1]))
    for multiple, minutes in ((5.0, 180), (1.0, 400)):
        if multiple * budget >= 1:
            continue
        rate = TRAFFIC * budget * multiple
        steady = Scenario(spec, slo, [(TRAFFIC - rate, minutes)], [(rate, minutes)])
        tiers = [d.tier for d in steady.decisions(minutes) if d.firing]
        pages = any(t.severity == "page" for t in tiers)
        tests.append(steady.test(
            f"a steady {multiple:g}x burn fires {', '.join(t.tier for t in tiers) or 'nothing'}"
            + ("" if pages else " and never pages"), [minutes]))
    if slo.kind is not Kind.DRIFT and spec.low_traffic_min_events >= 20:
        minutes = min(spec.low_traffic_min_events - 10, 90)
        trickle = Scenario(spec, slo, [(1 - budget * fast, minutes)],
                           [(budget * fast, minutes)])
        tests.append(trickle.test(
            f"a {fast:.3g}x burn on 1 event a minute stays under the low-traffic guard "
            f"({spec.low_traffic_min_events} events)", [minutes]))
    if slo.kind is not Kind.DRIFT:
        tests.append(_exact_ratio(spec, slo))
    return tests


def _exact_ratio(spec: ServiceSpec, slo: SLO) -> dict[str, Any]:
    share = 0.25  # exact in binary, so the expected value is exact too
    scenario = Scenario(spec, slo, [(TRAFFIC * (1 - share), 30)], [(TRAFFIC * share, 30)])
    record = ERROR_RATIO.format(window="5m")
    labels = ",".join(f'{k}="{v}"' for k, v in sorted(slo_labels(spec, slo).items()))
    return {
        "name": f"{slo.name}: the error ratio rule reads the series exactly",
        "interval": "1m",
        "input_series": _series(spec, slo, scenario.good, scenario.bad),
        "promql_expr_test": [{"expr": f'{record}{{slo="{slo.name}"}}', "eval_time": "30m",
                              "exp_samples": [{"labels": f"{record}{{{labels}}}",
                                               "value": share}]}],
    }


def _untrusted_burn(spec: ServiceSpec, slo: SLO) -> dict[str, Any] | None:
    """The fast burn of `_scenarios`, while the reference model is out of distribution:
    the sidecar counts every box of the burn as untrusted and exports trust 0. No burn
    alert may fire where the trusted burn does, and the out-of-distribution ticket does."""
    burn, _ = _fast_burn(spec, slo)
    fire = _first_fire(burn, CLEAN_MINUTES)
    if fire is None:
        return None
    proxy = QUALITY_PROXIES[slo.proxy or "precision"]
    version = spec.version or "v1"
    base = f'model="{spec.model}",version="{version}"'
    total = [g + b for g, b in zip(burn.good, burn.bad, strict=True)]

    def since_burn(values: list[float]) -> str:
        return _notation([max(0.0, v - values[CLEAN_MINUTES]) if i >= CLEAN_MINUTES else 0.0
                          for i, v in enumerate(values)])

    untrusted = catalog.SHADOW_UNTRUSTED.sample_name
    series = [*_series(spec, slo, burn.good, burn.bad),
              {"series": f'{untrusted}{{{base},count="{proxy.numerator_count}"}}',
               "values": since_burn(burn.good)},
              {"series": f'{untrusted}{{{base},count="{proxy.denominator_count}"}}',
               "values": since_burn(total)},
              {"series": f"{catalog.PROXY_TRUST.name}{{{base}}}",
               "values": f"1+0x{CLEAN_MINUTES} 0+0x240"}]
    minute = CLEAN_MINUTES + int((fire - CLEAN_MINUTES) * 1.15) + 20
    burning = f'ALERTS{{alertname="{BURN_ALERTS[slo.kind]}",slo="{slo.name}",' \
              f'alertstate="firing"}}'
    unknown = f'count(ALERTS{{alertname="{REFERENCE_OUT_OF_DISTRIBUTION}",' \
              f'model="{spec.model}",alertstate="firing"}})'
    return {"name": f"{slo.name}: the same burn while the reference is out of distribution "
                    f"burns nothing and opens the quality-unknown ticket",
            "interval": "1m", "input_series": series,
            "promql_expr_test": [{"expr": burning, "eval_time": f"{minute}m", "exp_samples": []},
                                 {"expr": unknown, "eval_time": f"{minute}m",
                                  "exp_samples": [{"labels": "{}", "value": 1}]}]}


def _audit_series(spec: ServiceSpec, version: str, lower: float, upper: float,
                  proxy: float, minutes: int = 30) -> list[dict[str, str]]:
    base = f'model="{spec.model}",version="{version}",class="all",rate="precision"'
    return [{"series": f'{catalog.AUDIT_ESTIMATE.name}{{{base},quantity="{quantity}"}}',
             "values": f"{value:.10g}+0x{minutes}"}
            for quantity, value in (("audited", (lower + upper) / 2), ("lower", lower),
                                    ("upper", upper), ("proxy", proxy))]


def _proxy_bias(spec: ServiceSpec) -> list[dict[str, Any]]:
    """An audit whose proxy lies twice the margin above its interval opens the ticket;
    one within the margin does not, nor one of a version no longer in service."""
    version = spec.version or "v1"
    lower, upper = 0.625, 0.75  # exact in binary, so is every difference below
    info = {"series": f'{catalog.MODEL_INFO.name}{{model="{spec.model}",version="{version}",'
                      f'sha256="",role="primary",served_name="",served_version=""}}',
            "values": "1+0x30"}
    margin = spec.proxy_bias_margin
    matcher = f'ALERTS{{alertname="{PROXY_BIAS_HIGH}",alertstate="firing"}}'
    pairs = {"alertname": PROXY_BIAS_HIGH, "alertstate": "firing", "model": spec.model,
             "version": version, "class": "all", "rate": "precision", "severity": "ticket",
             "service": spec.service, **spec.labels}
    text = ",".join(f'{k}="{v}"' for k, v in sorted(pairs.items()))
    fires = {"name": f"{spec.model}: an audit's proxy {2 * margin:.3g} above its interval "
                     f"opens {PROXY_BIAS_HIGH}",
             "interval": "1m",
             "input_series": [info, *_audit_series(spec, version, lower, upper,
                                                   upper + 2 * margin)],
             "promql_expr_test": [
                 {"expr": matcher, "eval_time": "3m", "exp_samples": []},  # `for: 5m`
                 {"expr": matcher, "eval_time": "10m",
                  "exp_samples": [{"labels": f"ALERTS{{{text}}}", "value": 1}]}]}
    quiet = {"name": f"{spec.model}: a proxy within {margin:.3g} of its interval, or the "
                     f"audit of a version out of service, opens nothing",
             "interval": "1m",
             "input_series": [info, *_audit_series(spec, version, lower, upper,
                                                   lower - margin / 2),
                              *_audit_series(spec, f"{version}-old", lower, upper,
                                             upper + 2 * margin)],
             "promql_expr_test": [{"expr": matcher, "eval_time": "10m", "exp_samples": []}]}
    return [fires, quiet]


def _corrected_proxy(spec: ServiceSpec) -> dict[str, Any]:
    """A precision proxy of 1/2 whose audit measured a bias of +1/8 records 5/8, and the
    audit's age beside it (values exact in binary)."""
    version = spec.version or "v1"
    base = f'model="{spec.model}",version="{version}"'
    boxes = [{"series": f'{catalog.SHADOW_MATCHED_BOXES.sample_name}{{{base},class="person"}}',
              "values": "0+60x70"},
             {"series": f'{catalog.SHADOW_PRIMARY_BOXES.sample_name}{{{base},class="person"}}',
              "values": "0+120x70"},
             {"series": f"{catalog.AUDIT_TIMESTAMP.name}{{{base}}}", "values": "600+0x70"}]
    return {"name": f"{spec.model}: the precision proxy corrected by its audit's bias",
            "interval": "1m",
            "input_series": [*boxes, *_audit_series(spec, version, 0.5, 0.75, 0.5, 70)],
            "promql_expr_test": [
                {"expr": f'{PROXY_CORRECTED}{{rate="precision"}}', "eval_time": "60m",
                 "exp_samples": [{"labels": f'{PROXY_CORRECTED}{{{base},rate="precision"}}',
                                  "value": 0.625}]},
                {"expr": AUDIT_AGE, "eval_time": "60m",
                 "exp_samples": [{"labels": f"{AUDIT_AGE}{{{base}}}", "value": 3000}]}]}


def promtool_tests(spec: ServiceSpec, rule_files: list[str]) -> dict[str, Any]:
    """Each model's scenarios on its own series: the other models' rules see no data."""
    tests = [test for one in map(spec.for_model, spec.all_models) for slo in one.slos
             if slo.kind is not Kind.RATIO for test in _scenarios(one, slo)]
    tests += [test for one in map(spec.for_model, spec.all_models) for slo in one.slos
              if slo.kind is Kind.QUALITY and (test := _untrusted_burn(one, slo)) is not None]
    tests += [test for one in map(spec.for_model, spec.all_models)
              if any(slo.kind is Kind.QUALITY for slo in one.slos)
              for test in _proxy_bias(one)]
    tests += [_corrected_proxy(one) for one in map(spec.for_model, spec.all_models)]
    return {"rule_files": rule_files, "evaluation_interval": "1m", "tests": tests}



