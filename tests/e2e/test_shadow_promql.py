"""Shadow evaluation end to end: the demo inference server with the primary model, a
sidecar process shadow-running the reference model, a real Prometheus computing the
precision and recall proxies and flip consistency in PromQL, and drift gauges."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from lookout.slo import catalog
from tests.support.processes import require_tool, wait_until
from tests.support.prometheus import PrometheusServer
from tests.support.shadow_stack import start_shadow_stack

FRAMES = 50


def _total(text: str, name: str, **labels: str) -> float:
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v
                                              for k, v in labels.items()))


def test_prometheus_computes_the_proxies_from_a_live_sidecar() -> None:
    binary = require_tool("prometheus")
    stack = start_shadow_stack()
    sidecar = stack.sidecar
    prometheus = PrometheusServer(binary, [f"127.0.0.1:{sidecar.admin_port}"])
    try:
        stack.send_frames(range(FRAMES))
        ok = catalog.SHADOW_EVALUATIONS.sample_name
        wait_until(lambda: _total(sidecar.metrics_text(), ok, outcome="ok") == FRAMES, 120,
                   "every frame to be shadow-evaluated")
        text = sidecar.metrics_text()
        matched = _total(text, catalog.SHADOW_MATCHED_BOXES.sample_name)
        primary = _total(text, catalog.SHADOW_PRIMARY_BOXES.sample_name)
        reference = _total(text, catalog.SHADOW_REFERENCE_BOXES.sample_name)
        assert primary > FRAMES and reference > FRAMES

        def settled(promql: str) -> float:
            """The PromQL value once Prometheus has scraped the final counters."""
            wait_until(lambda: prometheus.query(
                f"sum({catalog.SHADOW_EVALUATIONS.sample_name}{{outcome='ok'}}) == {FRAMES}"),
                60, "Prometheus to scrape the final counters", interval=0.25)
            [result] = prometheus.wait_for_series(promql)
            return float(result["value"][1])

        matched_series = catalog.SHADOW_MATCHED_BOXES.sample_name
        precision = settled(f"sum({matched_series}) / "
                            f"sum({catalog.SHADOW_PRIMARY_BOXES.sample_name})")
        recall = settled(f"sum({matched_series}) / "
                         f"sum({catalog.SHADOW_REFERENCE_BOXES.sample_name})")
        assert abs(precision - matched / primary) < 1e-9
        assert abs(recall - matched / reference) < 1e-9
        assert 0.6 < precision <= 1 and 0.6 < recall <= 1  # both models do well on clean frames
        flip = settled(f"2 * sum({catalog.FLIP_MATCHED_BOXES.sample_name}) / "
                       f"sum({catalog.FLIP_BOXES.sample_name})")
        assert 0.5 < flip <= 1
        assert prometheus.query(f'{catalog.MODEL_INFO.name}{{role="reference"}} == 1')
        thresholds = prometheus.wait_for_series(catalog.DRIFT_THRESHOLD.name)
        assert {series["metric"]["feature"] for series in thresholds} >= {"brightness",
                                                                          "sharpness"}
    finally:
        prometheus.stop()
        stack.stop()
