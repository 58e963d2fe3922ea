"""One exchange on the data port as the handler sees it: the parsed request with its
streaming body, the response writer, the limits a client is held to, and the errors
that refuse a request. The connection that drives them is in `http1.py`."""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from multidict import CIMultiDict

if TYPE_CHECKING:
    from lookout.sidecar.proxy.http1 import HttpConnection

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# every `reason` lookout_client_refused_total can carry: protocol refusals and limits
# here, target refusals in target.py
REFUSAL_REASONS = (
    "bad_request", "bad_version", "bad_framing", "bad_host", "bad_expectation",
    "unsupported_coding", "head_too_large", "target_too_long", "body_too_large",
    "head_timeout", "body_timeout", "keepalive_timeout", "connection_limit",
    "client_closed", "bad_target", "method_not_allowed",
    "bad_http2",  # the gRPC port: a client whose bytes are not HTTP/2
)
_BODY_HIGH_WATER = 256 * 1024  # body bytes buffered from the client before reading pauses
REASON_PHRASES = {
    400: "Bad Request", 405: "Method Not Allowed", 408: "Request Timeout",
    413: "Content Too Large", 414: "URI Too Long", 417: "Expectation Failed",
    431: "Request Header Fields Too Large", 501: "Not Implemented",
    505: "HTTP Version Not Supported",
}


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """What one client may cost; the defaults are nginx's."""

    head_timeout: float = 60.0  # the whole request head (client_header_timeout)
    body_timeout: float = 60.0  # between two reads of the body (client_body_timeout)
    keepalive_timeout: float = 75.0  # an idle connection between requests
    max_connections: int = 1024  # open client connections (worker_connections)
    max_head_bytes: int = 32 * 1024  # request line and headers together
    max_line_bytes: int = 8 * 1024  # the request line, or one header field
    max_body_bytes: int = 64 * 1024**2


class Refusal(Exception):
    """A request lookout answers itself instead of forwarding it: malformed, over a
    limit, too slow, or a target it will not forward. `reason` is the label of
    lookout_client_refused_total, `kind` the X-Lookout-Error value; status 0 means the
    client is gone and nothing can be answered."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail

    @property
    def kind(self) -> str:
        return self.reason.replace("_", "-")


class LookoutError(Protocol):
    status: int
    kind: str
    detail: str


def error_body(error: LookoutError, **context: str) -> bytes:
    """The JSON body of every response lookout makes itself, whoever makes it."""
    return json.dumps({"error": error.kind, "message": error.detail, **context,
                       "origin": "lookout"}).encode()


class RequestBody:
    """The body as it arrives, for one reader, with back-pressure on the client."""

    def __init__(self, connection: HttpConnection, expected: bool) -> None:
        self._connection = connection
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self.received = 0
        self.complete = not expected
        self.failure: Refusal | None = None
        self._waiter: asyncio.Future[None] | None = None

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self._connection.limits.max_body_bytes:
            self.fail(Refusal(413, "body_too_large", "request body exceeds the limit of "
                                f"{self._connection.limits.max_body_bytes} bytes "
                                "(max_body_bytes)"))
            return
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > _BODY_HIGH_WATER:
            self._connection.pause_body()
        self._wake()

    def finish(self) -> None:
        self.complete = True
        self._wake()

    def fail(self, error: Refusal) -> None:
        if self.failure is None and not (self.complete and not self._chunks):
            self.failure = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def take_all(self) -> bytes:
        """The whole body of a request that has fully arrived."""
        assert self.complete and self.failure is None
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        self._connection.resume_body()
        return data

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the body; raises `Refusal` when the client is too slow, too big or
        gone. A wait on the client is bounded by `body_timeout` between reads."""
        timeout = self._connection.limits.body_timeout
        while True:
            if self.failure is not None:
                raise self.failure
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._buffered <= _BODY_HIGH_WATER // 2:
                    self._connection.resume_body()
                yield chunk
                continue
            if self.complete:
                return
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._waiter, timeout)
            except TimeoutError:
                self.fail(Refusal(408, "body_timeout", "no request body data within "
                                    f"{timeout:g}s (client_body_timeout)"))
            finally:
                self._waiter = None


class IncomingRequest:
    """A parsed request head and its body stream."""

    __slots__ = ("body", "content_length", "expect_continue", "headers", "keep_alive",
                 "method", "raw_headers", "remote", "target", "upgrade", "version")

    def __init__(self, method: str, target: str, version: str, headers: CIMultiDict[str],
                 keep_alive: bool, content_length: int | None, body: RequestBody,
                 remote: str | None, expect_continue: bool, upgrade: str = "",
                 raw_headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.method, self.target, self.version = method, target, version
        self.headers, self.keep_alive = headers, keep_alive
        self.content_length, self.body, self.remote = content_length, body, remote
        self.expect_continue = expect_continue
        self.upgrade = upgrade  # the protocol a relayable `Upgrade` asks for, else ""
        self.raw_headers = raw_headers or []  # as llhttp gave them: for the hand-off


def _header_block(headers: CIMultiDict[str] | list[tuple[bytes, bytes]]) -> bytes:
    if isinstance(headers, CIMultiDict):
        return "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode(
            "utf-8", "surrogateescape")
    return b"".join([b"%b: %b\r\n" % pair for pair in headers])


class ResponseWriter:
    """Writes one response on the connection: a head, a body (length-delimited, chunked
    for HTTP/1.1 streams of unknown length, else close-delimited), and an end."""

    def __init__(self, connection: HttpConnection, request: IncomingRequest) -> None:
        self._connection = connection
        self._request = request
        self.started = False
        self.finished = False
        self._chunked = False
        self._head: bytes | None = None  # written with the first body bytes: one send
        self.close_after = not request.keep_alive

    def continue_if_expected(self) -> None:
        """The interim 100 a client that sent `Expect: 100-continue` waits for."""
        if self._request.expect_continue and not self._request.body.complete:
            self._request.expect_continue = False
            self._connection.write(CONTINUE)

    def start(self, status: int, reason: str,
              headers: CIMultiDict[str] | list[tuple[bytes, bytes]], length: int | None, *,
              body_allowed: bool = True) -> None:
        """The head, kept to go out with the first body bytes. `headers` are lookout's
        own (text) or the upstream's block as llhttp gave it (bytes, relayed exactly)."""
        if self._connection.closed:
            raise ConnectionResetError("the client closed the connection")
        if length is None and body_allowed and self._request.version != "1.1":
            self.close_after = True  # HTTP/1.0 has no chunked coding: the close ends it
        if self._connection.draining:
            self.close_after = True
        status_line = f"HTTP/1.1 {status} {reason or REASON_PHRASES.get(status, '')}".rstrip()
        block = _header_block(headers)
        lines = []
        if length is not None:
            lines.append(f"Content-Length: {length}")
        elif body_allowed and not self.close_after:
            lines.append("Transfer-Encoding: chunked")
            self._chunked = True
        if self.close_after:
            lines.append("Connection: close")
        elif self._request.version == "1.0":
            lines.append("Connection: keep-alive")
        self.started = True
        framing = "".join(f"{line}\r\n" for line in lines)
        self._head = b"%b\r\n%b%b\r\n" % (status_line.encode("latin-1"), block,
                                           framing.encode("latin-1"))

    def _send(self, data: bytes) -> None:
        head, self._head = self._head, None
        if head is None:
            self._connection.write(data)
        elif data:
            self._connection.write_many((head, data))
        else:
            self._connection.write(head)

    async def write(self, data: bytes) -> None:
        if not data:
            return
        if self._chunked:
            self._send(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self._send(data)
        await self._connection.drain()

    async def end(self) -> None:
        self._send(b"0\r\n\r\n" if self._chunked else b"")
        self.finished = True
        await self._connection.drain()

    def switch_protocols(self, reason: str,
                         headers: list[tuple[bytes, bytes]]) -> HttpConnection:
        """The upstream's 101, as it wrote it, with nothing of lookout's; the connection
        is a tunnel from here on, returned for the caller to attach."""
        status_line = f"HTTP/1.1 101 {reason or 'Switching Protocols'}".encode("latin-1")
        self.started = self.finished = True
        self.close_after = True  # when the tunnel ends, so does the connection
        self._connection.write(b"%b\r\n%b\r\n" % (status_line, _header_block(headers)))
        return self._connection

    def abort(self) -> None:
        """The honest signal when a response cannot be completed: close the connection."""
        self.close_after = True
        self._connection.close()
