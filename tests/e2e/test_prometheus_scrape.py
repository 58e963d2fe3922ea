"""A real Prometheus scrapes a running sidecar's admin port."""

from __future__ import annotations

import time

from lookout.slo import catalog
from tests.support.processes import request, require_tool, start_sidecar, wait_until
from tests.support.prometheus import PrometheusServer


def test_prometheus_scrapes_red_metrics_and_exemplars(upstream_port: int) -> None:
    binary = require_tool("prometheus")
    sidecar = start_sidecar(f"http://127.0.0.1:{upstream_port}",
                            env={"OTEL_TRACES_SAMPLER": "always_on"})
    prometheus = PrometheusServer(binary, [f"127.0.0.1:{sidecar.admin_port}"])
    try:
        prometheus.wait_for_series('up{job="lookout"} == 1')
        for _ in range(20):
            request(sidecar.port, "POST", "/v2/models/yolo11n/infer", body=b"frame")
        request(sidecar.port, "GET", "/reset")

        route = "/v2/models/{model}/infer"
        ok = prometheus.wait_for_series(
            f'{catalog.REQUESTS.sample_name}{{route="{route}",code="200"}} >= 20')
        assert ok[0]["metric"]["model"] == "yolo-test"
        assert ok[0]["metric"]["version"] == "v1"
        errors = prometheus.wait_for_series(
            f'sum({catalog.REQUESTS.sample_name}{{code=~"{catalog.SERVER_ERROR_CODE_REGEX}"}})')
        assert float(errors[0]["value"][1]) >= 1
        quantile = prometheus.wait_for_series(
            f"histogram_quantile(0.99, sum by (le) ({catalog.REQUEST_DURATION.bucket_name}"
            f'{{route="{route}"}}))')
        assert 0 < float(quantile[0]["value"][1]) < 60
        assert prometheus.query(f"{catalog.MODEL_INFO.name} == 1")
        assert prometheus.query(f"{catalog.UPSTREAM_UP.name} == 1")

        def exemplars() -> list:
            now = time.time()
            return prometheus.api("query_exemplars", query=catalog.REQUEST_DURATION.bucket_name,
                                  start=str(now - 600), end=str(now + 60))

        found = wait_until(exemplars, 60, "exemplars in Prometheus", interval=0.25)
        trace_ids = {e["labels"]["trace_id"] for series in found for e in series["exemplars"]}
        assert trace_ids and all(len(trace_id) == 32 for trace_id in trace_ids)
    finally:
        prometheus.stop()
        sidecar.stop()

