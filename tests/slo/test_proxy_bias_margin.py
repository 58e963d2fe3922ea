"""`proxy_bias_margin`: how far outside an audit's interval a proxy may lie before
LookoutProxyBiasHigh opens a ticket; its default, its checks, and the rule it reaches."""

from __future__ import annotations

import pytest

from lookout.alerts.operational import operational_alerts
from lookout.slo.names import PROXY_BIAS_HIGH
from lookout.slo.spec import SpecError, parse_spec

SPEC = {"service": "s", "model": "m",
        "slos": [{"name": "precision", "kind": "quality", "proxy": "precision",
                  "objective": 0.8}]}


def _bias_alert(document: dict) -> str:
    alerts = {a.name: a for a in operational_alerts(parse_spec(document))}
    return alerts[PROXY_BIAS_HIGH].expr


def test_the_default_margin_and_a_chosen_one_reach_the_rule() -> None:
    assert parse_spec(SPEC).proxy_bias_margin == 0.05
    assert "> 0.05" in _bias_alert(SPEC)
    assert "> 0.1\n" in _bias_alert({**SPEC, "proxy_bias_margin": 0.1})


@pytest.mark.parametrize("margin", [-0.1, 1, "a lot", True])
def test_a_margin_outside_zero_to_one_is_refused_by_name(margin) -> None:
    with pytest.raises(SpecError, match="proxy_bias_margin"):
        parse_spec({**SPEC, "proxy_bias_margin": margin})


def test_without_a_quality_slo_there_is_no_bias_alert() -> None:
    spec = parse_spec({**SPEC, "slos": [{"name": "up", "kind": "availability",
                                          "objective": 0.99}]})
    assert PROXY_BIAS_HIGH not in {a.name for a in operational_alerts(spec)}
