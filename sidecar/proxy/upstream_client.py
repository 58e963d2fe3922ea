"""The request path's side towards the inference container, at the protocol level: a
pool of raw keep-alive HTTP/1.1 connections, the request head encoded once, bodies
written as the buffers they arrive in, responses parsed by llhttp (httptools) with the
upstream's header block kept exactly as it was written.

Why not an HTTP client library: a transparent hop must not decompress, must not add
headers, must keep header names as the server cased them, and must stream in both
directions with one read timeout between data; a client library's own request and
response objects cost more than the rest of the request path together (the profile in
docs/PERFORMANCE.md). Failures surface as `UpstreamError` carrying the sidecar's error
response (`upstream-*` kinds, 502/504), or as the client's own `Refusal` when it was the
client's body that broke the exchange.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterable
from urllib.parse import urlsplit

import httptools

from lookout.sidecar.proxy.messages import Refusal
from lookout.sidecar.proxy.tunnel import Tunnel, TunnelFlow
from lookout.sidecar.settings import UpstreamSettings

HIGH_WATER = 256 * 1024  # body bytes buffered from the upstream before reading pauses
_NO_BODY = frozenset((204, 304))


class UpstreamError(Exception):
    """The upstream gave no usable response: the sidecar answers `status` itself."""

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail


def _reset(detail: str) -> UpstreamError:
    return UpstreamError(502, "upstream-reset", f"connection closed or reset by the "
                                                f"upstream: {detail}")


class UpstreamResponse:
    """One response as it arrives: status and head at once, the body on demand."""

    __slots__ = ("_connection", "_detached", "content_length", "raw_headers", "reason",
                 "status")

    def __init__(self, connection: UpstreamConnection, status: int, reason: str,
                 raw_headers: list[tuple[bytes, bytes]], content_length: int | None) -> None:
        self._connection = connection
        self.status, self.reason = status, reason
        self.raw_headers, self.content_length = raw_headers, content_length
        self._detached = False

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def chunks(self) -> AsyncIterator[bytes]:
        connection = self._connection
        while True:
            chunk = await connection.next_chunk()
            if chunk is None:
                return
            yield chunk

    def release(self) -> None:
        """Back to the pool when the exchange ended cleanly, else closed."""
        if not self._detached:
            self._connection.finish_exchange()

    def detach(self) -> UpstreamConnection:
        """A 101's connection leaves the pool (and frees its slot) to become a tunnel."""
        self._detached = True
        connection = self._connection
        connection.pool.forget(connection)
        connection.pool.done()
        return connection


class UpstreamConnection(TunnelFlow, asyncio.Protocol):
    """One keep-alive connection; one exchange at a time."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._sender: asyncio.Task[None] | None = None
        self._tunnel: Tunnel | None = None
        self._stash = bytearray()  # tunnel bytes that came with the 101
        self._start_exchange(False)

    # --- one exchange's state -------------------------------------------------------
    def _start_exchange(self, head_only: bool, upgrade: bool = False) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._head_only = head_only
        self._upgrade = upgrade  # a 101 is this exchange's response
        self._switched = False
        self._raw: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._head: asyncio.Future[UpstreamResponse] | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._complete = False
        self._failure: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.seen_bytes = False
        self._paused = False
        self._until_close = False  # neither a length nor chunked: the close ends the body
        self._keep_alive = False

    # --- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timers()
        self._writable.set()
        self.pool.forget(self)
        if self._tunnel is not None:
            self._tunnel.closed(self)
            return
        if not self._complete:
            if self._until_close and self._head is not None and self._head.done():
                self._message_done()
            elif self._head is not None and not self._head.done():
                self._fail(_reset(str(exc) if exc else "closed before a response"))
            elif self._head is not None:  # mid-body: the response is cut short
                self._fail(UpstreamError(502, "upstream-bad-body", "malformed response "
                                         "body: the upstream closed the connection "
                                         "before the body ended"))

    def data_received(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel.from_upstream(data)
            return
        if self._switched:
            self._stash += data
            return
        self.seen_bytes = True
        self._arm_read_timeout()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self._switched:  # the 101 asked for: what follows it is the tunnel's
                offset = upgrade.args[0] if upgrade.args else len(data)
                self._stash += data[offset:]
                return
            self._fail(UpstreamError(502, "upstream-bad-response", "not a valid HTTP "
                                     "response: the upstream switched protocols unasked"))
            self.close()
        except httptools.HttpParserError as error:
            if self._head_only and self._head is not None and self._head.done():
                return  # bytes after a HEAD response's head: this connection is done
            self._fail(UpstreamError(502, "upstream-bad-response",
                                     f"not a valid HTTP response: {error}"))
            self.close()

    # --- llhttp callbacks ------------------------------------------------------------------
    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status == 101 and self._upgrade:  # the switch the client asked for
            self._switched = True
            self._cancel_timers()  # a tunnel's own idle timeout applies from here
            self._head.set_result(UpstreamResponse(self, status,
                                                   self._reason.decode("latin-1"),
                                                   self._raw, None))
            return
        if 100 <= status < 200:  # interim (103 Early Hints...): not the response
            self._raw, self._reason = [], b""
            return
        length, chunked = None, False
        for name, value in self._raw:
            lowered = name.lower()
            if lowered == b"content-length":
                length = int(value)
            elif lowered == b"transfer-encoding":
                chunked = True
        self._until_close = length is None and not chunked
        self._keep_alive = self._parser.should_keep_alive()  # only valid in the callbacks
        response = UpstreamResponse(self, status, self._reason.decode("latin-1"), self._raw,
                                    length)
        if self._head is not None and not self._head.done():
            self._head.set_result(response)
        if self._head_only or status in _NO_BODY:
            self._message_done()

    def on_body(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._head is not None and self._head.done():
            self._message_done()

    def _message_done(self) -> None:
        if not self._complete:
            self._complete = True
            self._cancel_timers()
            self._wake()

    # --- the exchange, from the handler's side -------------------------------------------
    async def exchange(self, head: bytes, body: bytes | AsyncIterator[bytes] | None,
                       chunked: bool, head_only: bool, upgrade: bool = False
                       ) -> UpstreamResponse:
        self._start_exchange(head_only, upgrade)
        self._head = self.loop.create_future()
        self._arm_read_timeout()
        if isinstance(body, bytes | bytearray | memoryview) or body is None:
            self._write(head + bytes(body or b""))
        else:
            self._write(head)
            self._sender = self.loop.create_task(self._send(body, chunked))
        return await self._head

    async def _send(self, body: AsyncIterator[bytes], chunked: bool) -> None:
        try:
            async for chunk in body:
                if chunked:
                    if chunk:
                        self._write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                else:
                    self._write(chunk)
                if not self._writable.is_set():
                    await self._writable.wait()
                if self.closed:
                    return
            if chunked:
                self._write(b"0\r\n\r\n")
        except Refusal as refused:  # the client's body broke: the client's error
            self._fail(refused)
            self.close()

    async def next_chunk(self) -> bytes | None:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused and self._buffered < HIGH_WATER // 2 and not self.closed:
                    self._paused = False
                    self.transport.resume_reading()
                return chunk
            if self._failure is not None:
                raise self._failure
            if self._complete:
                return None
            self._waiter = self.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def finish_exchange(self) -> None:
        sender_busy = self._sender is not None and not self._sender.done()
        reusable = (self._complete and self._failure is None and not sender_busy
                    and not self._head_only and not self._until_close
                    and self._keep_alive)
        self._sender = None
        if reusable and not self.closed:
            self.reused = True
            self.pool.release(self)
        else:
            self.close()
        self.pool.done()

    def attach_tunnel(self, tunnel: Tunnel) -> None:
        """After a relayed 101: bytes both ways, nothing parsed."""
        self._tunnel = tunnel
        stash, self._stash = bytes(self._stash), bytearray()
        if stash:
            tunnel.from_upstream(stash)
        if self.closed:  # it closed right after its 101 (what it sent is relayed)
            tunnel.closed(self)

    # the tunnel's side of this connection
    def write(self, data: bytes) -> None:
        self._write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # --- plumbing ------------------------------------------------------------------------
    def _fail(self, error: BaseException) -> None:
        if self._failure is None:
            self._failure = error
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def _arm_read_timeout(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(self.pool.settings.read_timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        self._fail(UpstreamError(504, "upstream-timeout", f"no response data within "
                                 f"{self.pool.settings.read_timeout:g}s (read timeout)"))
        self.close()

    def idle(self) -> None:
        self._idle_timer = self.loop.call_later(self.pool.settings.upstream_keepalive,
                                                self.close)

    def busy(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _cancel_timers(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._cancel_timers()
            self.busy()
            if self._sender is not None and not self._sender.done():
                self._sender.cancel()
            if self.transport is not None:
                self.transport.close()
            self.pool.forget(self)


class UpstreamPool:
    """Keep-alive connections to the one configured upstream, at most
    `upstream_pool_size` at a time (more requests wait for one)."""

    def __init__(self, settings: UpstreamSettings) -> None:
        self.settings = settings
        parts = urlsplit(settings.upstream)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.authority = parts.netloc
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._idle: collections.deque[UpstreamConnection] = collections.deque()
        self._open: set[UpstreamConnection] = set()
        self._slots = asyncio.Semaphore(settings.upstream_pool_size)

    async def request(self, method: str, target: str, headers: Iterable[tuple[str, str]],
                      body: bytes | AsyncIterator[bytes] | None,
                      content_length: int | None, *, upgrade: bool = False
                      ) -> UpstreamResponse:
        """Send one request; returns once the response head arrived. The caller must
        `release()` the response (or `detach()` a 101's, with `upgrade`). A reused
        connection the upstream had closed is retried once on a fresh one when the body
        can be sent again."""
        streamed = body is not None and not isinstance(body, bytes | bytearray | memoryview)
        chunked = streamed and content_length is None
        head = self._head(method, target, headers, chunked)
        await self._slots.acquire()  # given back by the response's release()
        try:
            while True:
                connection = await self._connection()
                try:
                    return await connection.exchange(head, body, chunked, method == "HEAD",
                                                     upgrade)
                except UpstreamError as error:
                    connection.close()
                    stale = connection.reused and not connection.seen_bytes
                    if not (stale and not streamed and error.kind == "upstream-reset"):
                        raise
                except BaseException:
                    connection.close()
                    raise
        except BaseException:
            self._slots.release()
            raise

    def done(self) -> None:
        """An exchange ended (its response released): its slot is free."""
        self._slots.release()

    def _head(self, method: str, target: str, headers: Iterable[tuple[str, str]],
              chunked: bool) -> bytes:
        lines = [f"{method} {target} HTTP/1.1"]
        has_host = False
        for name, value in headers:
            has_host = has_host or name.lower() == "host"
            lines.append(f"{name}: {value}")
        if not has_host:
            lines.append(f"Host: {self.authority}")
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")

    async def _connection(self) -> UpstreamConnection:
        while self._idle:
            connection = self._idle.pop()  # the most recently used: likeliest alive
            if not connection.closed:
                connection.busy()
                return connection
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(loop.create_connection(
                lambda: UpstreamConnection(self), self.host, self.port, ssl=self._ssl),
                self.settings.connect_timeout)
        except TimeoutError:
            raise UpstreamError(502, "upstream-connect-timeout", f"could not connect within "
                                f"{self.settings.connect_timeout:g}s (connect timeout)") \
                from None
        except OSError as error:
            raise UpstreamError(502, "upstream-unreachable", f"connection failed: "
                                f"{error.strerror or error}") from None
        self._open.add(connection)
        return connection

    def release(self, connection: UpstreamConnection) -> None:
        connection.idle()
        self._idle.append(connection)

    def forget(self, connection: UpstreamConnection) -> None:
        self._open.discard(connection)
        with contextlib.suppress(ValueError):
            self._idle.remove(connection)

    async def close(self) -> None:
        for connection in list(self._open):
            connection.close()
