"""The request path's tracing in-process: one sampling decision before any span, the
decided ids propagated, and spans built only for what is exported. Any propagator the
SDK is configured with is honoured, not only W3C Trace Context."""

from __future__ import annotations

import marshal
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
from lookout.sidecar.runtime.span_facts import SpanFacts
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


class Channel:
    """Where observations go; `room` says whether it takes the next one."""

    def __init__(self, room: bool) -> None:
        self.room = room
        self.taken: list = []

    def offer(self, observation) -> bool:
        if self.room:
            self.taken.append(observation)
        return self.room


def _telemetry(sampler: Sampler, channel: Channel | None = None
               ) -> tuple[RequestTelemetry, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing = Tracing(TracerProvider(sampler=sampler), [SimpleSpanProcessor(exporter)])
    metrics = SidecarMetrics("yolo", "v1", process_metrics=False)
    return RequestTelemetry(ModelIdentity("yolo", "v1"), metrics, tracing, channel), exporter


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


def test_spans_ride_with_the_observation_and_are_built_where_it_is_taken() -> None:
    channel = Channel(room=True)
    telemetry, exporter = _telemetry(ALWAYS_ON, channel)
    exchange, sent = _exchange(telemetry, 200, CIMultiDict())
    assert exporter.get_finished_spans() == ()  # not here: the worker exports them
    (observation,) = channel.taken
    worker_side = InMemorySpanExporter()
    tracing = Tracing(TracerProvider(), [SimpleSpanProcessor(worker_side)])
    SpanFacts.from_wire(marshal.loads(marshal.dumps(observation.spans))).export(tracing)
    server, client = sorted(worker_side.get_finished_spans(), key=lambda s: s.kind.value)
    assert server.context.trace_id == client.context.trace_id == exchange.trace_id
    assert sent["traceparent"] == (f"00-{exchange.trace_id:032x}-"
                                   f"{client.context.span_id:016x}-01")
    assert server.attributes["http.response.status_code"] == 200


def test_a_failed_request_whose_observation_is_dropped_is_traced_here() -> None:
    channel = Channel(room=False)
    telemetry, exporter = _telemetry(ALWAYS_OFF, channel)
    exchange, _ = _exchange(telemetry, 502, CIMultiDict())
    assert {s.context.trace_id for s in exporter.get_finished_spans()} == {exchange.trace_id}


def test_a_sampled_success_whose_observation_is_dropped_is_not_exported_here() -> None:
    channel = Channel(room=False)
    telemetry, exporter = _telemetry(ALWAYS_ON, channel)
    _exchange(telemetry, 200, CIMultiDict())
    assert exporter.get_finished_spans() == ()  # overload: no export work taken on
