"""The data port's HTTP/1.1 server: llhttp (httptools) parsing on the event loop, with
the limits and refusals a proxy facing hostile clients needs, and nothing else.

Why not a web framework: a reverse proxy must forward bodies byte for byte (no
decompression), stream them (no whole-body buffering), answer `100-continue` itself,
bound every wait on a client, and refuse what nginx refuses. Each of those fought a
framework's own request model; here each is a few lines. The handler contract is one
call, `handler(request, response)`, like starlette's one small interface.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
from collections.abc import Awaitable, Callable

import httptools
from multidict import CIMultiDict

from lookout.sidecar.proxy.in_flight import InFlight
from lookout.sidecar.proxy.messages import (
    REASON_PHRASES,
    ClientLimits,
    IncomingRequest,
    Refusal,
    RequestBody,
    ResponseWriter,
    error_body,
)
from lookout.sidecar.proxy.tunnel import Tunnel, TunnelFlow

log = logging.getLogger(__name__)

# RFC 3986 uri-host [":" port]: no userinfo, no path
_AUTHORITY = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(:[0-9]*)?")

Handler = Callable[[IncomingRequest, ResponseWriter], Awaitable[None]]


def _relayed_upgrade(headers: CIMultiDict[str], version: str) -> str:
    """The protocol an `Upgrade` request asks the upstream for, when it is one lookout
    relays: any but `h2c`, which is served as HTTP/1.1 (RFC 9113 section 3.1 deprecated
    it; ignoring an upgrade is every server's right)."""
    wanted = headers.get("Upgrade", "").strip()
    if not wanted or version != "1.1" or wanted.lower() == "h2c":
        return ""
    tokens = {token.strip().lower() for value in headers.getall("Connection", [])
              for token in value.split(",")}
    return wanted if "upgrade" in tokens else ""


class DataPortServer:
    """Listens, caps connections, and drains in-flight requests on shutdown."""

    def __init__(self, handler: Handler, limits: ClientLimits,
                 on_refused: Callable[[str], None]) -> None:
        self.handler = handler
        self.limits = limits
        self.on_refused = on_refused  # counts each refusal or close by its reason
        self.connections: set[HttpConnection] = set()
        self.draining = False
        self._server: asyncio.Server | None = None
        self.in_flight = InFlight()  # connections running a request

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        """`reuse_port`: this is one of several processes on the port (SO_REUSEPORT);
        the kernel spreads new connections over them."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: HttpConnection(self), host, port,
                                                reuse_address=True, reuse_port=reuse_port,
                                                backlog=1024)


    async def stop(self, grace: float) -> None:
        """Stop accepting; idle connections close now, busy ones after their response
        (each says `Connection: close`), the rest are cut after `grace` seconds."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            if not connection.busy:
                connection.close()
        await self.in_flight.drained(grace)
        for connection in list(self.connections):
            connection.close()
        if self._server is not None:
            await self._server.wait_closed()


class HttpConnection(TunnelFlow, asyncio.Protocol):
    """One client connection: parses requests, runs them one after another through the
    handler (pipelined requests wait their turn), and enforces the limits."""

    def __init__(self, server: DataPortServer) -> None:
        self.server = server
        self.limits = server.limits
        self.closed = False
        self.busy = False
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._remote: str | None = None
        self._pending: collections.deque[IncomingRequest] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._reading_paused = False
        self._body_paused = False
        self._callback_error: Refusal | None = None
        self._broken = False  # the parser failed: nothing more is read on this connection
        self._upgrading = False  # an Upgrade request awaits the upstream's answer
        self._stash = bytearray()  # what the client sent after it meanwhile
        self._tunnel: Tunnel | None = None
        self._reset_message()

    @property
    def draining(self) -> bool:
        return self.server.draining

    # --- asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's own class
        peer = transport.get_extra_info("peername")
        self._remote = peer[0] if isinstance(peer, tuple) else None
        self.server.connections.add(self)
        if len(self.server.connections) > self.limits.max_connections:
            self.server.on_refused("connection_limit")
            self.close()
            return
        self._arm("head_timeout", self.limits.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self._disarm()
        self._writable.set()
        if self._tunnel is not None:
            self._tunnel.closed(self)
        gone = Refusal(0, "client_closed", "the client closed the connection")
        if self._message is not None:
            self._message.body.fail(gone)
        for request in self._pending:
            request.body.fail(gone)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self._tunnel is not None:
            self._tunnel.from_client(data)
            return
        if self._upgrading:
            self._stash += data
            return
        if self._message is None:  # between requests: the head clock starts now
            if self._timer_reason == "keepalive_timeout":
                self._arm("head_timeout", self.limits.head_timeout)
            self._head_fed += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgraded(data, upgrade.args[0] if upgrade.args else len(data))
        except httptools.HttpParserCallbackError:
            error, self._callback_error = self._callback_error, None
            self._refuse(error or Refusal(400, "bad_request", "malformed request"))
        except httptools.HttpParserError as error:
            if "HTTP version" in str(error):  # llhttp knows only 0.9 to 2.0
                self._refuse(Refusal(505, "bad_version", f"{error}; send HTTP/1.1"))
            else:
                self._refuse(Refusal(400, "bad_request", f"malformed request: {error}"))
        else:
            if self._message is None and self._head_fed > self.limits.max_head_bytes:
                self._refuse(Refusal(431, "head_too_large", "request head exceeds "
                                           f"{self.limits.max_head_bytes} bytes"))

    # --- llhttp callbacks -----------------------------------------------------------
    def _reset_message(self) -> None:
        self._message: IncomingRequest | None = None
        self._in_head = False
        self._head_fed = 0
        self._head_size = 0
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []

    def on_message_begin(self) -> None:
        self._in_head = True
        if self._timer_reason != "head_timeout":
            self._arm("head_timeout", self.limits.head_timeout)

    def on_url(self, fragment: bytes) -> None:
        self._url += fragment
        self._grow_head(len(fragment))
        if len(self._url) > self.limits.max_line_bytes:
            raise self._fail(Refusal(414, "target_too_long", "request target exceeds "
                                           f"{self.limits.max_line_bytes} bytes"))

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a trailer of a chunked body: dropped, as nginx does
        self._grow_head(len(name) + len(value) + 4)
        if len(name) + len(value) + 2 > self.limits.max_line_bytes:
            raise self._fail(Refusal(431, "head_too_large", "a header field exceeds "
                                           f"{self.limits.max_line_bytes} bytes"))
        self._headers.append((name, value))

    def _grow_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self.limits.max_head_bytes:
            raise self._fail(Refusal(431, "head_too_large", "request head exceeds "
                                           f"{self.limits.max_head_bytes} bytes"))

    def _fail(self, error: Refusal) -> Refusal:
        self._callback_error = error
        return error

    def on_headers_complete(self) -> None:
        try:
            request = self._build_request()
        except Refusal as error:
            raise self._fail(error) from None
        self._in_head = False
        self._head_fed = 0
        self._message = request
        self._disarm()
        self._pending.append(request)
        if len(self._pending) > 1:
            self._pause_reading()  # a pipelined request: read no further until its turn
        self._run()

    def on_body(self, chunk: bytes) -> None:
        if self._message is not None:
            self._message.body.feed(chunk)

    def on_message_complete(self) -> None:
        if self._message is not None:
            self._message.body.finish()
            if not self._message.keep_alive:
                self._pause_reading()
        self._reset_message()

    def _build_request(self) -> IncomingRequest:
        version = self._parser.get_http_version()
        if version not in ("1.0", "1.1"):
            if version == "0.9":
                raise Refusal(400, "bad_version", "HTTP/0.9 is not supported")
            raise Refusal(505, "bad_version", f"HTTP/{version} is not supported on "
                                "this port; send HTTP/1.1")
        headers: CIMultiDict[str] = CIMultiDict()
        try:  # the upstream client writes text headers as UTF-8: other bytes would change
            for name, value in self._headers:
                headers.add(name.decode("ascii"), value.decode("utf-8"))
        except UnicodeDecodeError:
            raise Refusal(400, "bad_request", "a header value is not UTF-8 text") \
                from None
        coding = headers.getall("Transfer-Encoding", [])
        chunked = bool(coding)
        if coding:
            if version == "1.0":
                raise Refusal(400, "bad_framing", "Transfer-Encoding on HTTP/1.0")
            if [token.strip().lower() for token in ",".join(coding).split(",")] != ["chunked"]:
                raise Refusal(501, "unsupported_coding",
                                    "only the chunked transfer coding is supported")
        hosts = headers.getall("Host", [])
        if len(hosts) > 1 or (version == "1.1" and not hosts):
            raise Refusal(400, "bad_host", "exactly one Host header is required")
        if hosts and not _AUTHORITY.fullmatch(hosts[0]):
            raise Refusal(400, "bad_host", "the Host header is not host[:port]")
        length = None if chunked else self._parser_content_length(headers)
        if length is not None and length > self.limits.max_body_bytes:
            raise Refusal(413, "body_too_large", f"request body of {length} bytes "
                                f"exceeds the limit of {self.limits.max_body_bytes} bytes "
                                "(max_body_bytes)")
        expect = headers.get("Expect")
        if expect is not None and expect.strip().lower() != "100-continue":
            raise Refusal(417, "bad_expectation", "only Expect: 100-continue is "
                                "supported")
        has_body = chunked or bool(length)
        method = self._parser.get_method().decode("ascii")
        keep_alive = self._parser.should_keep_alive() and not self.draining
        return IncomingRequest(
            method, self._url.decode("ascii"), version, headers, keep_alive, length,
            RequestBody(self, has_body), self._remote,
            expect is not None and has_body and version == "1.1",
            _relayed_upgrade(headers, version), self._headers,
        )

    @staticmethod
    def _parser_content_length(headers: CIMultiDict[str]) -> int | None:
        value = headers.get("Content-Length")
        return int(value) if value is not None else None  # llhttp validated the digits

    def _upgraded(self, data: bytes, offset: int) -> None:
        """llhttp stops at an `Upgrade` or CONNECT request. lookout upgrades nothing: a
        bodiless request is served as a plain one (Upgrade is hop-by-hop) and parsing
        resumes after it; one with a body cannot be framed and is refused."""
        request = self._pending[-1] if self._pending else None
        if request is not None and request.method == "CONNECT":
            request.keep_alive = False  # what follows is tunnel data: nothing to parse
            self._pause_reading()
            return
        if request is None or request.content_length or "Transfer-Encoding" in request.headers:
            self._refuse(Refusal(400, "bad_request", "an Upgrade request with a body "
                                       "is not supported"))
            return
        if request.upgrade:  # the upstream decides; what follows waits for its answer
            self._upgrading = True
            self._stash += data[offset:]
            self._pause_reading()
            return
        self._parser = httptools.HttpRequestParser(self)
        self._reset_message()
        if offset < len(data):
            self.data_received(data[offset:])

    def attach_tunnel(self, tunnel: Tunnel) -> None:
        """The upstream switched protocols: from now on bytes, not requests."""
        self._tunnel, self._upgrading = tunnel, False
        self._disarm()
        stash, self._stash = bytes(self._stash), bytearray()
        if stash:
            tunnel.from_client(stash)
        if self.closed:  # the client left while the upstream answered
            tunnel.closed(self)
            return
        self.resume_reading()

    # --- running requests -------------------------------------------------------------
    def _run(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._serve_pending())

    async def _serve_pending(self) -> None:
        while self._pending and not self.closed:
            request = self._pending[0]
            self.busy = True
            self.server.in_flight.started()
            response = ResponseWriter(self, request)
            try:
                await self.server.handler(request, response)
            except Exception:
                log.exception("the request handler failed")
                response.abort()
            finally:
                self._pending.popleft()
                self.busy = False
                self.server.in_flight.ended()
            if (response.close_after or self._broken or self.draining
                    or not request.body.complete or not response.finished):
                self.close()  # an unread body cannot be told from the next request
                return
            self._resume_reading()
        if not self.closed:
            if self.draining:
                self.close()
            elif self._message is None and not self._in_head:
                self._arm("keepalive_timeout", self.limits.keepalive_timeout)

    def refuse_response(self, error: Refusal) -> bytes:
        """A sidecar-made error response for a request the handler never saw."""
        body = error_body(error)
        return (f"HTTP/1.1 {error.status} {REASON_PHRASES.get(error.status, '')}\r\n"
                f"X-Lookout-Error: {error.kind}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body

    def _refuse(self, error: Refusal, *, answer: bool = True) -> None:
        """Refuse at the protocol level: counted, answered when no response has begun,
        and the connection closed (the framing can no longer be trusted)."""
        self.server.on_refused(error.reason)
        self._broken = True
        if self._message is not None:
            self._message.body.fail(error)
        if answer and not self.busy and not self.closed:
            self.write(self.refuse_response(error))
        self._pause_reading()
        if not self.busy:
            self.close()

    def _timed_out(self) -> None:
        reason = self._timer_reason
        self._timer = None
        self._timer_reason = ""
        if reason == "keepalive_timeout":
            self.server.on_refused(reason)
            self.close()
            return
        partial = self._in_head or self._head_fed > 0
        if partial:
            self._refuse(Refusal(408, reason, "the request head was not received "
                                       f"within {self.limits.head_timeout:g}s "
                                       "(client_header_timeout)"))
        else:
            self.server.on_refused(reason)
            self.close()

    # --- plumbing ---------------------------------------------------------------------
    _timer_reason = ""

    def _arm(self, reason: str, delay: float) -> None:
        self._disarm()
        self._timer_reason = reason
        self._timer = asyncio.get_running_loop().call_later(delay, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_reason = ""

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self.closed:
            self._transport.write(data)

    def write_many(self, parts: tuple[bytes, ...]) -> None:
        """Several buffers in one send (uvloop writes them with one writev)."""
        if self._transport is not None and not self.closed:
            self._transport.writelines(parts)

    async def drain(self) -> None:
        if not self._writable.is_set():
            await self._writable.wait()
        if self.closed:
            raise ConnectionResetError("the client closed the connection")

    def pause_body(self) -> None:
        self._body_paused = True
        self._pause_reading()

    def resume_body(self) -> None:
        if self._body_paused:
            self._body_paused = False
            if len(self._pending) <= 1:
                self._resume_reading()

    def pause_reading(self) -> None:  # a tunnel's flow control
        self._pause_reading()

    def resume_reading(self) -> None:
        self._resume_reading()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self._transport is not None and not self.closed:
            self._reading_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self._transport is not None and not self.closed:
            self._reading_paused = False
            self._transport.resume_reading()

    def close(self) -> None:
        if self._transport is not None and not self.closed:
            self.closed = True
            self._disarm()
            self._transport.close()
