"""OpenTelemetry set-up from the standard OTEL_* variables.

Two choices differ from the SDK defaults, both for an inference sidecar's needs:
- with no OTEL_TRACES_SAMPLER set, sampling is parent-based 10% rather than 100%;
- spans of unsampled requests are still recorded (cheaply, never exported) so that a
  request that ends in a 5xx or a transport error is exported anyway: errors are
  always traced, whatever the sampling ratio.
Export runs in the SDK's batch thread; a dead collector costs dropped spans, never
request latency.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
    _get_from_env_or_default,
)
from opentelemetry.trace import Link, SpanKind, StatusCode
from opentelemetry.util.types import Attributes

from sidecar import __version__

log = logging.getLogger(__name__)

DEFAULT_SAMPLE_RATIO = 0.1
TRACER_NAME = "lookout.sidecar"


class RecordUnsampled(Sampler):
    """Turns a DROP decision into RECORD_ONLY so that the span exists (and can be
    exported later if it errors) while the propagated trace flags stay unsampled."""

    def __init__(self, delegate: Sampler) -> None:
        self._delegate = delegate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state=None,
    ) -> SamplingResult:
        result = self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )
        if result.decision is Decision.DROP:
            return SamplingResult(Decision.RECORD_ONLY, result.attributes, result.trace_state)
        return result

    def get_description(self) -> str:
        return f"RecordUnsampled{{{self._delegate.get_description()}}}"


def is_exported_error(span: ReadableSpan) -> bool:
    """A 5xx or a transport failure (no status code at all) with ERROR status."""
    if span.status.status_code is not StatusCode.ERROR:
        return False
    code = (span.attributes or {}).get("http.response.status_code")
    return not isinstance(code, int) or code >= 500


class ErrorAwareBatchSpanProcessor(BatchSpanProcessor):
    """Exports sampled spans, plus unsampled ones that record a server-side error."""

    def on_end(self, span: ReadableSpan) -> None:
        if span.context.trace_flags.sampled:
            super().on_end(span)
        elif is_exported_error(span):
            self._batch_processor.emit(span)


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


def build_tracer_provider(
    service_version: str = __version__, env: Mapping[str, str] | None = None
) -> TracerProvider:
    """A provider honouring OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_SDK_DISABLED,
    OTEL_TRACES_SAMPLER[_ARG], OTEL_TRACES_EXPORTER and the OTLP exporter variables."""
    env = os.environ if env is None else env
    resource = Resource.create(
        {"service.name": env.get("OTEL_SERVICE_NAME", "lookout"),
         "service.version": service_version}
    )
    # OTEL_SDK_DISABLED=true is honoured by the SDK itself (its tracers become no-ops).
    provider = TracerProvider(
        resource=resource,
        sampler=RecordUnsampled(sampler_from_env(env)),
        shutdown_on_exit=False,  # the sidecar flushes, bounded, during its own shutdown
    )
    exporter = exporter_from_env(env)
    if exporter is not None:
        provider.add_span_processor(ErrorAwareBatchSpanProcessor(exporter))
    if "console" in parse_exporter_names(env.get("OTEL_TRACES_EXPORTER", "")):
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    return provider


def get_tracer(provider: TracerProvider) -> trace.Tracer:
    return provider.get_tracer(TRACER_NAME, __version__)
