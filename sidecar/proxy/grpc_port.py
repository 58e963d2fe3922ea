"""The gRPC data port: every method of the upstream's, relayed as bytes.

grpc.aio serves the port through one generic handler whose (de)serialisers are the
identity, so messages stay the bytes the client sent and the request path needs no
schema: whatever method the upstream has works through lookout. The Open Inference
Protocol's unary methods take grpc.aio's unary path (one message each way, its cheapest);
every other method, streaming or unknown, is relayed as a bidirectional stream, which
carries all four kinds on the wire. Metadata goes upstream as received, with lookout's
trace context in place of the caller's; the caller's deadline becomes the upstream call's;
the upstream's initial metadata, messages, status, details and trailers come back as
they were sent.

Statuses lookout makes itself carry a `lookout-error` trailer naming the cause, details
that start with `lookout:`, and a `sidecar_`-prefixed `code` label, as on HTTP:
UNAVAILABLE when the upstream cannot be reached, RESOURCE_EXHAUSTED for a message over
`grpc_max_message_bytes`, DEADLINE_EXCEEDED when lookout's own `read_timeout` (for a
unary call the caller gave no shorter deadline) ran out first.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from grpc import aio
from multidict import CIMultiDict

from lookout.sidecar.pipeline.protos import (
    INFER_METHOD,
    METHOD_KINDS,
    SERVICE,
    STREAM_INFER_METHOD,
)
from lookout.sidecar.pipeline.raw_headers import RawHeaders
from lookout.sidecar.proxy.grpc_status import HTTP_EQUIVALENT, number
from lookout.sidecar.proxy.routes import OTHER_ROUTE
from lookout.sidecar.proxy.telemetry import GRPC, Exchange, RequestTelemetry, UpstreamCall
from lookout.sidecar.settings import GrpcSettings
from lookout.slo.catalog import sidecar_code

log = logging.getLogger(__name__)

ERROR_KEY = "lookout-error"  # the trailer on a status lookout made, like X-Lookout-Error
GRPC_CONTENT_TYPE = (b"content-type", b"application/grpc")
MAX_MESSAGE_CEILING = 2**31 - 1  # gRPC's own largest message
# methods whose request's field 1 is the model's name (and field 2 its version)
NAMED_MODEL_METHODS = frozenset(f"/{SERVICE}/{name}" for name in (
    "ModelInfer", "ModelStreamInfer", "ModelReady", "ModelMetadata", "ModelConfig",
    "ModelStatistics"))
# the methods whose messages are analysed (the others carry no image nor detections)
OBSERVED_METHODS = frozenset((INFER_METHOD, STREAM_INFER_METHOD))
PAIRED_METHODS = frozenset((STREAM_INFER_METHOD,))  # each request answered in order
MAX_PENDING = 64  # stream requests kept for pairing with their responses, at most
MAX_NAME_BYTES = 255
# a cancellation this close to the caller's deadline is that deadline passing: the
# caller's RST_STREAM can arrive before the server's own copy of the deadline fires
DEADLINE_SLACK = 0.25


class LookoutStatus(Exception):
    """A status lookout sends itself instead of relaying the upstream's."""

    def __init__(self, code: grpc.StatusCode, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.kind, self.detail = code, kind, f"lookout: {detail}"


def named_model(method: str, message: bytes) -> str | None:
    """The model a request names, read from its first field the way it is serialised
    (field order by number, as every protobuf encoder writes it): a bounded peek at most
    MAX_NAME_BYTES long, not a parse. None when the method or the bytes name none."""
    if method not in NAMED_MODEL_METHODS or len(message) < 2 or message[0] != 0x0A:
        return None
    length, start = message[1], 2
    if length & 0x80:  # a two-byte varint: names up to 16 KiB, of which we take 255
        if len(message) < 3:
            return None
        length, start = (length & 0x7F) | (message[2] << 7), 3
    if length == 0 or length > MAX_NAME_BYTES or start + length > len(message):
        return None
    try:
        return message[start:start + length].decode("utf-8")
    except UnicodeDecodeError:
        return None


def client_address(peer: str) -> str | None:
    """`ipv4:10.0.0.1:5555` or `ipv6:[::1]:5555` -> the address alone."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    host = rest.rpartition(":")[0]
    return host.strip("[]") or None


def _message_limit(limit: int) -> int:
    """grpc's own bound, above lookout's: a message between the two is read whole and
    refused by lookout with a clear, counted status; one past both is refused by grpc
    before it is buffered."""
    return min(2 * limit, MAX_MESSAGE_CEILING)


class GrpcDataPort(grpc.GenericRpcHandler):
    """The gRPC port of one request-path process, from the client's call to the
    upstream's."""

    def __init__(self, settings: GrpcSettings, telemetry: RequestTelemetry,
                 routes: Sequence[str] = ()) -> None:
        self._settings = settings
        self._telemetry = telemetry
        self._limit = settings.grpc_max_message_bytes
        self._observe = settings.observe_max_bytes
        host, _, port = settings.grpc_upstream.rpartition(":")
        self._host, self._port = host.strip("[]"), int(port)
        wire_limit = _message_limit(self._limit)
        keepalive_ms = int(settings.grpc_keepalive * 1000)
        self.channel = aio.insecure_channel(settings.grpc_upstream, options=[
            ("grpc.max_receive_message_length", wire_limit),
            ("grpc.max_send_message_length", wire_limit),
            ("grpc.keepalive_time_ms", keepalive_ms),
            ("grpc.keepalive_timeout_ms", int(settings.connect_timeout * 1000) + 1000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            # the upstream is in the pod: after a restart, be back within a second
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ])
        self._wire_limit = wire_limit
        self.address = settings.grpc_upstream
        self._known_routes = frozenset(routes) or frozenset(METHOD_KINDS)
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}
        self._dropped = frozenset(("user-agent", *telemetry.propagation_fields))
        self._server: aio.Server | None = None

    async def start(self, host: str, port: int, *, reuse_port: bool) -> None:
        """Bind and serve; an address that cannot be bound raises OSError."""
        server = aio.server(options=[
            ("grpc.max_receive_message_length", self._wire_limit),
            ("grpc.max_send_message_length", self._wire_limit),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ])
        server.add_generic_rpc_handlers((self,))
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as error:  # grpc says "Failed to bind" with no errno
            raise OSError(f"cannot bind {address}: {error}") from None
        if not bound:
            raise OSError(f"cannot bind {address}")
        self.port = bound
        await server.start()
        self._server = server

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let in-flight ones finish within `grace`, close the channel."""
        if self._server is not None:
            await self._server.stop(grace)
        await self.channel.close()

    # grpc.GenericRpcHandler
    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method
        handler = self._handlers.get(method)
        if handler is None:
            handler = self._handler(method)
            if method in METHOD_KINDS:  # unknown methods are not kept: they are unbounded
                self._handlers[method] = handler
        return handler

    def _handler(self, method: str) -> grpc.RpcMethodHandler:
        route = method if method in self._known_routes else OTHER_ROUTE
        if METHOD_KINDS.get(method) == (False, False):
            upstream = self.channel.unary_unary(method)

            async def unary(request: bytes, context: aio.ServicerContext) -> bytes | None:
                return await self._unary(method, route, upstream, request, context)
            return grpc.unary_unary_rpc_method_handler(unary)
        streams = self.channel.stream_stream(method)

        async def stream(requests: AsyncIterator[bytes], context: aio.ServicerContext) -> None:
            await self._stream(method, route, streams, requests, context)
        return grpc.stream_stream_rpc_method_handler(stream)

    def _exchange(self, method: str, route: str, context: aio.ServicerContext,
                  first: bytes | None) -> tuple[Exchange, list[tuple[str, Any]]]:
        """The exchange, labelled and sampled, and the metadata to send upstream."""
        received = context.invocation_metadata() or ()
        raw = [GRPC_CONTENT_TYPE]
        text: CIMultiDict[str] = CIMultiDict()
        forwarded: list[tuple[str, Any]] = []
        for key, value in received:
            if isinstance(value, str):
                text.add(key, value)
                raw.append((key.encode(), value.encode("utf-8", "surrogateescape")))
            else:
                raw.append((key.encode(), value))
            if key not in self._dropped:
                forwarded.append((key, value))
        exchange = Exchange("POST", method, route, RawHeaders(raw), protocol=GRPC,
                            named_model=named_model(method, first) if first else None)
        self._telemetry.begin(exchange, text, scheme="http", protocol_version="2",
                              client_address=client_address(context.peer()))
        return exchange, forwarded

    def _call(self, exchange: Exchange, forwarded: list[tuple[str, Any]]) -> UpstreamCall:
        """The upstream call's facts; lookout's trace context joins the metadata."""
        context: dict[str, str] = {}
        call = self._telemetry.upstream_call(exchange, exchange.path, self._host, self._port,
                                             context)
        forwarded.extend(context.items())
        return call

    def _timeout(self, context: aio.ServicerContext, unary: bool) -> tuple[float | None, bool]:
        """The upstream call's timeout, and whether it is lookout's rather than the
        caller's deadline."""
        remaining = context.time_remaining()
        if unary and (remaining is None or remaining > self._settings.read_timeout):
            return self._settings.read_timeout, True
        return remaining, False

    def _check(self, message: bytes, what: str) -> None:
        if len(message) > self._limit:
            raise LookoutStatus(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{what}_too_large",
                                f"{what} message of {len(message)} bytes is larger than "
                                f"grpc_max_message_bytes ({self._limit})")

    async def _unary(self, method: str, route: str, upstream: aio.UnaryUnaryMultiCallable,
                     request: bytes, context: aio.ServicerContext) -> bytes | None:
        exchange, forwarded = self._exchange(method, route, context, request)
        exchange.request_bytes = len(request)
        call_facts: UpstreamCall | None = None
        call: aio.UnaryUnaryCall | None = None
        try:
            self._check(request, "request")
            observed = method in OBSERVED_METHODS
            if observed and len(request) <= self._observe:
                exchange.request_body = request
            elif observed:
                exchange.request_truncated = True
            timeout, own = self._timeout(context, unary=True)
            call_facts = self._call(exchange, forwarded)
            started = asyncio.get_running_loop().time()
            call = upstream(request, metadata=forwarded, timeout=timeout)
            try:
                response = await call
                initial = await call.initial_metadata()
                trailing = await call.trailing_metadata()
            except aio.AioRpcError as error:
                raise self._relayed(error, own) from None
            finally:
                exchange.upstream_duration = asyncio.get_running_loop().time() - started
                self._telemetry.end_call(call_facts)
            self._answered(exchange, call_facts, grpc.StatusCode.OK)
            self._check(response, "response")
            exchange.response_bytes = len(response)
            exchange.response_headers = self._response_headers(initial)
            if observed and len(response) <= self._observe:
                exchange.response_body = response
            elif observed:
                exchange.truncated = True
            if initial:
                await context.send_initial_metadata(tuple(initial))
            if trailing:
                context.set_trailing_metadata(tuple(trailing))
            return response
        except _Relayed as relayed:
            await self._send_status(context, exchange, call_facts, relayed)
        except LookoutStatus as status:
            await self._send_status(context, exchange, call_facts, status)
        except asyncio.CancelledError:
            self._cancelled(exchange, call, context)
            raise
        finally:
            self._telemetry.finish(exchange)
        return None

    async def _stream(self, method: str, route: str, upstream: aio.StreamStreamMultiCallable,
                      requests: AsyncIterator[bytes], context: aio.ServicerContext) -> None:
        exchange, forwarded = self._exchange(method, route, context, None)
        timeout, own = self._timeout(context, unary=False)
        call_facts = self._call(exchange, forwarded)
        started = asyncio.get_running_loop().time()
        call = upstream(metadata=forwarded, timeout=timeout)
        pending: deque[bytes] | None = deque(maxlen=MAX_PENDING) \
            if method in PAIRED_METHODS else None
        refused: list[LookoutStatus] = []
        pump = asyncio.get_running_loop().create_task(
            self._pump(requests, call, exchange, pending, refused))
        headers_sent = False
        try:
            try:
                initial = await call.initial_metadata()
                if initial:
                    await context.send_initial_metadata(tuple(initial))
                    headers_sent = True
                exchange.response_headers = self._response_headers(initial)
                async for message in call:
                    self._check(message, "response")
                    exchange.response_bytes += len(message)
                    await context.write(message)
                    if pending:
                        self._pair(exchange, pending.popleft(), message)
                trailing = await call.trailing_metadata()
            except aio.AioRpcError as error:
                if refused:
                    raise refused[0] from None
                raise self._relayed(error, own) from None
            except asyncio.CancelledError:
                if not refused:  # the client went away (or the server is stopping)
                    raise
                raise refused[0] from None
            finally:
                exchange.upstream_duration = asyncio.get_running_loop().time() - started
                self._telemetry.end_call(call_facts)
            if refused:
                raise refused[0]
            self._answered(exchange, call_facts, grpc.StatusCode.OK)
            if trailing:
                context.set_trailing_metadata(tuple(trailing))
        except _Relayed as relayed:
            await self._send_status(context, exchange, call_facts, relayed, headers_sent)
        except LookoutStatus as status:
            call.cancel()
            await self._send_status(context, exchange, call_facts, status)
        except asyncio.CancelledError:
            self._cancelled(exchange, call, context)
            raise
        finally:
            pump.cancel()
            self._telemetry.finish(exchange)

    async def _pump(self, requests: AsyncIterator[bytes], call: aio.StreamStreamCall,
                    exchange: Exchange, pending: deque[bytes] | None,
                    refused: list[LookoutStatus]) -> None:
        """The client's messages, written upstream as they come; a refused one ends the
        upstream call."""
        try:
            async for message in requests:
                self._check(message, "request")
                exchange.request_bytes += len(message)
                if pending is not None:
                    pending.append(message if len(message) <= self._observe else b"")
                await call.write(message)
            await call.done_writing()
        except LookoutStatus as status:
            refused.append(status)
            call.cancel()
        except (aio.AioRpcError, asyncio.InvalidStateError):
            pass  # the upstream call ended first: its status says why

    def _pair(self, exchange: Exchange, request: bytes, response: bytes) -> None:
        if request and len(response) <= self._observe:
            self._telemetry.observe_message(exchange, request, response)

    @staticmethod
    def _response_headers(initial: Any) -> RawHeaders:
        raw = [GRPC_CONTENT_TYPE]
        for key, value in initial or ():
            raw.append((key.encode(), value if isinstance(value, bytes)
                        else value.encode("utf-8", "surrogateescape")))
        return RawHeaders(raw)

    def _relayed(self, error: aio.AioRpcError, own_timeout: bool) -> Exception:
        """The upstream call's failure as the status to send: the upstream's own,
        relayed, or lookout's when it could not reach the upstream or its own timeout
        ran out."""
        code = error.code()
        if code is grpc.StatusCode.UNAVAILABLE and \
                self.channel.get_state() is not grpc.ChannelConnectivity.READY:
            return LookoutStatus(code, "upstream_unavailable",
                                 f"the upstream {self._settings.grpc_upstream} is "
                                 f"unavailable: {error.details()}")
        if code is grpc.StatusCode.DEADLINE_EXCEEDED and own_timeout:
            return LookoutStatus(code, "upstream_timeout",
                                 f"no answer from the upstream within read_timeout "
                                 f"({self._settings.read_timeout:g}s)")
        return _Relayed(error)

    def _answered(self, exchange: Exchange, call: UpstreamCall | None,
                  code: grpc.StatusCode) -> None:
        exchange.grpc_status = number(code)
        exchange.status = HTTP_EQUIVALENT[code]
        exchange.code = code.name
        if call is not None:
            call.grpc_status, call.status = exchange.grpc_status, exchange.status

    async def _send_status(self, context: aio.ServicerContext, exchange: Exchange,
                           call: UpstreamCall | None, status: Exception,
                           headers_sent: bool = False) -> None:
        """Send a failed call's status: the upstream's unchanged, or lookout's own."""
        if isinstance(status, _Relayed):
            error = status.error
            self._answered(exchange, call, error.code())
            initial = error.initial_metadata()
            if initial and not headers_sent:
                await context.send_initial_metadata(tuple(initial))
            await context.abort(error.code(), error.details() or "",
                                tuple(error.trailing_metadata() or ()))
            return
        assert isinstance(status, LookoutStatus)
        exchange.grpc_status = number(status.code)
        exchange.status = HTTP_EQUIVALENT[status.code]
        exchange.code = sidecar_code(status.code.name)
        exchange.error_kind = status.kind
        if call is not None and status.kind.startswith("upstream"):
            self._telemetry.upstream_failure(call, status.kind, status.detail)
        await context.abort(status.code, status.detail, ((ERROR_KEY, status.kind),))

    @staticmethod
    def _cancelled(exchange: Exchange, call: Any, context: aio.ServicerContext) -> None:
        """The client cancelled, or its deadline passed while the upstream worked (the
        upstream's DEADLINE_EXCEEDED, as the caller sees it): so is the upstream call."""
        if call is not None:
            call.cancel()
        if exchange.code:
            return
        remaining = context.time_remaining()
        if remaining is not None and remaining <= DEADLINE_SLACK:
            code, exchange.code = grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"
        else:
            code = grpc.StatusCode.CANCELLED
            exchange.code = sidecar_code(code.name)
        exchange.grpc_status, exchange.status = number(code), HTTP_EQUIVALENT[code]


class _Relayed(Exception):
    """The upstream's failed status, to be relayed as it is."""

    def __init__(self, error: aio.AioRpcError) -> None:
        super().__init__(error.details())
        self.error = error

