"""OpenTelemetry set-up from the standard OTEL_* variables.

Two choices differ from the SDK defaults, both for an inference sidecar's needs:
- with no OTEL_TRACES_SAMPLER set, sampling is parent-based 10% rather than 100%;
- errors are always traced: a request that was not sampled but ends in a 5xx or a
  transport error has its spans built after the fact, with the ids that were
  propagated to the upstream, and exported. Recording every unsampled span instead
  cost about 140 us of CPU per request (bench/proxy.py).
The request path builds every span it exports that way, finished (`finished_span`,
`export`); see proxy/telemetry.py.
Export runs in the SDK's batch thread; a dead collector costs dropped spans, never
request latency.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import (
    ParentBased,
    Sampler,
    TraceIdRatioBased,
    _get_from_env_or_default,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status

from lookout.sidecar import __version__

log = logging.getLogger(__name__)

DEFAULT_SAMPLE_RATIO = 0.1
SPAN_FLUSH_TIMEOUT = 5.0  # a black-holed collector must not hold up pod termination
TRACER_NAME = "lookout.sidecar"


def sampler_from_env(env: Mapping[str, str]) -> Sampler:
    if env.get("OTEL_TRACES_SAMPLER"):
        return _get_from_env_or_default()
    return ParentBased(root=TraceIdRatioBased(DEFAULT_SAMPLE_RATIO))


def exporter_from_env(env: Mapping[str, str]) -> SpanExporter | None:
    """OTLP over http/protobuf (the OTLP spec's default) or gRPC, per the env."""
    names = parse_exporter_names(env.get("OTEL_TRACES_EXPORTER", "otlp"))
    if "otlp" not in names:
        return None
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol in ("http/protobuf", "http"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HTTPSpanExporter,
        )

        return HTTPSpanExporter()
    raise ValueError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; use grpc or http/protobuf"
    )


def parse_exporter_names(value: str) -> set[str]:
    return {name.strip() for name in value.split(",") if name.strip()}


class Tracing:
    """The tracer provider, its tracer, and the processors it exports through."""

    def __init__(self, provider: TracerProvider,
                 processors: Sequence[SpanProcessor] = (), *, disabled: bool = False) -> None:
        self.provider = provider
        self.disabled = disabled  # OTEL_SDK_DISABLED: no ids, nothing propagated
        self.processors = list(processors)
        for processor in self.processors:
            provider.add_span_processor(processor)
        self.tracer = provider.get_tracer(TRACER_NAME, __version__)
        self.scope = InstrumentationScope(TRACER_NAME, __version__)

    def finished_span(
        self, name: str, kind: SpanKind, context: SpanContext, parent: SpanContext | None,
        attributes: dict[str, object], start_ns: int, end_ns: int, status: Status,
    ) -> ReadableSpan:
        """A finished span with given ids (those already propagated upstream); the
        caller marks `context` sampled, since it is being exported."""
        return ReadableSpan(
            name,
            context=context,
            parent=parent if parent is not None and parent.is_valid else None,
            resource=self.provider.resource,
            attributes=attributes,
            kind=kind,
            status=status,
            start_time=start_ns,
            end_time=end_ns,
            instrumentation_scope=self.scope,
        )

    def export(self, spans: Sequence[ReadableSpan]) -> None:
        for processor in self.processors:
            for span in spans:
                processor.on_end(span)

    def shutdown(self) -> None:
        self.provider.shutdown()


def build_tracing(
    service_version: str = __version__, env: Mapping[str, str] | None = None
) -> Tracing:
    """Tracing honouring OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_SDK_DISABLED,
    OTEL_TRACES_SAMPLER[_ARG], OTEL_TRACES_EXPORTER and the OTLP exporter variables."""
    env = os.environ if env is None else env
    resource = Resource.create(
        {"service.name": env.get("OTEL_SERVICE_NAME", "lookout"),
         "service.version": service_version}
    )
    # OTEL_SDK_DISABLED=true is honoured by the SDK itself (its tracers become no-ops).
    provider = TracerProvider(
        resource=resource,
        sampler=sampler_from_env(env),
        shutdown_on_exit=False,  # the sidecar flushes, bounded, during its own shutdown
    )
    processors: list[SpanProcessor] = []
    exporter = exporter_from_env(env)
    if exporter is not None:
        processors.append(BatchSpanProcessor(exporter))
    if "console" in parse_exporter_names(env.get("OTEL_TRACES_EXPORTER", "")):
        processors.append(SimpleSpanProcessor(ConsoleSpanExporter()))
    disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    if disabled:
        processors = []
    return Tracing(provider, processors, disabled=disabled)


def flush_spans(tracing: Tracing, timeout: float = SPAN_FLUSH_TIMEOUT) -> None:
    """Export what is queued, for at most `timeout` seconds; the rest is dropped."""
    flusher = threading.Thread(target=tracing.shutdown, daemon=True)
    flusher.start()
    flusher.join(timeout)
    if flusher.is_alive():
        log.warning("span export did not finish within %gs; remaining spans dropped",
                    timeout)
