"""`lookout canary judge --store`: an audit of the canary version judges its precision
and recall in place of the proxies (both versions audited: their intervals compared;
the canary alone: the proxies judge and the row says what the audit found)."""

from __future__ import annotations

from lookout.canary.comparison import CanaryComparison
from lookout.cli.canary import apply_audits
from lookout.sidecar.samples.audit_records import AuditRecords
from lookout.sidecar.samples.store import SampleStore
from lookout.slo.canary import DEFAULT_METRICS
from lookout.slo.judge import JudgeSettings, MetricJudgement, MetricOutcome, Verdict, overall
from tests.support.audit_records import audit

SETTINGS = JudgeSettings()
COMPARISON = CanaryComparison("m", "v1", "v2", DEFAULT_METRICS)


def proxies_say_same():
    metrics = [MetricJudgement(name, MetricOutcome.SAME, True, "not shown to differ",
                               baseline=0.9, canary=0.9)
               for name in ("precision", "recall", "error_rate")]
    return overall(metrics, (), SETTINGS)


def store_with(tmp_path, *records: dict) -> str:
    store = SampleStore(tmp_path / "store")
    for record in records:
        AuditRecords(store).write(record)
    store.close()
    return str(tmp_path / "store")


def test_a_canary_audited_below_the_baselines_interval_fails_on_its_labels(tmp_path) -> None:
    # precision: baseline 0.8 [0.7, 0.85], canary 0.5 [0.4, 0.55]; recall: both 0.6 [0.5, 0.7]
    store = store_with(tmp_path, audit("b-base", version="v1", precision=0.8),
                       audit("b-canary", version="v2", precision=0.5, at=1_800_000_100.0))
    judged = apply_audits(proxies_say_same(), store, COMPARISON, SETTINGS)
    rows = {m.metric: m for m in judged.metrics}
    assert rows["precision"].outcome is MetricOutcome.WORSE
    assert rows["precision"].canary == 0.5 and rows["precision"].baseline == 0.8
    assert "audited in place of the proxy" in rows["precision"].reason
    assert "b-canary" in rows["precision"].reason and "b-base" in rows["precision"].reason
    assert rows["recall"].outcome is MetricOutcome.SAME
    assert rows["error_rate"] == proxies_say_same().metrics[2]
    assert judged.verdict is Verdict.FAIL
    assert "audited precision, recall judged in place of the proxies" in judged.reason


def test_overlapping_audits_pass_and_say_so(tmp_path) -> None:
    store = store_with(tmp_path, audit("b-base", version="v1", precision=0.8),
                       audit("b-canary", version="v2", precision=0.78))
    judged = apply_audits(proxies_say_same(), store, COMPARISON, SETTINGS)
    assert judged.verdict is Verdict.PASS
    assert "the intervals overlap" in judged.metrics[0].reason


def test_the_canary_alone_audited_leaves_the_proxies_to_judge(tmp_path) -> None:
    store = store_with(tmp_path, audit("b-canary", version="v2", precision=0.2),
                       audit("other", model="another", version="v1"))
    judged = apply_audits(proxies_say_same(), store, COMPARISON, SETTINGS)
    assert [m.outcome for m in judged.metrics] == [MetricOutcome.SAME] * 3
    assert "the baseline has none: the proxy judges" in judged.metrics[0].reason
    assert judged.verdict is Verdict.PASS and "no baseline audit" in judged.reason


def test_without_an_audit_of_the_canary_nothing_changes(tmp_path) -> None:
    store = store_with(tmp_path, audit("b-base", version="v1"),
                       audit("drawn", version="v2", status="drawn"))
    assert apply_audits(proxies_say_same(), store, COMPARISON, SETTINGS) == proxies_say_same()
