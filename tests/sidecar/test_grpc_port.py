"""The gRPC data port in one event loop with a real grpc.aio upstream over loopback:
whatever the upstream's methods are, their metadata, messages, statuses and trailers
come back as the upstream sent them, and the port's own refusals say they are lookout's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc import aio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from lookout.sidecar.pipeline.protos import KNOWN_METHODS
from lookout.sidecar.proxy import h2_frames as h2
from lookout.sidecar.proxy.grpc_port import (
    ERROR_KEY,
    GrpcDataPort,
    grpc_timeout_seconds,
    named_model,
)
from lookout.sidecar.proxy.grpc_status import HTTP_EQUIVALENT
from lookout.sidecar.proxy.telemetry import RequestTelemetry
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.runtime.span_facts import export_carried
from lookout.sidecar.runtime.tracing import Tracing
from lookout.sidecar.settings import GrpcSettings, ModelIdentity
from lookout.slo import catalog

INFER = "/inference.GRPCInferenceService/ModelInfer"
METADATA = "/inference.GRPCInferenceService/ServerMetadata"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
SERVING = b"\x08\x01"  # HealthCheckResponse{status: SERVING}
LIMIT = 64 * 1024
MAX_CONNECTIONS = 4


class Observations:
    """The analysis side: takes every observation and exports the spans it carries."""

    def __init__(self, tracing: Tracing) -> None:
        self.taken: list = []
        self._tracing = tracing

    def offer(self, observation) -> bool:
        self.taken.append(observation)
        export_carried([observation], self._tracing, lambda: None)
        return True


class Upstream(grpc.GenericRpcHandler):
    """An upstream with methods lookout has never heard of, and ModelInfer."""

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method
        if method == "/acme.Detector/Echo":
            return grpc.unary_unary_rpc_method_handler(self._echo)
        if method == INFER:
            return grpc.unary_unary_rpc_method_handler(self._infer)
        if method == "/acme.Detector/Sum":  # client streaming
            return grpc.stream_unary_rpc_method_handler(self._sum)
        if method == "/acme.Detector/Count":  # server streaming
            return grpc.unary_stream_rpc_method_handler(self._count)
        if method == HEALTH_CHECK:
            return grpc.unary_unary_rpc_method_handler(self._health)
        if method == "/grpc.health.v1.Health/Watch":
            return grpc.unary_stream_rpc_method_handler(self._watch)
        if method == "/acme.Detector/Big":
            return grpc.unary_unary_rpc_method_handler(self._big)
        if method == METADATA:  # a V2 unary method that never answers
            return grpc.unary_unary_rpc_method_handler(self._hang)
        return None

    async def _echo(self, request: bytes, context: aio.ServicerContext) -> bytes:
        metadata = dict(context.invocation_metadata())
        await context.send_initial_metadata((("served-by", "acme"),))
        context.set_trailing_metadata((("cost-bin", b"\x00\xff"), ("took", "3ms")))
        if request == b"missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing",
                                (("why", "asked for it"),))
        return request + b"|" + metadata.get("x-tenant", "").encode() + b"|" + \
            metadata.get("traceparent", "").encode()

    async def _infer(self, request: bytes, context: aio.ServicerContext) -> bytes:
        return b"answer"

    async def _sum(self, requests: AsyncIterator[bytes], context: aio.ServicerContext) -> bytes:
        return str(sum([len(message) async for message in requests])).encode()

    async def _count(self, request: bytes, context: aio.ServicerContext):
        for index in range(int(request)):
            yield str(index).encode()

    async def _health(self, request: bytes, context: aio.ServicerContext) -> bytes:
        return SERVING

    async def _watch(self, request: bytes, context: aio.ServicerContext):
        for status in (b"\x08\x02", SERVING):  # NOT_SERVING, then SERVING
            yield status

    async def _big(self, request: bytes, context: aio.ServicerContext) -> bytes:
        return b"x" * int(request)

    async def _hang(self, request: bytes, context: aio.ServicerContext) -> bytes:
        await asyncio.sleep(30)
        return b""


Scenario = Callable[[aio.Channel, GrpcDataPort, SidecarMetrics, InMemorySpanExporter,
                     Observations], Awaitable[Any]]


def _run(scenario: Scenario) -> Any:
    async def main() -> Any:
        upstream = aio.server()
        upstream.add_generic_rpc_handlers((Upstream(),))
        upstream_port = upstream.add_insecure_port("127.0.0.1:0")
        await upstream.start()
        exporter = InMemorySpanExporter()
        tracing = Tracing(TracerProvider(sampler=ALWAYS_ON), [SimpleSpanProcessor(exporter)])
        metrics = SidecarMetrics("yolo", "v1", process_metrics=False)
        observations = Observations(tracing)
        telemetry = RequestTelemetry(ModelIdentity("yolo", "v1"), metrics, tracing,
                                     observations)
        port = GrpcDataPort(GrpcSettings(f"127.0.0.1:{upstream_port}", LIMIT, 2.0, 1024**2,
                                         MAX_CONNECTIONS),
                            telemetry)
        await port.start("127.0.0.1", 0, reuse_port=False)
        port.refusals = []
        port.refused = port.refusals.append
        channel = aio.insecure_channel(f"127.0.0.1:{port.port}",
                                       options=[("grpc.max_send_message_length", -1)])
        try:
            return await scenario(channel, port, metrics, exporter, observations)
        finally:
            await channel.close()
            await port.stop(0)
            await upstream.stop(0)
    return asyncio.run(main())


async def _eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Whether `condition` holds within `timeout`, asked as the loop runs the port."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def _count(metrics: SidecarMetrics, **labels: str) -> float:
    return sum(sample.value for family in metrics.registry.collect() for sample in family.samples
               if sample.name == catalog.REQUESTS.sample_name
               and all(sample.labels.get(k) == v for k, v in labels.items()))


def test_an_unknown_unary_method_is_relayed_with_metadata_and_trailers() -> None:
    async def scenario(channel, port, metrics, exporter, observations):
        call = channel.unary_unary("/acme.Detector/Echo")(
            b"hello", metadata=(("x-tenant", "shop-7"),), timeout=5)
        answer = await call
        return answer, await call.initial_metadata(), await call.trailing_metadata(), \
            _count(metrics, route="other", code="OK"), exporter.get_finished_spans()

    answer, initial, trailing, counted, spans = _run(scenario)
    body, tenant, traceparent = answer.split(b"|")
    assert (body, tenant) == (b"hello", b"shop-7")
    server = next(span for span in spans if span.kind.name == "SERVER")
    client = next(span for span in spans if span.kind.name == "CLIENT")
    # the upstream was sent lookout's client span as the parent, in W3C trace context
    assert traceparent.decode().split("-")[2] == format(client.context.span_id, "016x")
    assert client.parent.span_id == server.context.span_id
    assert dict(initial)["served-by"] == "acme"
    assert dict(trailing) == {"cost-bin": b"\x00\xff", "took": "3ms"}
    assert counted == 1
    assert server.name == "grpc"  # an unknown method's span is not named by the client


def test_the_upstreams_error_status_and_trailers_are_relayed_unchanged() -> None:
    async def scenario(channel, port, metrics, exporter, observations):
        with pytest.raises(aio.AioRpcError) as raised:
            await channel.unary_unary("/acme.Detector/Echo")(b"missing", timeout=5)
        return raised.value, _count(metrics, code="NOT_FOUND")

    error, counted = _run(scenario)
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert error.details() == "no such thing"
    assert dict(error.trailing_metadata())["why"] == "asked for it"
    assert ERROR_KEY not in dict(error.trailing_metadata())
    assert counted == 1


def test_client_and_server_streams_of_unknown_methods_pass() -> None:
    async def scenario(channel, port, metrics, exporter, observations):
        async def messages():
            for size in (3, 5, 7):
                yield b"x" * size
        total = await channel.stream_unary("/acme.Detector/Sum")(messages(), timeout=5)
        counted = [m async for m in channel.unary_stream("/acme.Detector/Count")(b"4",
                                                                                 timeout=5)]
        return total, counted, _count(metrics, code="OK")

    total, counted, calls = _run(scenario)
    assert total == b"15"
    assert counted == [b"0", b"1", b"2", b"3"]
    assert calls == 2


def test_the_health_service_passes_through_with_its_own_routes() -> None:
    async def scenario(channel, port, metrics, exporter, observations):
        checked = await channel.unary_unary(HEALTH_CHECK)(b"", timeout=5)
        watched = [m async for m in channel.unary_stream("/grpc.health.v1.Health/Watch")(
            b"", timeout=5)]
        return checked, watched, _count(metrics, route=HEALTH_CHECK, code="OK"), \
            _count(metrics, route="/grpc.health.v1.Health/Watch", code="OK")

    checked, watched, checks, watches = _run(scenario)
    assert checked == SERVING and watched == [b"\x08\x02", SERVING]
    assert checks == watches == 1


def test_messages_over_the_limit_either_way_are_lookouts_resource_exhausted() -> None:
    async def scenario(channel, port, metrics, exporter, observations):
        errors = []
        for method, body in (("/acme.Detector/Echo", b"x" * (LIMIT + 1)),
                             ("/acme.Detector/Big", str(LIMIT + 1).encode())):
            with pytest.raises(aio.AioRpcError) as raised:
                await channel.unary_unary(method)(body, timeout=5)
            errors.append(raised.value)
        fits = await channel.unary_unary("/acme.Detector/Big")(str(LIMIT).encode(), timeout=5)
        return errors, len(fits), _count(metrics, code="sidecar_RESOURCE_EXHAUSTED")

    (request, response), fits, counted = _run(scenario)
    assert request.code() is response.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(request.trailing_metadata())[ERROR_KEY] == "request_too_large"
    assert dict(response.trailing_metadata())[ERROR_KEY] == "response_too_large"
    assert response.details().startswith("lookout: response message of ")
    assert fits == LIMIT
    assert counted == 2


def test_a_deadline_passing_is_the_upstreams_deadline_exceeded() -> None:
    async def scenario(channel, port, metrics, exporter, observations):
        with pytest.raises(aio.AioRpcError) as raised:
            await channel.unary_unary(METADATA)(b"", timeout=0.5)
        counted = await _eventually(lambda: _count(metrics, code="DEADLINE_EXCEEDED") == 1)
        return raised.value, counted, _count(metrics, code="sidecar_CANCELLED")

    error, counted, cancelled = _run(scenario)
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert counted and cancelled == 0  # the upstream's lateness, not a cancellation
    assert grpc_timeout_seconds(b"999848u") == pytest.approx(0.999848)
    assert grpc_timeout_seconds(b"5S") == 5 and grpc_timeout_seconds(b"5X") is None
    assert grpc_timeout_seconds(b"123456789S") is None  # more than 8 digits


def test_an_infer_call_is_observed_with_the_model_it_names() -> None:
    request = b"\x0a\x07primary\x12\x013" + b"\x3a\x04data"  # model_name, version, raw

    async def scenario(channel, port, metrics, exporter, observations):
        await channel.unary_unary(INFER)(request, timeout=5)
        return observations.taken

    taken = _run(scenario)
    # a one-model pod labels every request with its model, whatever the message names
    (observation,) = [o for o in taken if o.request_body]
    assert observation.path == INFER and observation.route == INFER
    assert observation.request_body == request and observation.response_body == b"answer"
    assert observation.request_headers["content-type"] == "application/grpc"
    assert observation.status == 200 and observation.code == "OK"


def test_the_model_name_is_peeked_from_the_first_field_only() -> None:
    assert named_model(INFER, b"\x0a\x07primary\x12\x013") == "primary"
    long_name = "m" * 200
    assert named_model(INFER, b"\x0a\xc8\x01" + long_name.encode()) == long_name
    assert named_model(INFER, b"\x0a\xff\x7f" + b"m" * 20) is None  # longer than allowed
    assert named_model(INFER, b"\x12\x013") is None  # no name first
    assert named_model(INFER, b"\x0a\x09short") is None  # runs past the message
    assert named_model(INFER, b"\x0a\x02\xff\xfe") is None  # not UTF-8
    assert named_model("/acme.Detector/Echo", b"\x0a\x07primary") is None


def test_the_status_mapping() -> None:
    assert set(HTTP_EQUIVALENT) == set(grpc.StatusCode)
    # the statuses the SLOs count as the server's are the ones that map to a 5xx
    assert {code.name for code, status in HTTP_EQUIVALENT.items() if status >= 500} \
        == set(catalog.GRPC_SERVER_ERROR_CODES)
    # every V2 method is known (its own route label), streaming ones and health too
    assert {INFER, "/inference.GRPCInferenceService/ModelStreamInfer", METADATA,
            HEALTH_CHECK} <= KNOWN_METHODS


class DyingUpstream(asyncio.Protocol):
    """An upstream process that dies once a call reaches it: its connection is reset
    without a GOAWAY, as a killed server's is."""

    def __init__(self) -> None:
        self.seen = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        # an HTTP/2 server's first words: its SETTINGS, and the ACK of the client's
        transport.write(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
                        b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")

    def data_received(self, data: bytes) -> None:
        self.seen += data
        if _has_headers(bytes(self.seen)):
            self.transport.abort()


def _has_headers(data: bytes) -> bool:
    at = 24  # after the connection preface
    while len(data) - at >= 9:
        if data[at + 3] == 1:  # HEADERS
            return True
        at += 9 + int.from_bytes(data[at:at + 3], "big")
    return False


def test_an_upstream_dying_mid_call_is_lookouts_unavailable() -> None:
    async def main() -> tuple:
        loop = asyncio.get_running_loop()
        dying = await loop.create_server(DyingUpstream, "127.0.0.1", 0)
        upstream_port = dying.sockets[0].getsockname()[1]
        metrics = SidecarMetrics("yolo", "v1", process_metrics=False)
        tracing = Tracing(TracerProvider(sampler=ALWAYS_ON), [])
        telemetry = RequestTelemetry(ModelIdentity("yolo", "v1"), metrics, tracing, None)
        port = GrpcDataPort(GrpcSettings(f"127.0.0.1:{upstream_port}", LIMIT, 2.0, 1024**2,
                                         MAX_CONNECTIONS),
                            telemetry)
        await port.start("127.0.0.1", 0, reuse_port=False)
        try:
            async with aio.insecure_channel(f"127.0.0.1:{port.port}") as channel:
                with pytest.raises(aio.AioRpcError) as raised:
                    await channel.unary_unary(INFER)(b"\x0a\x04yolo", timeout=10)
            return raised.value, _count(metrics, code="sidecar_UNAVAILABLE")
        finally:
            await port.stop(0)
            dying.close()

    error, counted = asyncio.run(main())
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert error.details().startswith("lookout: the upstream 127.0.0.1:")
    assert dict(error.trailing_metadata())[ERROR_KEY] == "upstream_unavailable"
    assert counted == 1


def test_a_client_that_does_not_speak_http2_is_refused_and_counted() -> None:
    async def scenario(channel, port, metrics, exporter, observations):
        reader, writer = await asyncio.open_connection("127.0.0.1", port.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"x" * 64)
        answer = await asyncio.wait_for(reader.read(), 10)  # then the connection ends
        writer.close()
        # and the port serves the next client
        echoed = await channel.unary_unary("/acme.Detector/Echo")(b"next", timeout=5)
        return answer, port.refusals, echoed

    answer, refusals, echoed = _run(scenario)
    assert refusals == ["bad_http2"]
    # its last words (after the upstream's SETTINGS, when they came first): PROTOCOL_ERROR
    assert answer.endswith(h2.frame(h2.GOAWAY, 0, 0, (0).to_bytes(4, "big")
                                    + (1).to_bytes(4, "big")))
    assert echoed.startswith(b"next|")


def test_a_continuation_flood_is_a_protocol_error() -> None:
    """A header block that never ends (CONTINUATION after CONTINUATION) is refused at
    64 KiB, not gathered without bound."""
    async def scenario(channel, port, metrics, exporter, observations):
        reader, writer = await asyncio.open_connection("127.0.0.1", port.port)
        writer.write(h2.PREFACE + h2.frame(h2.SETTINGS, 0, 0)
                     + h2.frame(h2.HEADERS, 0, 1, b"\x82")  # no END_HEADERS
                     + b"".join(h2.frame(h2.CONTINUATION, 0, 1, b"\x00" * 16000)
                                for _ in range(6)))
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return answer, port.refusals

    answer, refusals = _run(scenario)
    assert refusals == ["bad_http2"]
    assert h2.frame(h2.GOAWAY, 0, 0, (0).to_bytes(4, "big") + (1).to_bytes(4, "big")) \
        in answer  # PROTOCOL_ERROR


def test_connections_past_the_limit_are_closed_and_counted() -> None:
    async def scenario(channel, port, metrics, exporter, observations):
        held = [await asyncio.open_connection("127.0.0.1", port.port)
                for _ in range(MAX_CONNECTIONS)]
        await _eventually(lambda: len(port.connections) == MAX_CONNECTIONS)
        reader, refused = await asyncio.open_connection("127.0.0.1", port.port)
        closed = await asyncio.wait_for(reader.read(), 10) == b""
        refused.close()
        for _, other in held:
            other.close()
        await _eventually(lambda: not port.connections)
        echoed = await channel.unary_unary("/acme.Detector/Echo")(b"room", timeout=5)
        return closed, port.refusals, echoed

    closed, refusals, echoed = _run(scenario)
    assert closed and refusals == ["connection_limit"]
    assert echoed.startswith(b"room|")


def test_a_compressed_message_is_relayed_and_not_analysed() -> None:
    request = b"\x0a\x07primary" + b"\x3a\x04data" * 100

    async def scenario(channel, port, metrics, exporter, observations):
        answer = await channel.unary_unary(INFER)(request, timeout=5,
                                                  compression=grpc.Compression.Gzip)
        return answer, observations.taken

    answer, taken = _run(scenario)
    assert answer == b"answer"  # the upstream inflated it itself
    (observation,) = taken
    assert observation.request_body == b"" and not observation.request_truncated
