"""What the request path records about one exchange: spans, RED metrics and the
Observation hand-off. Independent of the HTTP server, so any server stack records
exactly the same thing (bench/asgi_proxy.py relies on that for a fair comparison).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.propagate import get_global_textmap
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from sidecar.config import Config
from sidecar.metrics import SidecarMetrics
from sidecar.observation import Observation, ObservationQueue
from sidecar.routes import OTHER_ROUTE

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Exchange:
    """One request on its way through; becomes telemetry in `RequestTelemetry.finish`."""

    method: str
    path: str
    route: str
    request_content_type: str
    started: float = field(default_factory=time.perf_counter)
    started_at: float = field(default_factory=time.time)
    status: int = 0
    code: str = ""  # the `code` label: "200", "sidecar_504", ...
    request_body: bytes = b""
    response_body: bytes = b""
    response_bytes: int = 0
    response_content_type: str = ""
    truncated: bool = False
    upstream_duration: float | None = None
    headers_sent: bool = False  # past this point a failure can only cut the response


class RequestTelemetry:
    def __init__(self, config: Config, metrics: SidecarMetrics, tracer: trace.Tracer,
                 observations: ObservationQueue | None) -> None:
        self._config = config
        self._metrics = metrics
        self._tracer = tracer
        self._observations = observations
        self._propagator = get_global_textmap()
        self._model_attributes = {
            "lookout.model.name": config.model_name,
            "lookout.model.version": config.model_version,
        }

    def start_server_span(
        self, exchange: Exchange, headers: Mapping[str, str], *, scheme: str,
        protocol_version: str, client_address: str | None,
    ) -> Span:
        """The SERVER span, continuing the caller's trace if it sent `traceparent`."""
        attributes: dict[str, object] = {
            "http.request.method": exchange.method,
            "url.path": exchange.path,
            "url.scheme": scheme,
            "network.protocol.version": protocol_version,
            **self._model_attributes,
        }
        name = exchange.method
        if exchange.route != OTHER_ROUTE:
            attributes["http.route"] = exchange.route
            name = f"{exchange.method} {exchange.route}"
        if client_address:
            attributes["client.address"] = client_address
        user_agent = headers.get("User-Agent")
        if user_agent:
            attributes["user_agent.original"] = user_agent
        return self._tracer.start_span(name, context=self._propagator.extract(headers),
                                       kind=SpanKind.SERVER, attributes=attributes)

    def start_client_span(self, server_span: Span, method: str, url: str, host: str,
                          port: int, headers: MutableMapping[str, str]) -> Span:
        """The CLIENT span for the upstream call; its context goes into `headers`."""
        span = self._tracer.start_span(
            method,
            context=trace.set_span_in_context(server_span),
            kind=SpanKind.CLIENT,
            attributes={"http.request.method": method, "url.full": url,
                        "server.address": host, "server.port": port,
                        **self._model_attributes},
        )
        self._propagator.inject(headers, context=trace.set_span_in_context(span))
        return span

    @staticmethod
    def upstream_status(span: Span, status: int) -> None:
        span.set_attribute("http.response.status_code", status)
        if status >= 400:
            span.set_status(Status(StatusCode.ERROR))
            span.set_attribute("error.type", str(status))

    @staticmethod
    def upstream_failure(span: Span, kind: str, detail: str) -> None:
        span.set_status(Status(StatusCode.ERROR, detail))
        span.set_attribute("error.type", kind)

    def finish(self, exchange: Exchange, server_span: Span) -> None:
        """Record a finished exchange. Fail-open: a failure here is counted and logged,
        and the response the client already has is untouched."""
        try:
            duration = time.perf_counter() - exchange.started
            span_context = server_span.get_span_context()
            trace_id = format(span_context.trace_id, "032x")
            if exchange.status:
                server_span.set_attribute("http.response.status_code", exchange.status)
            server_span.set_attribute("http.request.body.size", len(exchange.request_body))
            server_span.set_attribute("http.response.body.size", exchange.response_bytes)
            server_error = exchange.status >= 500
            if server_error:
                server_span.set_status(Status(StatusCode.ERROR))
            server_span.end()
            # exemplars only point at traces that reach the backend
            exported = span_context.trace_flags.sampled or server_error
            self._metrics.record_request(
                exchange.route, exchange.code, duration, exchange.upstream_duration,
                len(exchange.request_body), exchange.response_bytes,
                trace_id if exported else None,
            )
            if self._observations is not None:
                self._observations.offer(Observation(
                    started_at=exchange.started_at,
                    method=exchange.method,
                    path=exchange.path,
                    route=exchange.route,
                    status=exchange.status,
                    code=exchange.code,
                    request_content_type=exchange.request_content_type,
                    request_body=exchange.request_body,
                    response_content_type=exchange.response_content_type,
                    response_body=exchange.response_body,
                    response_truncated=exchange.truncated,
                    duration=duration,
                    upstream_duration=exchange.upstream_duration,
                    trace_id=trace_id,
                    span_id=format(span_context.span_id, "016x"),
                    trace_sampled=bool(span_context.trace_flags.sampled),
                    model=self._config.model_name,
                    version=self._config.model_version,
                ))
        except Exception:
            self._metrics.component_error("telemetry")
            log.exception("recording telemetry failed; the response was not affected")
