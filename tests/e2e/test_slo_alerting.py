"""The generated rules in a real Prometheus: a sidecar's upstream dies, the availability
SLO pages; and the recording rules agree with lookout's in-process burn-rate math.

The spec shrinks every window 120-fold (`window_scale`), so the 1h/5m page tier reads
30 s / 2 s windows and the test runs in about a minute.
"""

from __future__ import annotations

import threading
import time
import urllib.parse

import yaml

from lookout.cli.generate import RULES, artefacts
from lookout.sidecar.samples.query import SampleQuery
from lookout.slo.burn import TIERS, CounterSample, error_ratio
from lookout.slo.catalog import REQUESTS as REQUESTS_SPEC
from lookout.slo.catalog import SERVER_ERROR_CODE_REGEX
from lookout.slo.names import BURN_ALERTS, ERROR_RATIO, EVENTS
from lookout.slo.spec import Kind, parse_spec
from tests.support.processes import (
    request,
    require_tool,
    start_sidecar,
    start_upstream,
    wait_until,
)
from tests.support.prometheus import PrometheusServer

REQUESTS = REQUESTS_SPEC.sample_name
SCALE = 1 / 120
SPEC = {"service": "e2e", "model": "yolo-test", "period": "28d", "window_scale": SCALE,
        "low_traffic_min_events": 10,
        "slos": [{"name": "availability", "kind": "availability", "objective": 0.99}]}


class Traffic:
    """Requests at a steady pace until stopped: a client that keeps calling."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stopped = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            request(self.port, "POST", "/echo", body=b"frame")
            self.sent += 1
            self.stopped.wait(0.02)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(10)


def _firing(prometheus: PrometheusServer, alert: str) -> list[dict]:
    return [a for a in prometheus.api("alerts")["alerts"]
            if a["labels"]["alertname"] == alert and a["state"] == "firing"]


def test_a_dying_upstream_pages_and_the_rules_match_the_in_process_math(tmp_path) -> None:
    binary = require_tool("prometheus")
    spec = parse_spec(SPEC)
    rules = tmp_path / "slo-rules.yaml"
    rules.write_text(artefacts(spec)[RULES])
    upstream, upstream_port = start_upstream()
    sidecar = start_sidecar(f"http://127.0.0.1:{upstream_port}")
    prometheus = PrometheusServer(binary, [f"127.0.0.1:{sidecar.admin_port}"], [rules])
    traffic = Traffic(sidecar.port)
    alert = BURN_ALERTS[Kind.AVAILABILITY]
    try:
        long_window = TIERS[0].long_seconds * SCALE  # 30 s
        wait_until(lambda: prometheus.query(f'{ERROR_RATIO.format(window="1h")} == 0'), 60,
                   "a healthy error ratio recorded")
        wait_until(lambda: prometheus.query(f'{EVENTS.format(window="1h")} >= 300'), 60,
                   "a healthy long window with enough events")
        assert _firing(prometheus, alert) == []
        upstream.terminate()  # from now on every request gets sidecar_502
        failed_at = time.time()
        firing = wait_until(lambda: _firing(prometheus, alert), 90, f"{alert} to fire")
        assert firing[0]["labels"]["severity"] == "page"
        assert firing[0]["labels"]["burn_tier"] in ("1h", "6h")
        assert time.time() - failed_at < 60
        # its gallery link: the failed frames of the window the alert looked at
        link = urllib.parse.urlsplit(firing[0]["annotations"]["gallery_url"])
        params = dict(urllib.parse.parse_qsl(link.query))
        assert link.path == "/ui/samples"
        assert params["model"] == "yolo-test" and params["strategy"] == "error"
        tier = next(t for t in TIERS if t.tier == firing[0]["labels"]["burn_tier"])
        since, until = int(params["since"]), int(params["until"])
        assert until - since == round(tier.long_seconds * SCALE)
        assert failed_at - 5 <= until <= time.time() + 5
        SampleQuery.from_params(params)  # every parameter one the gallery takes

        # the recording rule against the in-process computation on the raw counters, once
        # the long window holds healthy and failed requests alike
        failures = f'{REQUESTS}{{code=~"{SERVER_ERROR_CODE_REGEX}"}}'
        wait_until(lambda: prometheus.query(
            f"count_over_time({failures}[{int(long_window)}s]) >= 10"), 60,
            "ten scrapes of failures in the long window")
        at = time.time() - 2
        recorded = prometheus.api("query", query=f'{ERROR_RATIO.format(window="1h")}',
                                  time=str(at))["result"]
        def counter(selector: str) -> list[CounterSample]:
            result = prometheus.api("query_range", query=f"sum({selector})",
                                    start=str(at - long_window - 5), end=str(at),
                                    step="1")["result"]
            assert len(result) == 1, (selector, at, failed_at, result,
                                      prometheus.query(f"{REQUESTS}"))
            return [CounterSample(float(t), float(v)) for t, v in result[0]["values"]]

        bad = counter(failures)
        totals = counter(REQUESTS)
        expected = error_ratio(bad, totals, long_window, at)
        assert expected is not None and recorded
        assert abs(float(recorded[0]["value"][1]) - expected) < 0.1
    finally:
        traffic.stop()
        prometheus.stop()
        sidecar.stop()
        upstream.terminate()
    assert yaml.safe_load(rules.read_text())["groups"]
