"""The SLO spec: what is accepted, and errors that name the field."""

from __future__ import annotations

import pytest
import yaml

from lookout.slo.burn import TIERS
from lookout.slo.spec import Kind, SpecError, load_spec, parse_spec

MINIMAL = {"service": "s", "model": "m",
           "slos": [{"name": "availability", "kind": "availability", "objective": 0.999}]}


def _with_slo(**fields) -> dict:
    return {**MINIMAL, "slos": [{"name": "x", "kind": "latency", "objective": 0.99, **fields}]}


def test_the_shipped_example_parses() -> None:
    spec = load_spec("slo.yaml")
    assert [s.kind for s in spec.slos] == [Kind.AVAILABILITY, Kind.LATENCY, Kind.QUALITY,
                                          Kind.QUALITY, Kind.DRIFT]
    assert spec.period_seconds == 28 * 86400 and spec.labels == {"team": "vision"}
    assert spec.slos[1].threshold == 0.25


@pytest.mark.parametrize(("period", "factors"), [
    ("28d", (13.44, 5.6, 2.8, 0.9333)), ("30d", (14.4, 6.0, 3.0, 1.0)),
    ("7d", (3.36, 1.4, 0.7, 0.2333)),
])
def test_burn_factors_scale_with_the_period(period, factors) -> None:
    spec = parse_spec({**MINIMAL, "period": period})
    assert [round(t.factor(spec.period_seconds), 4) for t in TIERS] == list(factors)


def test_latency_threshold_must_be_a_bucket_boundary() -> None:
    assert parse_spec(_with_slo(threshold="250ms")).slos[0].threshold == 0.25
    assert parse_spec(_with_slo(threshold=0.5)).slos[0].threshold == 0.5
    with pytest.raises(SpecError, match=r"slos\[0\]\.threshold: 0.22s is not a bucket "
                                        r"boundary.*nearest boundaries are 0.2 or 0.25"):
        parse_spec(_with_slo(threshold="220ms"))


@pytest.mark.parametrize(("change", "message"), [
    ({"objective": 100}, r"slos\[0\]\.objective: 100 must be between 0 and 1"),
    ({"objective": "high"}, r"slos\[0\]\.objective: 'high' is not a number"),
    ({"kind": "speed"}, r"slos\[0\]\.kind: 'speed' is not one of"),
    ({"name": "Bad Name"}, r"slos\[0\]\.name: 'Bad Name' must be lower-case"),
    ({"threshold": None}, r"slos\[0\]\.threshold: required"),
    ({"colour": "red", "threshold": 0.25}, r"slos\[0\]: unknown field\(s\) colour"),
])
def test_errors_name_the_field(change, message) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(_with_slo(**change))


def test_spec_level_errors() -> None:
    with pytest.raises(SpecError, match=r"period: '28 days' is not a duration"):
        parse_spec({**MINIMAL, "period": "28 days"})
    with pytest.raises(SpecError, match=r"slo.yaml.model: required"):
        parse_spec({"service": "s", "slos": MINIMAL["slos"]})
    with pytest.raises(SpecError, match="duplicate name"):
        parse_spec({**MINIMAL, "slos": MINIMAL["slos"] * 2})
    with pytest.raises(SpecError, match=r"proxy: 'f1' is not precision or recall"):
        parse_spec({**MINIMAL, "slos": [{"name": "q", "kind": "quality", "objective": 0.9,
                                         "proxy": "f1"}]})
    assert parse_spec({**MINIMAL, "slos": [{**MINIMAL["slos"][0],
                                            "objective": 99.9}]}).slos[0].objective == \
        pytest.approx(0.999)


OPENSLO = """
apiVersion: openslo/v1
kind: SLO
metadata:
  name: checkout-availability
  labels: {lookout.io/model: yolo11n}
spec:
  service: shelf-detector
  timeWindow: [{duration: 30d, isRolling: true}]
  budgetingMethod: Occurrences
  objectives: [{target: 0.995}]
  indicator:
    metadata: {name: good-requests}
    spec:
      ratioMetric:
        counter: true
        good:
          metricSource: {type: Prometheus, spec: {query: 'lookout_requests_total{code="200"}'}}
        total:
          metricSource: {type: Prometheus, spec: {query: 'lookout_requests_total'}}
"""


def test_openslo_ratio_metrics_are_accepted(tmp_path) -> None:
    path = tmp_path / "openslo.yaml"
    path.write_text(OPENSLO)
    spec = load_spec(path)
    [slo] = spec.slos
    assert (spec.service, spec.model, spec.period_seconds) == ("shelf-detector", "yolo11n",
                                                               30 * 86400)
    assert slo.kind is Kind.RATIO and slo.objective == 0.995
    assert slo.ratio.good == 'lookout_requests_total{code="200"}'
    broken = yaml.safe_load(OPENSLO)
    del broken["spec"]["indicator"]["spec"]["ratioMetric"]["total"]
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(SpecError, match="needs total and good or bad"):
        load_spec(path)


def test_openslo_queries_that_cannot_become_rates_are_refused_naming_the_field(
        tmp_path) -> None:
    document = yaml.safe_load(OPENSLO)
    good = document["spec"]["indicator"]["spec"]["ratioMetric"]["good"]
    good["metricSource"]["spec"]["query"] = "lookout_requests_total / ignoring(code) x"
    path = tmp_path / "openslo.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(SpecError, match=r"ratioMetric\.good\.metricSource\.spec\.query: "
                                        r".*neither a counter selector nor sum\(\)"):
        load_spec(path)


@pytest.mark.parametrize(("query", "rate"), [
    ('lookout_requests_total{code!~"5.."}', 'sum(rate(lookout_requests_total{code!~"5.."}[5m]))'),
    ('sum(lookout_requests_total{code!~"5.."})',
     'sum(rate(lookout_requests_total{code!~"5.."}[5m]))'),
    ("sum by (model) (lookout_requests_total)",
     "sum by (model) (rate(lookout_requests_total[5m]))"),
    ("sum(lookout_requests_total) without (code)",
     "sum without (code) (rate(lookout_requests_total[5m]))"),
    ("sum(rate(x[{{window}}]))", "sum(rate(x[5m]))"),
])
def test_counter_queries_get_the_rate_inside_the_aggregation(query: str, rate: str) -> None:
    from lookout.slo.promql import rate_over

    assert rate_over(query, "5m") == rate
