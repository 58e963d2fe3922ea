"""An exported request's two spans as plain data, and the spans built from it.

The request path decides what is exported and records the facts; building the SDK's
span objects and, above all, encoding and sending them (the batch exporter's thread)
happen where the facts are taken: in the analysis worker that receives the exchange's
observation. That thread competed with the event loop for the interpreter in the
request-path process: with it there, p99 at 1 connection read 2.4 ms, without it 0.6 ms
(bench/proxy.py's setup, docs/PERFORMANCE.md). The facts are tuples of str, int, bool
and dicts of them, so they cross the channel in the observation's marshalled head.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from lookout.sidecar.runtime.tracing import Tracing

if TYPE_CHECKING:
    from lookout.sidecar.pipeline.observation import Observation

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)

Attributes = dict[str, str | int | float | bool]


@dataclass(frozen=True, slots=True)
class CallFacts:
    """The CLIENT span: the upstream call."""

    span_id: int
    name: str
    start_ns: int
    end_ns: int
    attributes: Attributes
    failed: bool
    detail: str


@dataclass(frozen=True, slots=True)
class SpanFacts:
    """The SERVER span, and the CLIENT span under it when the upstream was called."""

    name: str
    trace_id: int
    span_id: int
    parent_span_id: int  # 0: a root span
    trace_state: str  # its W3C header form
    start_ns: int
    end_ns: int
    failed: bool
    attributes: Attributes
    call: CallFacts | None

    def to_wire(self) -> tuple:
        call = self.call
        return (self.name, self.trace_id, self.span_id, self.parent_span_id,
                self.trace_state, self.start_ns, self.end_ns, self.failed, self.attributes,
                None if call is None else (call.span_id, call.name, call.start_ns,
                                           call.end_ns, call.attributes, call.failed,
                                           call.detail))

    @classmethod
    def from_wire(cls, wire: tuple) -> SpanFacts:
        *server, call = wire
        return cls(*server, call=None if call is None else CallFacts(*call))

    def spans(self, tracing: Tracing) -> list[ReadableSpan]:
        state = TraceState.from_header([self.trace_state]) if self.trace_state else None
        server = SpanContext(self.trace_id, self.span_id, is_remote=False,
                             trace_flags=_SAMPLED, trace_state=state)
        parent = SpanContext(self.trace_id, self.parent_span_id, is_remote=True,
                             trace_flags=_SAMPLED) if self.parent_span_id else None
        spans = [tracing.finished_span(
            self.name, SpanKind.SERVER, server, parent, self.attributes, self.start_ns,
            self.end_ns, Status(StatusCode.ERROR) if self.failed else Status())]
        call = self.call
        if call is not None:
            client = SpanContext(self.trace_id, call.span_id, is_remote=False,
                                 trace_flags=_SAMPLED, trace_state=state)
            spans.append(tracing.finished_span(
                call.name, SpanKind.CLIENT, client, server, call.attributes, call.start_ns,
                call.end_ns,
                Status(StatusCode.ERROR, call.detail or None) if call.failed else Status()))
        return spans

    def export(self, tracing: Tracing) -> None:
        tracing.export(self.spans(tracing))


def export_carried(observations: Iterable[Observation], tracing: Tracing,
                   failed: Callable[[], None]) -> None:
    """The spans riding with `observations`, exported by whoever took them (a worker, or
    the in-process pipeline); `failed` counts one that could not be."""
    for observation in observations:
        if observation.spans is not None:
            try:
                SpanFacts.from_wire(observation.spans).export(tracing)
            except Exception:
                failed()
