"""What the request path records about one exchange: spans, RED metrics and the
Observation hand-off. Independent of the HTTP server, so any server stack records
exactly the same thing (bench/asgi_proxy.py relies on that for a fair comparison).

Unsampled requests get the SDK's non-recording spans (a few microseconds); their ids
still propagate. If such a request ends in a server-side error, its two spans are
built after the fact from what the Exchange kept, so errors are always traced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.propagate import get_global_textmap
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode

from lookout.sidecar.pipeline.observation import Observation, ObservationQueue
from lookout.sidecar.proxy.routes import OTHER_ROUTE
from lookout.sidecar.runtime.logs import FailureLog
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.runtime.tracing import Tracing
from lookout.sidecar.served_models import OTHER_MODEL, ModelLabels
from lookout.sidecar.settings import ModelIdentity

log = logging.getLogger(__name__)


@dataclass(slots=True)
class UpstreamCall:
    """The CLIENT span's facts, kept so the span can be rebuilt if it must be exported."""

    span: Span
    method: str
    url: str
    host: str
    port: int
    started_ns: int = field(default_factory=time.time_ns)
    ended_ns: int = 0
    status: int = 0
    error_kind: str = ""
    error_detail: str = ""

    def attributes(self, model_attributes: Mapping[str, str]) -> dict[str, object]:
        attributes: dict[str, object] = {
            "http.request.method": self.method, "url.full": self.url,
            "server.address": self.host, "server.port": self.port, **model_attributes,
        }
        if self.status:
            attributes["http.response.status_code"] = self.status
        if self.error_kind or self.status >= 400:
            attributes["error.type"] = self.error_kind or str(self.status)
        return attributes


@dataclass(slots=True)
class Exchange:
    """One request on its way through; becomes telemetry in `RequestTelemetry.finish`."""

    method: str
    path: str
    route: str
    request_headers: Mapping[str, str]
    started: float = field(default_factory=time.perf_counter)
    started_at: float = field(default_factory=time.time)
    status: int = 0
    code: str = ""  # the `code` label: "200", "sidecar_504", ...
    request_body: bytes = b""  # at most observe_max_bytes of it
    request_bytes: int = 0
    request_truncated: bool = False
    response_body: bytes = b""
    response_bytes: int = 0
    response_headers: Mapping[str, str] = field(default_factory=dict)
    truncated: bool = False
    upstream_duration: float | None = None
    error_kind: str = ""  # the sidecar's own error, when it made the response
    # the SERVER span's facts, turned into attributes only when a span records or an
    # unsampled request fails: building them for every request would tax the hot path
    scheme: str = "http"
    protocol_version: str = ""
    client_address: str | None = None
    user_agent: str | None = None
    parent: SpanContext | None = None  # kept for unsampled requests, to rebuild spans
    upstream: UpstreamCall | None = None
    model: str = ""  # the `model` and `version` labels, from the path
    version: str = ""


class RequestTelemetry:
    name = "telemetry"  # the `component` label of its failures

    def __init__(self, config: ModelIdentity, metrics: SidecarMetrics, tracing: Tracing,
                 observations: ObservationQueue | None,
                 models: ModelLabels | None = None) -> None:
        self._config = config
        self._models = models or ModelLabels(config.model_name, config.model_version, {},
                                             discover=False, max_models=1)
        self._metrics = metrics
        self._tracing = tracing
        self._tracer = tracing.tracer
        self._observations = observations
        self._failures = FailureLog(log)
        self._propagator = get_global_textmap()
        self._attributes: dict[tuple[str, str], dict[str, str]] = {}

    def _model_attributes(self, exchange: Exchange) -> dict[str, str]:
        key = (exchange.model, exchange.version)
        attributes = self._attributes.get(key)
        if attributes is None:
            attributes = self._attributes[key] = {"lookout.model.name": exchange.model,
                                                  "lookout.model.version": exchange.version}
        return attributes

    @staticmethod
    def _span_name(exchange: Exchange) -> str:
        if exchange.route == OTHER_ROUTE:
            return exchange.method
        return f"{exchange.method} {exchange.route}"

    def start_server_span(
        self, exchange: Exchange, headers: Mapping[str, str], *, scheme: str,
        protocol_version: str, client_address: str | None,
    ) -> Span:
        """The SERVER span, continuing the caller's trace if it sent `traceparent`."""
        parent_context = self._propagator.extract(headers)
        exchange.model, exchange.version = self._models.label(exchange.path)
        span = self._tracer.start_span(self._span_name(exchange), context=parent_context,
                                       kind=SpanKind.SERVER)
        exchange.scheme, exchange.protocol_version = scheme, protocol_version
        exchange.client_address = client_address
        exchange.user_agent = headers.get("User-Agent")
        if span.is_recording():
            span.set_attributes(self._server_start_attributes(exchange))
        else:
            exchange.parent = trace.get_current_span(parent_context).get_span_context()
        return span

    def _server_start_attributes(self, exchange: Exchange) -> dict[str, object]:
        attributes: dict[str, object] = {
            "http.request.method": exchange.method,
            "url.path": exchange.path,
            "url.scheme": exchange.scheme,
            "network.protocol.version": exchange.protocol_version,
            **self._model_attributes(exchange),
        }
        if exchange.route != OTHER_ROUTE:
            attributes["http.route"] = exchange.route
        if exchange.client_address:
            attributes["client.address"] = exchange.client_address
        if exchange.user_agent:
            attributes["user_agent.original"] = exchange.user_agent
        return attributes

    def start_client_span(self, exchange: Exchange, server_span: Span, url: str, host: str,
                          port: int, headers: MutableMapping[str, str]) -> UpstreamCall:
        """The CLIENT span for the upstream call; its context goes into `headers`."""
        span = self._tracer.start_span(exchange.method,
                                       context=trace.set_span_in_context(server_span),
                                       kind=SpanKind.CLIENT)
        call = UpstreamCall(span, exchange.method, url, host, port)
        if span.is_recording():
            span.set_attributes(call.attributes(self._model_attributes(exchange)))
        exchange.upstream = call
        self._propagator.inject(headers, context=trace.set_span_in_context(span))
        return call

    @staticmethod
    def upstream_status(call: UpstreamCall, status: int) -> None:
        call.status = status
        if call.span.is_recording():
            call.span.set_attribute("http.response.status_code", status)
            if status >= 400:
                call.span.set_status(Status(StatusCode.ERROR))
                call.span.set_attribute("error.type", str(status))

    @staticmethod
    def upstream_failure(call: UpstreamCall, kind: str, detail: str) -> None:
        call.error_kind, call.error_detail = kind, detail
        if call.span.is_recording():
            call.span.set_status(Status(StatusCode.ERROR, detail))
            call.span.set_attribute("error.type", kind)

    @staticmethod
    def end_client_span(call: UpstreamCall) -> None:
        call.ended_ns = time.time_ns()
        call.span.end()

    def finish(self, exchange: Exchange, server_span: Span) -> None:
        """Record a finished exchange. Fail-open: a failure here is counted and logged,
        and the response the client already has is untouched."""
        try:
            duration = time.perf_counter() - exchange.started
            span_context = server_span.get_span_context()
            trace_id = format(span_context.trace_id, "032x")
            server_error = exchange.status >= 500
            if server_span.is_recording():
                self._end_server_span(server_span, exchange, server_error)
            elif server_error and span_context.is_valid:
                self._export_late(exchange, span_context, duration)
            # exemplars only point at traces that reach the backend
            exported = span_context.trace_flags.sampled or server_error
            if exchange.model == OTHER_MODEL:
                admitted = self._models.answered(exchange.path, exchange.status)
                if admitted is not None:
                    exchange.model, exchange.version = admitted
            self._metrics.labelled(exchange.model, exchange.version).record_request(
                exchange.route, exchange.code, duration, exchange.upstream_duration,
                exchange.request_bytes, exchange.response_bytes,
                trace_id if exported else None,
            )
            if self._observations is not None:
                self._observations.offer(self._observation(exchange, span_context, duration))
        except Exception:
            self._metrics.component_error(self.name)
            self._failures.exception("telemetry", "recording telemetry failed; the response "
                                     "was not affected")

    def _server_end_attributes(self, exchange: Exchange) -> dict[str, object]:
        attributes: dict[str, object] = {
            "http.request.body.size": exchange.request_bytes,
            "http.response.body.size": exchange.response_bytes,
        }
        if exchange.status:
            attributes["http.response.status_code"] = exchange.status
        if exchange.error_kind:
            attributes["error.type"] = exchange.error_kind
        return attributes

    def _end_server_span(self, span: Span, exchange: Exchange, server_error: bool) -> None:
        span.set_attributes(self._server_end_attributes(exchange))
        if server_error:
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def _export_late(self, exchange: Exchange, context: SpanContext, duration: float) -> None:
        started_ns = int(exchange.started_at * 1e9)
        error = Status(StatusCode.ERROR)
        spans = [self._tracing.late_span(
            self._span_name(exchange), SpanKind.SERVER, context, exchange.parent,
            self._server_start_attributes(exchange) | self._server_end_attributes(exchange),
            started_ns, started_ns + int(duration * 1e9), error,
        )]
        call = exchange.upstream
        if call is not None:
            attributes = call.attributes(self._model_attributes(exchange))
            failed = call.error_kind or call.status >= 400
            spans.append(self._tracing.late_span(
                exchange.method, SpanKind.CLIENT, call.span.get_span_context(), context,
                attributes, call.started_ns, call.ended_ns or time.time_ns(),
                Status(StatusCode.ERROR, call.error_detail or None) if failed else Status(),
            ))
        self._tracing.export_late(spans)

    def _observation(self, exchange: Exchange, context: SpanContext,
                     duration: float) -> Observation:
        return Observation(
            started_at=exchange.started_at,
            method=exchange.method,
            path=exchange.path,
            route=exchange.route,
            status=exchange.status,
            code=exchange.code,
            request_headers=exchange.request_headers,
            request_body=exchange.request_body,
            request_truncated=exchange.request_truncated,
            response_headers=exchange.response_headers,
            response_body=exchange.response_body,
            response_truncated=exchange.truncated,
            duration=duration,
            upstream_duration=exchange.upstream_duration,
            trace_id=format(context.trace_id, "032x"),
            span_id=format(context.span_id, "016x"),
            trace_sampled=bool(context.trace_flags.sampled),
            model=exchange.model,
            version=exchange.version,
        )
