"""Spans exported over real OTLP (http/protobuf and gRPC) and decoded by the test."""

from __future__ import annotations

import json
import os
import secrets
import signal
from collections.abc import Iterator

import pytest

from lookout.slo import catalog
from tests.support.otlp import (
    SERVER,
    GrpcOtlpReceiver,
    HttpOtlpReceiver,
    ReceivedSpan,
)
from tests.support.processes import (
    SidecarProcess,
    children,
    request,
    start_sidecar,
    wait_until,
)


def _traceparent(sampled: bool) -> tuple[str, str, str]:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, parent_id, f"00-{trace_id}-{parent_id}-{'01' if sampled else '00'}"


def _by_kind(spans: list[ReceivedSpan], trace_id: str) -> dict[int, ReceivedSpan]:
    return {span.kind: span for span in spans if span.trace_id == trace_id}


@pytest.fixture(params=["http/protobuf", "grpc"])
def receiver(request) -> Iterator[HttpOtlpReceiver | GrpcOtlpReceiver]:
    collector = HttpOtlpReceiver() if request.param == "http/protobuf" else GrpcOtlpReceiver()
    yield collector
    collector.close()


def _traced_sidecar(upstream_port: int, receiver, **env: str) -> SidecarProcess:
    return start_sidecar(f"http://127.0.0.1:{upstream_port}",
                         env={**receiver.env, "OTEL_SERVICE_NAME": "lookout-test", **env})


def test_one_server_span_is_the_callers_child_and_the_upstreams_parent(
        upstream_port: int, receiver) -> None:
    sidecar = _traced_sidecar(upstream_port, receiver)
    try:
        trace_id, parent_id, traceparent = _traceparent(sampled=True)
        response = request(sidecar.port, "POST", "/v2/models/yolo11n/infer", body=b"{}",
                           headers={"traceparent": traceparent})
        upstream_saw = {k.lower(): v for k, v in json.loads(response.body)["headers"]}
        spans = [s for s in receiver.wait_for(1) if s.trace_id == trace_id]
    finally:
        assert sidecar.stop() == 0

    [server] = spans  # no CLIENT span: the upstream hop is the server span's own
    assert server.kind == SERVER
    assert server.parent_span_id == parent_id
    # the upstream's parent is the sidecar's span, in the same trace
    assert upstream_saw["traceparent"] == f"00-{trace_id}-{server.span_id}-01"
    assert server.name == "POST /v2/models/{model}/infer"
    # OpenTelemetry's HTTP server conventions
    assert {key: server.attributes[key] for key in (
        "http.route", "http.request.method", "http.response.status_code", "url.path",
        "http.request.body.size")} == {
        "http.route": "/v2/models/{model}/infer", "http.request.method": "POST",
        "http.response.status_code": 200, "url.path": "/v2/models/yolo11n/infer",
        "http.request.body.size": 2}
    # the model the request names (a span is not a metric: no label bound applies)
    assert server.attributes["lookout.model.name"] == "yolo11n"
    assert server.attributes["lookout.model.version"] == "v1"
    assert server.service_name == "lookout-test"


def test_parent_decides_and_unsampled_traces_stay_unexported(upstream_port: int) -> None:
    receiver = HttpOtlpReceiver()
    sidecar = _traced_sidecar(upstream_port, receiver)
    try:
        dropped_trace, _, unsampled = _traceparent(sampled=False)
        kept_trace, _, sampled = _traceparent(sampled=True)
        request(sidecar.port, "GET", "/echo", headers={"traceparent": unsampled})
        upstream_saw = request(sidecar.port, "GET", "/echo", headers={"traceparent": unsampled})
        request(sidecar.port, "GET", "/echo", headers={"traceparent": sampled})
        # export is in order: once the later trace is in, the earlier one would be too
        spans = receiver.wait_for_trace(kept_trace)
    finally:
        sidecar.stop()
        receiver.close()
    assert {span.trace_id for span in spans} == {kept_trace}
    flags = {k.lower(): v for k, v in upstream_saw.json()["headers"]}["traceparent"]
    assert flags.startswith(f"00-{dropped_trace}-") and flags.endswith("-00")


def test_default_root_sampling_is_about_ten_percent(upstream_port: int) -> None:
    receiver = HttpOtlpReceiver()
    sidecar = _traced_sidecar(upstream_port, receiver)
    try:
        for _ in range(300):
            request(sidecar.port, "GET", "/echo")
        marker_trace, _, marker = _traceparent(sampled=True)
        request(sidecar.port, "GET", "/echo", headers={"traceparent": marker})
        spans = receiver.wait_for_trace(marker_trace)
        roots = {span.trace_id for span in spans if span.kind == SERVER} - {marker_trace}
    finally:
        sidecar.stop()
        receiver.close()
    # Binomial(300, 0.1): 30 expected; outside [8, 60] has probability below 1e-6.
    assert 8 <= len(roots) <= 60, len(roots)


def test_trace_state_and_baggage_reach_the_upstream(upstream_port: int) -> None:
    receiver = HttpOtlpReceiver()
    sidecar = _traced_sidecar(upstream_port, receiver)
    try:
        trace_id, _, traceparent = _traceparent(sampled=True)
        response = request(sidecar.port, "GET", "/echo", headers={
            "traceparent": traceparent, "tracestate": "vendor=abc,other=1",
            "baggage": "tenant=t1"})
        spans = _by_kind(receiver.wait_for_trace(trace_id), trace_id)
    finally:
        sidecar.stop()
        receiver.close()
    upstream_saw = {k.lower(): v for k, v in response.json()["headers"]}
    assert upstream_saw["traceparent"] == f"00-{trace_id}-{spans[SERVER].span_id}-01"
    assert upstream_saw["tracestate"] == "vendor=abc,other=1"
    assert upstream_saw["baggage"] == "tenant=t1"


def test_a_disabled_sdk_adds_no_trace_context(upstream_port: int) -> None:
    receiver = HttpOtlpReceiver()
    sidecar = _traced_sidecar(upstream_port, receiver, OTEL_SDK_DISABLED="true")
    try:
        _, _, traceparent = _traceparent(sampled=True)
        relayed = request(sidecar.port, "GET", "/echo", headers={"traceparent": traceparent})
        plain = request(sidecar.port, "GET", "/echo")
        failed = request(sidecar.port, "GET", "/reset")
    finally:
        sidecar.stop()
        receiver.close()
    relayed_saw = {k.lower(): v for k, v in relayed.json()["headers"]}
    assert relayed_saw["traceparent"] == traceparent  # the caller's, untouched
    assert "traceparent" not in {k.lower() for k, _ in plain.json()["headers"]}
    assert failed.status == 502 and "trace_id" not in failed.json()
    assert receiver.spans == []


def test_a_root_request_gets_a_trace_of_lookouts_making(upstream_port: int) -> None:
    """No caller context, or one W3C calls invalid (upper-case hex): the tap begins a
    trace, sends the upstream its span as the parent, and the span has no parent."""
    receiver = HttpOtlpReceiver()
    sidecar = _traced_sidecar(upstream_port, receiver, OTEL_TRACES_SAMPLER="always_on")
    try:
        plain = request(sidecar.port, "GET", "/echo")
        invalid = "00-" + secrets.token_hex(16).upper() + "-" + secrets.token_hex(8) + "-01"
        restarted = request(sidecar.port, "GET", "/echo", headers={"traceparent": invalid})
        sent = [{k.lower(): v for k, v in response.json()["headers"]}["traceparent"]
                for response in (plain, restarted)]
        traces = [value.split("-")[1] for value in sent]
        spans = {span.trace_id: span for trace in traces
                 for span in receiver.wait_for_trace(trace)}
    finally:
        sidecar.stop()
        receiver.close()
    assert invalid not in sent and traces[1] != invalid.split("-")[1].lower()
    for value, trace in zip(sent, traces, strict=True):
        version, _, span_id, flags = value.split("-")
        assert (version, flags) == ("00", "01")
        assert spans[trace].span_id == span_id and spans[trace].parent_span_id == ""


def test_a_failed_request_is_traced_though_its_caller_did_not_sample(
        upstream_port: int) -> None:
    """Errors are always traced: the span of an unsampled request that ended in a 5xx
    is exported, with the ids the upstream was sent."""
    receiver = HttpOtlpReceiver()
    sidecar = _traced_sidecar(upstream_port, receiver)
    try:
        trace_id, parent_id, unsampled = _traceparent(sampled=False)
        failed = request(sidecar.port, "GET", "/reset", headers={"traceparent": unsampled})
        [span] = [s for s in receiver.wait_for_trace(trace_id) if s.trace_id == trace_id]
    finally:
        sidecar.stop()
        receiver.close()
    assert failed.status == 502
    assert span.parent_span_id == parent_id
    assert span.attributes["error.type"] == "sidecar_502"
    assert span.status_code == 2  # ERROR


def test_spans_outlive_a_worker_that_is_behind(upstream_port: int) -> None:
    """The one worker stopped (SIGSTOP), its ring of 16 records full: the tap keeps an
    eighth of the ring for the spans of sampled exchanges whose records found no room,
    so 18 of 30 sampled requests are traced once the worker runs again (16 records, 2
    spans alone), and the rest are dropped and counted."""
    receiver = HttpOtlpReceiver()
    sidecar = start_sidecar(f"http://127.0.0.1:{upstream_port}", "--analysis-workers", "1",
                            "--observation-queue-size", "16",
                            env={**receiver.env, "OTEL_TRACES_SAMPLER": "always_on"})
    [worker] = children(sidecar.process.popen.pid, b"spawn_main")
    os.kill(worker, signal.SIGSTOP)
    try:
        traces = []
        for _ in range(30):
            trace_id, _, traceparent = _traceparent(sampled=True)
            traces.append(trace_id)
            assert request(sidecar.port, "GET", "/echo",
                           headers={"traceparent": traceparent}).status == 200
        dropped = sidecar.metric("lookout_queue_dropped_total", queue="observations")
        reserved = sidecar.metric(catalog.SPANS_RESERVED.sample_name)
        os.kill(worker, signal.SIGCONT)
        marker, _, traceparent = _traceparent(sampled=True)
        wait_until(lambda: request(sidecar.port, "GET", "/echo",
                                   headers={"traceparent": traceparent}).status == 200
                   and marker in {span.trace_id for span in receiver.spans}, 30,
                   "the marker's span, after every earlier one")
    finally:
        os.kill(worker, signal.SIGCONT)
        sidecar.stop()
        receiver.close()
    traced = {span.trace_id for span in receiver.spans} - {marker}
    assert dropped == 14 and reserved == 2
    assert traced == set(traces[:18])
