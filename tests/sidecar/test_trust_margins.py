"""The margin factors the lookout process publishes and the lead worker's trust signal
follows: the file's round trip, fail-open reading, and a band narrowed by it."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from lookout.sidecar.config import load_config
from lookout.sidecar.processes.margin_file import COMPONENT as MARGINS_COMPONENT
from lookout.sidecar.processes.margin_file import FollowedMargins, write_margins
from lookout.sidecar.quality.trust import ProxyTrust
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.samples.audit_records import AuditRecords
from lookout.sidecar.samples.audit_trust import NARROWED
from lookout.sidecar.samples.store import SampleStore
from lookout.sidecar.settings import ShadowSettings, of
from lookout.slo import catalog
from tests.sidecar.test_audit_trust import audit
from tests.support.processes import wait_until
from tests.support.shadow_stack import start_shadow_stack


def test_the_factors_are_followed_and_reread_only_when_the_file_changes(tmp_path) -> None:
    path = str(tmp_path / "margins")
    failures: list[int] = []
    margins = FollowedMargins(path, lambda: failures.append(1))
    assert margins.factor("m") == 1.0  # no file yet: no narrowing, no error
    write_margins(path, {"m": 0.5})
    assert margins.factor("m") == 0.5 and margins.factor("n") == 1.0
    write_margins(path, {"m": 1.0})
    assert margins.factor("m") == 1.0
    assert failures == []


def test_an_unreadable_file_means_factor_one_and_is_counted(tmp_path, caplog) -> None:
    path = tmp_path / "margins"
    failures: list[int] = []
    margins = FollowedMargins(str(path), lambda: failures.append(1))
    write_margins(str(path), {"m": 0.5})
    assert margins.factor("m") == 0.5
    path.write_bytes(b"not a pickle")
    with caplog.at_level(logging.WARNING):
        assert margins.factor("m") == 1.0
        assert margins.factor("m") == 1.0
    assert failures == [1, 1]
    assert sum("trust margins" in r.getMessage() for r in caplog.records) == 1  # once


WINDOW = 5


def _window(trust: ProxyTrust, boxes: list[int]) -> bool | None:
    for count in boxes:
        trust.observe(np.full(count, 0.6, np.float32), (count, count, count))
    return trust.trusted


@pytest.mark.parametrize("factor, trusted", [(1.0, True), (0.5, False)])
def test_a_window_just_inside_the_band_is_distrusted_once_narrowed(
        factor: float, trusted: bool, caplog) -> None:
    config = load_config({"model_name": "m", "model_version": "v",
                          "proxy_trust_window": str(WINDOW),
                          "proxy_trust_baseline_windows": "2",
                          "proxy_trust_margin": "0.25"}, env={})
    metrics = SidecarMetrics("m", "v", process_metrics=False)
    published = {"m": 1.0}
    trust = ProxyTrust(of(ShadowSettings, config), metrics, lambda model: published[model])
    _window(trust, [3] * WINDOW)  # learnt: 3 .. 5 boxes per image, band [2.5, 5.5]
    _window(trust, [5] * WINDOW)
    assert _window(trust, [5] * WINDOW) is True
    published["m"] = factor  # an audit disagreed (or not): read as the next window closes
    with caplog.at_level(logging.INFO):
        assert _window(trust, [5, 5, 6, 6, 5]) is trusted  # 5.4 per image
    labels = {"model": "m", "version": "v"}
    assert metrics.registry.get_sample_value(
        catalog.PROXY_TRUST_MARGIN_FACTOR.name, labels) == factor
    assert metrics.registry.get_sample_value(catalog.PROXY_TRUST.name, labels) == trusted
    changed = [r for r in caplog.records if "trust band's margin" in r.getMessage()]
    assert len(changed) == (factor != 1.0)
    published["m"] = 1.0  # a newer audit agrees
    assert _window(trust, [5, 5, 6, 6, 5]) is True


def test_a_disagreeing_audit_in_the_store_narrows_the_lead_workers_band(tmp_path) -> None:
    """Through the real processes: the lookout process reads the store's audit, publishes
    the factor, and the lead worker judges its windows with it."""
    samples = tmp_path / "samples"
    store = SampleStore(samples)
    AuditRecords(store).write(audit("b1", model="yolo-test", precision=0.95))  # 0.15 out
    store.close()
    stack = start_shadow_stack("yolo-test", "--sample-dir", str(samples),
                               "--proxy-trust-window", "5",
                               "--proxy-trust-baseline-windows", "2")
    try:
        stack.send_frames(range(30))
        wait_until(lambda: f"{catalog.PROXY_TRUST_MARGIN_FACTOR.name}{{"
                   in stack.sidecar.metrics_text(), 120, "a judged trust window")
        assert stack.sidecar.metric(catalog.PROXY_TRUST_MARGIN_FACTOR.name,
                                    model="yolo-test", version="v1") == NARROWED
        assert stack.sidecar.metric(catalog.COMPONENT_ERRORS.sample_name,
                                    component=MARGINS_COMPONENT) == 0
    finally:
        stack.stop()
