"""OTLP trace receivers (http/protobuf and gRPC) that decode what they are sent."""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.support.processes import free_port, wait_until


@dataclass
class ReceivedSpan:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, object]
    status_code: int
    service_name: str


def _value(any_value) -> object:
    field = any_value.WhichOneof("value")
    return getattr(any_value, field) if field else None


def _decode(request: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(ReceivedSpan(
                    name=span.name, kind=span.kind,
                    trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    attributes={a.key: _value(a.value) for a in span.attributes},
                    status_code=span.status.code,
                    service_name=str(resource.get("service.name")),
                ))
    return spans


SERVER = trace_pb2.Span.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SPAN_KIND_CLIENT
STATUS_ERROR = trace_pb2.Status.STATUS_CODE_ERROR


class _Collector:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        with self._lock:
            self.spans.extend(_decode(request))

    def wait_for(self, count: int, timeout: float = 20) -> list[ReceivedSpan]:
        wait_until(lambda: len(self.spans) >= count, timeout, f"{count} exported spans")
        with self._lock:
            return list(self.spans)

    def wait_for_trace(self, trace_id: str, spans: int = 1,
                       timeout: float = 20) -> list[ReceivedSpan]:
        """Everything received once `spans` spans of `trace_id` are in."""
        wait_until(lambda: sum(s.trace_id == trace_id for s in self.spans) >= spans,
                   timeout, f"{spans} spans of trace {trace_id}")
        with self._lock:
            return list(self.spans)


def http_exporter_env(port: int) -> dict[str, str]:
    """A sidecar's environment exporting spans over OTLP/HTTP to 127.0.0.1:`port`."""
    return {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_BSP_SCHEDULE_DELAY": "100"}


class HttpOtlpReceiver(_Collector):
    """POST /v1/traces with an ExportTraceServiceRequest body."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self._body()
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                collector.add(request)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def _body(self) -> bytes:
                """Sized, or chunked as Envoy's exporter sends it (as a collector takes)."""
                if self.headers.get("Content-Length") is not None:
                    return self.rfile.read(int(self.headers["Content-Length"]))
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()  # the CRLF after the last chunk (no trailers)
                return b"".join(chunks)

            def log_message(self, *args: object) -> None:
                pass

        self.port = port or free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def env(self) -> dict[str, str]:
        return http_exporter_env(self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class GrpcOtlpReceiver(_Collector):
    def __init__(self) -> None:
        super().__init__()
        collector = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                collector.add(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        self.port = free_port()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self._server)
        self._server.add_insecure_port(f"127.0.0.1:{self.port}")
        self._server.start()

    @property
    def env(self) -> dict[str, str]:
        return {"OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.port}",
                "OTEL_EXPORTER_OTLP_INSECURE": "true",
                "OTEL_BSP_SCHEDULE_DELAY": "100"}

    def close(self) -> None:
        self._server.stop(grace=None)
