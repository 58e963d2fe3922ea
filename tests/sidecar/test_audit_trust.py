"""What an audit teaches the trust signal, on hand-made records: a proxy outside the
audited interval by more than the bias alert's margin narrows the model's band; a newer
audit that agrees restores it."""

from __future__ import annotations

import pytest

from lookout.sidecar.samples.audit_trust import (
    NARROWED,
    disagrees,
    margin_factors,
    outside_by,
)
from lookout.slo.catalog import PROXY_BIAS_MARGIN
from lookout.slo.spec import ServiceSpec

T0 = 1_800_000_000.0


def rate(proxy: float, lower: float = 0.6, upper: float = 0.8) -> dict:
    return {"audited": (lower + upper) / 2, "interval": [lower, upper], "proxy": proxy,
            "bias": (lower + upper) / 2 - proxy, "bias_interval": None}


def audit(batch: str, precision: float = 0.7, recall: float = 0.7, model: str = "m",
          at: float = T0, status: str = "estimated", version: str = "v1") -> dict:
    return {"batch_id": batch, "created": at, "estimated": at + 60, "status": status,
            "model": model, "version": version, "window": {"since": at - 3600, "until": at},
            "estimates": {"all": {"precision": rate(precision), "recall": rate(recall)},
                          "car": {"precision": rate(0.1), "recall": rate(0.1)}}}


def test_the_margin_is_the_bias_alerts() -> None:
    assert ServiceSpec("s", "m", ()).proxy_bias_margin == PROXY_BIAS_MARGIN == 0.05


def test_how_far_a_proxy_lies_outside_its_interval() -> None:
    assert outside_by(rate(0.7)) == 0
    assert outside_by(rate(0.9)) == pytest.approx(0.1)
    assert outside_by(rate(0.5)) == pytest.approx(0.1)
    assert outside_by({"proxy": 0.5, "interval": None}) is None
    assert outside_by({"interval": [0.1, 0.2]}) is None


def test_an_audit_disagrees_past_the_margin_on_either_rate_of_every_class() -> None:
    assert not disagrees(audit("inside"))
    assert not disagrees(audit("within-margin", precision=0.84))  # 0.04 outside
    assert disagrees(audit("precision-high", precision=0.9))
    assert disagrees(audit("recall-low", recall=0.5))
    assert not disagrees(audit("wider-margin", recall=0.5), margin=0.2)
    # a single class outside says nothing: only the every-class row is exact
    assert not disagrees({**audit("car"), "estimates": {"car": {"recall": rate(0.1)}}})
    assert not disagrees({"batch_id": "empty", "status": "estimated"})


def test_the_newest_estimated_audit_of_each_model_decides() -> None:
    records = [audit("old-agrees", at=T0), audit("new-disagrees", recall=0.3, at=T0 + 10),
               audit("drawn", recall=0.7, at=T0 + 20, status="drawn"),
               audit("other", model="n", at=T0 + 30),
               audit("stranger", model="not-ours", recall=0.3, at=T0 + 40)]
    assert margin_factors(records, ["m", "n", "never-audited"]) == {
        "m": NARROWED, "n": 1.0, "never-audited": 1.0}


def test_a_newer_audit_that_agrees_restores_the_factor() -> None:
    records = [audit("disagrees", recall=0.3, at=T0),
               audit("agrees", version="v2", at=T0 + 10)]  # another version counts too
    assert margin_factors(records, ["m"]) == {"m": 1.0}
    assert margin_factors(records[:1], ["m"]) == {"m": NARROWED}
