"""The request path's tracing in-process: one sampling decision before any span, the
decided ids propagated, and spans built only for what is exported. Any propagator the
SDK is configured with is honoured, not only W3C Trace Context."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from multidict import CIMultiDict
from opentelemetry import propagate
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler
from opentelemetry.trace import SpanKind, get_current_span

from lookout.sidecar.proxy.telemetry import Exchange, RequestTelemetry
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.runtime.tracing import Tracing
from lookout.sidecar.settings import ModelIdentity


class SingleHeaderPropagator(TextMapPropagator):
    """A made-up vendor format: `x-trace: <trace id>/<span id>`."""

    def extract(self, carrier, context=None, getter=None):
        return context

    def inject(self, carrier, context=None, setter=None):
        span_context = get_current_span(context).get_span_context()
        carrier["x-trace"] = f"{span_context.trace_id:x}/{span_context.span_id:x}"

    @property
    def fields(self) -> set[str]:
        return {"x-trace"}


def _telemetry(sampler: Sampler) -> tuple[RequestTelemetry, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing = Tracing(TracerProvider(sampler=sampler), [SimpleSpanProcessor(exporter)])
    metrics = SidecarMetrics("yolo", "v1", process_metrics=False)
    return RequestTelemetry(ModelIdentity("yolo", "v1"), metrics, tracing, None), exporter


def _exchange(telemetry: RequestTelemetry, status: int,
              headers: CIMultiDict[str]) -> tuple[Exchange, CIMultiDict[str]]:
    exchange = Exchange("POST", "/v2/models/yolo/infer", "/v2/models/{model}/infer", headers)
    telemetry.begin(exchange, headers, scheme="http", protocol_version="1.1",
                    client_address="127.0.0.1")
    upstream_headers: CIMultiDict[str] = CIMultiDict()
    call = telemetry.upstream_call(exchange, "http://127.0.0.1:1/v2", "127.0.0.1", 1,
                                   upstream_headers)
    telemetry.upstream_status(call, status)
    telemetry.end_call(call)
    exchange.status, exchange.code = status, str(status)
    telemetry.finish(exchange)
    return exchange, upstream_headers


@pytest.fixture
def vendor_propagator() -> Iterator[None]:
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(SingleHeaderPropagator())
    yield
    propagate.set_global_textmap(before)


def test_a_sampled_request_exports_spans_with_the_propagated_ids() -> None:
    telemetry, exporter = _telemetry(ALWAYS_ON)
    exchange, sent = _exchange(telemetry, 200, CIMultiDict())
    server, client = sorted(exporter.get_finished_spans(), key=lambda span: span.kind.value)
    assert (server.kind, client.kind) == (SpanKind.SERVER, SpanKind.CLIENT)
    assert server.context.trace_id == client.context.trace_id == exchange.trace_id
    assert client.parent.span_id == server.context.span_id
    assert sent["traceparent"] == (f"00-{exchange.trace_id:032x}-"
                                   f"{client.context.span_id:016x}-01")
    assert server.end_time >= server.start_time


def test_an_unsampled_success_exports_nothing_but_still_propagates() -> None:
    telemetry, exporter = _telemetry(ALWAYS_OFF)
    exchange, sent = _exchange(telemetry, 200, CIMultiDict())
    assert exporter.get_finished_spans() == ()
    assert sent["traceparent"].startswith(f"00-{exchange.trace_id:032x}-")
    assert sent["traceparent"].endswith("-00")


def test_an_unsampled_failure_is_exported() -> None:
    telemetry, exporter = _telemetry(ALWAYS_OFF)
    exchange, _ = _exchange(telemetry, 503, CIMultiDict())
    spans = exporter.get_finished_spans()
    assert {span.context.trace_id for span in spans} == {exchange.trace_id}
    assert len(spans) == 2


@pytest.mark.usefixtures("vendor_propagator")
def test_another_propagator_is_given_the_upstream_call_context() -> None:
    telemetry, exporter = _telemetry(ALWAYS_ON)
    exchange, sent = _exchange(telemetry, 200, CIMultiDict())
    client = next(span for span in exporter.get_finished_spans()
                  if span.kind is SpanKind.CLIENT)
    assert "traceparent" not in sent
    assert sent["x-trace"] == f"{exchange.trace_id:x}/{client.context.span_id:x}"
