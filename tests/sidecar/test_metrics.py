"""/metrics as Prometheus and promtool read it."""

from __future__ import annotations

import subprocess

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from lookout.slo import catalog
from tests.support.processes import (
    SidecarProcess,
    free_port,
    request,
    require_tool,
    start_sidecar,
)


def _samples(text: str, name: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == name]


def _value(text: str, name: str, **labels: str) -> float:
    matching = [s.value for s in _samples(text, name)
                if all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(matching)


def test_red_metrics_count_each_request_with_bounded_labels(sidecar: SidecarProcess) -> None:
    before = sidecar.metrics_text()
    route = "/v2/models/{model}/infer"
    for _ in range(3):
        request(sidecar.port, "POST", "/v2/models/yolo-test/infer", body=b"x" * 2000)
    request(sidecar.port, "GET", "/status/503")
    after = sidecar.metrics_text()

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    base = {"model": "yolo-test", "version": "v1"}
    assert delta(catalog.REQUESTS.sample_name, route=route, code="200", **base) == 3
    assert delta(catalog.REQUESTS.sample_name, route="other", code="503", **base) == 1
    assert delta(catalog.REQUEST_DURATION.count_name, route=route, **base) == 3
    assert delta(catalog.UPSTREAM_DURATION.count_name, route=route, **base) == 3
    assert delta(catalog.REQUEST_BYTES.sum_name, route=route, **base) == 6000
    assert delta(catalog.RESPONSE_BYTES.count_name, route=route, **base) == 3


def test_sidecar_errors_have_their_own_code_label(sidecar: SidecarProcess) -> None:
    request(sidecar.port, "GET", "/reset")
    text = sidecar.metrics_text()
    assert _value(text, catalog.REQUESTS.sample_name, code="sidecar_502") >= 1
    assert all(not s.labels["code"].startswith("sidecar_") or s.labels["code"][8] in "45"
               for s in _samples(text, catalog.REQUESTS.sample_name))


def test_model_info_carries_the_configured_model(sidecar: SidecarProcess) -> None:
    info = _samples(sidecar.metrics_text(), catalog.MODEL_INFO.name)
    assert [(s.labels["model"], s.labels["version"], s.labels["role"], s.value)
            for s in info] == [("yolo-test", "v1", "primary", 1.0)]


def test_upstream_up_gauge_follows_the_probe(sidecar: SidecarProcess) -> None:
    assert _value(sidecar.metrics_text(), catalog.UPSTREAM_UP.name) == 1.0
    dead = start_sidecar(f"http://127.0.0.1:{free_port()}", wait_ready=False)
    try:
        request(dead.admin_port, "GET", "/readyz")
        assert _value(dead.metrics_text(), catalog.UPSTREAM_UP.name) == 0.0
    finally:
        dead.stop()


def test_openmetrics_is_negotiated_and_carries_trace_exemplars(upstream_port: int) -> None:
    traced = start_sidecar(f"http://127.0.0.1:{upstream_port}",
                           env={"OTEL_TRACES_SAMPLER": "always_on"})
    try:
        request(traced.port, "POST", "/predict", body=b"img")
        response = request(traced.admin_port, "GET", "/metrics",
                           headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        text = response.body.decode()
        assert text.rstrip().endswith("# EOF")
        exemplars = [s.exemplar for family in parse_openmetrics(text) for s in family.samples
                     if s.name == catalog.REQUEST_DURATION.bucket_name and s.exemplar]
        assert exemplars, "no exemplar on the latency histogram"
        assert all(len(e.labels["trace_id"]) == 32 for e in exemplars)
        plain = request(traced.admin_port, "GET", "/metrics")
        assert plain.headers["Content-Type"].startswith("text/plain")
        assert "trace_id" not in plain.body.decode()
    finally:
        traced.stop()


def test_every_catalog_metric_is_exposed_with_its_help(sidecar: SidecarProcess) -> None:
    families = {f.name: f for f in text_string_to_metric_families(sidecar.metrics_text())}
    for spec in catalog.ALL:
        assert spec.name in families, spec.name
        assert families[spec.name].documentation == spec.help
        assert families[spec.name].type == spec.type.value


def test_promtool_accepts_the_exposition(sidecar: SidecarProcess) -> None:
    promtool = require_tool("promtool")
    request(sidecar.port, "GET", "/echo")
    result = subprocess.run([promtool, "check", "metrics"], input=sidecar.metrics_text(),
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_recurring_failure_logs_one_traceback_per_interval(caplog) -> None:
    """Counted every time, logged once a minute with how many were left out (soak:
    42,000 identical tracebacks in 10 minutes before this)."""
    import logging

    from lookout.sidecar.runtime.logs import FailureLog

    now = [0.0]
    failures = FailureLog(logging.getLogger("lookout.test"), interval=60, clock=lambda: now[0])
    caplog.set_level(logging.ERROR, "lookout.test")
    for second in range(0, 130):
        now[0] = float(second)
        for _ in range(10):
            try:
                raise RuntimeError("broken")
            except RuntimeError:
                failures.exception("samples", "samples failed on %s", "/predict")
    try:
        raise RuntimeError("other")
    except RuntimeError:
        failures.exception("shadow", "shadow failed")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["samples failed on /predict",
                        "samples failed on /predict (and 599 more like it in the last 60 s)",
                        "samples failed on /predict (and 599 more like it in the last 60 s)",
                        "shadow failed"]
    assert all(record.exc_info for record in caplog.records)


def test_a_librarys_recurring_line_passes_once_per_interval() -> None:
    """The OTLP exporter logs every retry while a collector is down: one line a minute
    per message template gets through, with how many were left out; other loggers and
    other templates are not held back."""
    import logging

    from lookout.sidecar.runtime.logs import RepeatFilter

    now = [0.0]
    repeats = RepeatFilter("opentelemetry", interval=60, clock=lambda: now[0])

    def passed(name: str, message: str, *args: object) -> str | None:
        record = logging.LogRecord(name, logging.WARNING, __file__, 1, message, args, None)
        return record.getMessage() if repeats.filter(record) else None

    retry = "Transient error %s encountered, retrying in %.2fs."
    exporter = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
    seen = []
    for second in range(0, 125, 5):
        now[0] = float(second)
        seen.append(passed(exporter, retry, "refused", second / 10))
        seen.append(passed("lookout.sidecar", "lookout's own %s", second))
    kept = [line for line in seen if line is not None and "Transient" in line]
    assert kept == ["Transient error refused encountered, retrying in 0.00s.",
                    "Transient error refused encountered, retrying in 6.00s. "
                    "(and 11 more like it in the last 60 s)",
                    "Transient error refused encountered, retrying in 12.00s. "
                    "(and 11 more like it in the last 60 s)"]
    assert sum(line is not None and "own" in line for line in seen) == 25
    assert passed(exporter, "Failed to export spans batch") is not None
