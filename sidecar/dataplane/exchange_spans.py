"""The SERVER span of an exchange, made in the analysis worker from its tap record.

The tap decided and propagated (`tap/PROTOCOL.md`, "Trace context"): the record carries
the trace id, the span id the upstream was sent as its parent, the caller's span and the
sampling decision. So Envoy makes no span object at all, and an unsampled request costs
it two random numbers and a header. A sampled exchange is exported here, and so is a failed
one that was not sampled (errors are always traced: its ids are those the upstream saw).
When a ring is full the tap keeps such an exchange's span in its reserve (a span-only
record); past the reserve, or while a worker is dead, the span is lost with its record,
counted in `lookout_queue_dropped_total{queue="observations"}`.

Export runs in the SDK's batch thread, reading the standard OTLP variables itself; a dead
collector costs dropped spans, never analysis.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import AttributeValue

from lookout.sidecar import __version__
from lookout.sidecar.dataplane.trace_settings import TraceSettings

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 5.0  # a black-holed collector must not hold up pod termination
SCOPE = InstrumentationScope("lookout.sidecar", __version__)
# gRPC codes a server span counts as failed (OpenTelemetry's RPC conventions)
GRPC_SERVER_ERRORS = frozenset({2, 4, 12, 13, 14, 15})
_SAMPLED, _UNSAMPLED = TraceFlags(TraceFlags.SAMPLED), TraceFlags(TraceFlags.DEFAULT)


@dataclass(frozen=True, slots=True)
class ExchangeFacts:
    """What a span says of one exchange, read from its record by `tap_record.py`."""

    trace_id: int
    span_id: int
    parent_span_id: int  # 0: the trace began here
    sampled: bool
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, AttributeValue]
    failed: bool
    error: str  # what failed, in words (the span status's description)


class ExchangeSpans:
    """Turns exchange facts into finished spans for the processors."""

    def __init__(self, processors: Sequence[SpanProcessor], resource: Resource) -> None:
        self._processors = list(processors)
        self._resource = resource

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ExchangeSpans | None:
        """None when nothing would be exported (disabled, or no exporter named). `env` is
        the process's environment: the SDK's exporters read their endpoint, headers and
        timeouts from it themselves."""
        settings = TraceSettings.from_env(env)
        if not settings.enabled:
            return None
        processors: list[SpanProcessor] = []
        if "otlp" in settings.exporters:
            processors.append(BatchSpanProcessor(_otlp_exporter(settings.protocol)))
        if "console" in settings.exporters:
            processors.append(SimpleSpanProcessor(ConsoleSpanExporter()))
        if not processors:
            return None
        resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or "lookout",
                                    "service.version": __version__})
        return cls(processors, resource)

    def add(self, facts: ExchangeFacts) -> None:
        """One exchange's span, exported: the decoder hands over the sampled and the
        failed ones only (building the facts of the rest would cost every record)."""
        parent = SpanContext(facts.trace_id, facts.parent_span_id, is_remote=True,
                             trace_flags=_SAMPLED if facts.sampled else _UNSAMPLED) \
            if facts.parent_span_id else None
        span = ReadableSpan(
            facts.name,
            context=SpanContext(facts.trace_id, facts.span_id, is_remote=False,
                                trace_flags=_SAMPLED),
            parent=parent, resource=self._resource, attributes=facts.attributes,
            kind=SpanKind.SERVER, start_time=facts.start_ns, end_time=facts.end_ns,
            status=Status(StatusCode.ERROR, facts.error or None) if facts.failed else Status(),
            instrumentation_scope=SCOPE)
        for processor in self._processors:
            processor.on_end(span)

    def close(self, timeout: float = FLUSH_TIMEOUT_S) -> None:
        """Export what is queued, for at most `timeout` seconds; the rest is dropped."""
        def shutdown() -> None:
            for processor in self._processors:
                processor.shutdown()

        flusher = threading.Thread(target=shutdown, daemon=True)
        flusher.start()
        flusher.join(timeout)
        if flusher.is_alive():
            log.warning("span export did not finish within %gs; remaining spans dropped",
                        timeout)


def _otlp_exporter(protocol: str) -> SpanExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )
    return HttpSpanExporter()
