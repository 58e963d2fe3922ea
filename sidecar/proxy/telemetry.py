"""What the request path records about one exchange: spans, RED metrics and the
Observation hand-off. Independent of the HTTP server, so any server stack records
exactly the same thing (bench/asgi_proxy.py relies on that for a fair comparison).

Spans are facts kept on the Exchange, and only a request that is exported gets them
written down: the sampler is asked once when the request arrives, before any span
object exists, and the ids it was asked about are propagated upstream. A sampled
request's two spans, or an unsampled one's that ended in a server-side error (errors
are always traced), leave as `SpanFacts` with the observation, and the analysis worker
that takes it builds and exports them (runtime/span_facts.py says why); a dropped
observation's spans are lost with it, but for an error's, exported here. An unsampled,
successful request costs a sampler call and three random ids; the SDK's live spans cost
about 12 us more per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.propagate import get_global_textmap
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from lookout.sidecar.pipeline.observation import Observation, ObservationQueue
from lookout.sidecar.proxy.routes import OTHER_ROUTE
from lookout.sidecar.runtime.logs import FailureLog
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.runtime.span_facts import CallFacts, SpanFacts
from lookout.sidecar.runtime.tracing import Tracing
from lookout.sidecar.served_models import OTHER_MODEL, ModelLabels, path_model
from lookout.sidecar.settings import ModelIdentity

log = logging.getLogger(__name__)

GRPC = "grpc"  # an Exchange's `protocol` on the gRPC port, whose `path` is the method
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)


@dataclass(slots=True)
class UpstreamCall:
    """The CLIENT span's facts: enough to build the span if the request is exported."""

    span_id: int
    method: str
    url: str
    host: str
    port: int
    started_ns: int = field(default_factory=time.time_ns)
    ended_ns: int = 0
    status: int = 0
    error_kind: str = ""
    error_detail: str = ""
    grpc_status: int = -1  # the upstream's gRPC status number; -1 when none came
    protocol: str = "http"

    def attributes(self, model_attributes: Mapping[str, str]) -> dict[str, object]:
        if self.protocol == GRPC:
            return self._rpc_attributes(model_attributes)
        attributes: dict[str, object] = {
            "http.request.method": self.method, "url.full": self.url,
            "server.address": self.host, "server.port": self.port, **model_attributes,
        }
        if self.status:
            attributes["http.response.status_code"] = self.status
        if self.failed:
            attributes["error.type"] = self.error_kind or str(self.status)
        return attributes

    def _rpc_attributes(self, model_attributes: Mapping[str, str]) -> dict[str, object]:
        """OpenTelemetry's gRPC client span: `url` holds the method's path."""
        service, _, method = self.url[1:].partition("/")
        attributes: dict[str, object] = {
            "rpc.system": "grpc", "rpc.service": service, "rpc.method": method,
            "server.address": self.host, "server.port": self.port, **model_attributes,
        }
        if self.grpc_status >= 0:
            attributes["rpc.grpc.status_code"] = self.grpc_status
        if self.failed:
            attributes["error.type"] = self.error_kind or str(self.grpc_status)
        return attributes

    @property
    def failed(self) -> bool:
        """A client span fails on any status but OK (as on HTTP, on any 4xx or 5xx)."""
        return bool(self.error_kind) or self.status >= 400

    def status_of_span(self) -> Status:
        if not self.failed:
            return Status()
        return Status(StatusCode.ERROR, self.error_detail or None)


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
    # the SERVER span's facts, turned into attributes only if the request is exported
    scheme: str = "http"
    protocol_version: str = ""
    client_address: str | None = None
    user_agent: str | None = None
    trace_id: int = 0  # 0: tracing is disabled (OTEL_SDK_DISABLED)
    span_id: int = 0
    sampled: bool = False
    trace_state: TraceState | None = None
    parent: SpanContext | None = None  # the caller's span, when it sent one
    sampler_attributes: Mapping[str, object] | None = None
    upstream: UpstreamCall | None = None
    model: str = ""  # the `model` and `version` labels, from the path
    version: str = ""
    named_model: str | None = None  # the model the request names (path or message)
    protocol: str = "http"
    grpc_status: int = -1  # the gRPC status number sent; -1 on the HTTP port

    @property
    def trace_id_hex(self) -> str:
        return format(self.trace_id, "032x")


class RequestTelemetry:
    name = "telemetry"  # the `component` label of its failures

    def __init__(self, config: ModelIdentity, metrics: SidecarMetrics, tracing: Tracing,
                 observations: ObservationQueue | None,
                 models: ModelLabels | None = None) -> None:
        self._config = config
        self.models = models or ModelLabels(config.model_name, config.model_version, {},
                                            discover=False, max_models=1)
        self._metrics = metrics
        self._tracing = tracing
        self._sampler = tracing.provider.sampler
        self._ids = tracing.provider.id_generator
        self._observations = observations
        self._failures = FailureLog(log)
        self._propagator = get_global_textmap()
        self._fields = tuple(self._propagator.fields)  # none sent: nothing to extract
        self._attributes: dict[tuple[str, str], dict[str, str]] = {}

    @property
    def propagation_fields(self) -> tuple[str, ...]:
        """The headers (metadata keys) trace context travels in."""
        return self._fields

    def _model_attributes(self, exchange: Exchange) -> dict[str, str]:
        key = (exchange.model, exchange.version)
        attributes = self._attributes.get(key)
        if attributes is None:
            attributes = self._attributes[key] = {"lookout.model.name": exchange.model,
                                                  "lookout.model.version": exchange.version}
        return attributes

    @staticmethod
    def _span_name(exchange: Exchange) -> str:
        if exchange.protocol == GRPC:  # `service/method`, as gRPC's conventions say
            return exchange.path[1:] if exchange.route != OTHER_ROUTE else "grpc"
        if exchange.route == OTHER_ROUTE:
            return exchange.method
        return f"{exchange.method} {exchange.route}"

    def begin(self, exchange: Exchange, headers: Mapping[str, str], *, scheme: str,
              protocol_version: str, client_address: str | None) -> None:
        """Label the exchange and decide its sampling, continuing the caller's trace if
        it sent one. No span object is made here."""
        if exchange.protocol == GRPC:
            exchange.model, exchange.version = self.models.label_name(exchange.named_model)
        else:
            name = None if self.models.single else path_model(exchange.path)
            exchange.named_model = name  # the path read once, for the labels and discovery
            exchange.model, exchange.version = self.models.label_name(name)
        exchange.scheme, exchange.protocol_version = scheme, protocol_version
        exchange.client_address = client_address
        exchange.user_agent = headers.get("user-agent")  # gRPC's are a plain lowercase dict
        if self._tracing.disabled:
            return
        context = None
        for name in self._fields:
            if name in headers:
                context = self._propagator.extract(headers)
                parent = trace.get_current_span(context).get_span_context()
                if parent.is_valid:
                    exchange.parent = parent
                break
        parent = exchange.parent
        trace_id = parent.trace_id if parent is not None else self._ids.generate_trace_id()
        result = self._sampler.should_sample(context, trace_id, self._span_name(exchange),
                                             SpanKind.SERVER)
        exchange.trace_id, exchange.span_id = trace_id, self._ids.generate_span_id()
        exchange.sampled = result.decision is Decision.RECORD_AND_SAMPLE
        exchange.trace_state = result.trace_state
        exchange.sampler_attributes = result.attributes or None

    def upstream_call(self, exchange: Exchange, url: str, host: str, port: int,
                      headers: MutableMapping[str, str]) -> UpstreamCall:
        """The upstream call's facts; its trace context goes into `headers`."""
        call = UpstreamCall(self._ids.generate_span_id() if exchange.trace_id else 0,
                            exchange.method, url, host, port, protocol=exchange.protocol)
        exchange.upstream = call
        if exchange.trace_id:
            self._inject(exchange, call.span_id, headers)
        return call

    def _inject(self, exchange: Exchange, span_id: int,
                headers: MutableMapping[str, str]) -> None:
        flags = _SAMPLED if exchange.sampled else _UNSAMPLED
        context = SpanContext(exchange.trace_id, span_id, is_remote=False,
                              trace_flags=flags, trace_state=exchange.trace_state)
        self._propagator.inject(headers, context=trace.set_span_in_context(
            NonRecordingSpan(context)))

    def relabel(self, exchange: Exchange, name: str | None) -> None:
        """The labels of a call whose model is named in its first message (gRPC)."""
        exchange.named_model = name
        exchange.model, exchange.version = self.models.label_name(name)

    def component_failed(self) -> None:
        """A request-path failure of lookout's own, for `lookout_component_errors_total`."""
        self._metrics.component_error(self.name)

    @staticmethod
    def upstream_status(call: UpstreamCall, status: int) -> None:
        call.status = status

    @staticmethod
    def upstream_failure(call: UpstreamCall, kind: str, detail: str) -> None:
        call.error_kind, call.error_detail = kind, detail

    @staticmethod
    def end_call(call: UpstreamCall) -> None:
        call.ended_ns = time.time_ns()

    def finish(self, exchange: Exchange) -> None:
        """Record a finished exchange. Fail-open: a failure here is counted and logged,
        and the response the client already has is untouched."""
        try:
            duration = time.perf_counter() - exchange.started
            server_error = exchange.status >= 500
            # exemplars only point at traces that reach the backend
            exported = exchange.trace_id != 0 and (exchange.sampled or server_error)
            facts = self._span_facts(exchange, duration, server_error) if exported else None
            if exchange.model == OTHER_MODEL:
                admitted = self.models.answered(exchange.named_model, exchange.status)
                if admitted is not None:
                    exchange.model, exchange.version = admitted
            self._metrics.labelled(exchange.model, exchange.version).record_request(
                exchange.route, exchange.code, duration, exchange.upstream_duration,
                exchange.request_bytes, exchange.response_bytes,
                exchange.trace_id_hex if exported else None,
            )
            # whoever takes the observation exports its spans. A dropped one's go with
            # it (the channel is full: this is no time for more work here), but for an
            # error's, exported here: errors are traced whatever the channel's state
            handed = self._observations is not None and self._observations.offer(
                self._observation(exchange, duration, facts and facts.to_wire()))
            if facts is not None and not handed and (server_error
                                                     or self._observations is None):
                facts.export(self._tracing)
        except Exception:
            self._metrics.component_error(self.name)
            self._failures.exception("telemetry", "recording telemetry failed; the response "
                                     "was not affected")

    def _rpc_attributes(self, exchange: Exchange) -> dict[str, object]:
        """OpenTelemetry's gRPC server span."""
        service, _, method = exchange.path[1:].partition("/")
        attributes: dict[str, object] = {
            "rpc.system": "grpc", "rpc.service": service, "rpc.method": method,
            "network.protocol.name": "http", "network.protocol.version": "2",
            **self._model_attributes(exchange),
            "rpc.request.body.size": exchange.request_bytes,
            "rpc.response.body.size": exchange.response_bytes,
        }
        if exchange.grpc_status >= 0:
            attributes["rpc.grpc.status_code"] = exchange.grpc_status
        return self._with_caller(exchange, attributes)

    @staticmethod
    def _with_caller(exchange: Exchange, attributes: dict[str, object]) -> dict[str, object]:
        """Both ports' server spans: the sampler's, the caller's and the error's."""
        if exchange.sampler_attributes:
            attributes.update(exchange.sampler_attributes)
        if exchange.client_address:
            attributes["client.address"] = exchange.client_address
        if exchange.user_agent:
            attributes["user_agent.original"] = exchange.user_agent
        if exchange.error_kind:
            attributes["error.type"] = exchange.error_kind
        return attributes

    def _server_attributes(self, exchange: Exchange) -> dict[str, object]:
        if exchange.protocol == GRPC:
            return self._rpc_attributes(exchange)
        attributes: dict[str, object] = {
            "http.request.method": exchange.method,
            "url.path": exchange.path,
            "url.scheme": exchange.scheme,
            "network.protocol.version": exchange.protocol_version,
            **self._model_attributes(exchange),
            "http.request.body.size": exchange.request_bytes,
            "http.response.body.size": exchange.response_bytes,
        }
        if exchange.route != OTHER_ROUTE:
            attributes["http.route"] = exchange.route
        if exchange.status:
            attributes["http.response.status_code"] = exchange.status
        return self._with_caller(exchange, attributes)

    def _span_facts(self, exchange: Exchange, duration: float,
                    server_error: bool) -> SpanFacts:
        """Both spans' facts. An unsampled request is here because it failed; its spans
        keep the ids the upstream was sent."""
        started_ns = int(exchange.started_at * 1e9)
        call = exchange.upstream
        parent = exchange.parent
        return SpanFacts(
            self._span_name(exchange), exchange.trace_id, exchange.span_id,
            parent.span_id if parent is not None else 0,
            exchange.trace_state.to_header() if exchange.trace_state else "",
            started_ns, started_ns + int(duration * 1e9), server_error,
            self._server_attributes(exchange),
            None if call is None else CallFacts(
                call.span_id, self._call_name(exchange), call.started_ns,
                call.ended_ns or time.time_ns(),
                call.attributes(self._model_attributes(exchange)), call.failed,
                call.error_detail))

    def _call_name(self, exchange: Exchange) -> str:
        return self._span_name(exchange) if exchange.protocol == GRPC else exchange.method

    def observe_message(self, exchange: Exchange, request: bytes, response: bytes) -> None:
        """One request and its response within a stream, handed over for analysis as an
        exchange of its own; the stream's RED metrics and spans are its RPC's, in
        `finish`. Fail-open like `finish`."""
        if self._observations is None:
            return
        try:
            self._observations.offer(self._observation(exchange, 0.0, None,
                                                       (request, response)))
        except Exception:
            self._metrics.component_error(self.name)
            self._failures.exception("telemetry", "handing over a stream's message failed; "
                                     "the stream was not affected")

    def _observation(self, exchange: Exchange, duration: float, spans: tuple | None,
                     message: tuple[bytes, bytes] | None = None) -> Observation:
        """The exchange as the analysis sees it; with `message`, one answered request of
        a stream still open (its answer came: a success of its own)."""
        return Observation(
            started_at=exchange.started_at if message is None else time.time(),
            method=exchange.method,
            path=exchange.path,
            route=exchange.route,
            status=exchange.status if message is None else 200,
            code=exchange.code if message is None else "OK",
            request_headers=exchange.request_headers,
            request_body=exchange.request_body if message is None else message[0],
            request_truncated=exchange.request_truncated and message is None,
            response_headers=exchange.response_headers,
            response_body=exchange.response_body if message is None else message[1],
            response_truncated=exchange.truncated and message is None,
            duration=duration,
            upstream_duration=exchange.upstream_duration,
            trace_id=exchange.trace_id_hex,
            span_id=format(exchange.span_id, "016x"),
            trace_sampled=exchange.sampled,
            model=exchange.model,
            version=exchange.version,
            spans=spans,
        )
