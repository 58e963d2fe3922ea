"""The admin port's connections, bounded: a cap, a head timeout and an idle timeout.

aiohttp accepts every connection and waits for a head as long as its keep-alive timer
allows, so idle sockets could take every file descriptor of the lookout process (and
with them the upstream probe and `/metrics`). `ConnectionGate` wraps the server's
protocol factory and counts connections itself. At the cap, a new connection takes the
place of the one idle the longest (a Prometheus keep-alive left open, a socket that
never spoke), then of the slowest head; only when every connection is busy with a
request is the new one closed. A head that has not arrived whole within `head_timeout`
(a body too: the login form's) and a connection idle for `idle_timeout` are closed by
the gate's own timers.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

SHED = "shed_idle"  # an idle connection closed to make room for a new one
REFUSED = "at_capacity"  # a new connection closed: every other one is busy
HEAD_TIMEOUT = "head_timeout"  # a head (or a body) that did not arrive whole in time
IDLE_TIMEOUT = "idle_timeout"  # nothing asked for idle_timeout seconds
CLOSE_REASONS = (SHED, REFUSED, HEAD_TIMEOUT, IDLE_TIMEOUT)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class AdminLimits:
    """The admin port's limits (`settings.of(AdminLimits, config)`)."""

    admin_max_connections: int
    admin_head_timeout: float
    admin_idle_timeout: float


class _Connection(asyncio.Protocol):
    """aiohttp's protocol for one connection, watched by the gate."""

    def __init__(self, inner: asyncio.Protocol, gate: ConnectionGate) -> None:
        self.inner = inner
        self.gate = gate
        self.transport: asyncio.BaseTransport | None = None
        self.busy = 0  # requests being handled
        self.since = 0.0  # when it became idle, or began its head

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if self.gate.admit(self):
            self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.gate.heard(self)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.gate.forget(self):
            self.inner.connection_lost(exc)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # the descriptor now, not after a lingering close


class ConnectionGate:
    """Counts the admin port's connections and closes what the limits say. Runs on the
    event loop only; `closed` is told each connection it closes, by reason."""

    def __init__(self, limits: AdminLimits, closed: Callable[[str], None]) -> None:
        self.limits = limits
        self._closed = closed
        self._idle: OrderedDict[_Connection, None] = OrderedDict()  # oldest first
        self._heads: OrderedDict[_Connection, None] = OrderedDict()  # head begun, oldest first
        self._busy: set[_Connection] = set()
        self._by_transport: dict[Any, _Connection] = {}
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def open(self) -> int:
        return len(self._idle) + len(self._heads) + len(self._busy)

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Connection(inner(), self)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def admit(self, connection: _Connection) -> bool:
        """A new connection: room is made for it, or it is closed."""
        if self.open >= self.limits.admin_max_connections:
            victims = self._idle or self._heads
            if not victims:
                self._closed(REFUSED)
                connection.close()
                return False
            victim = next(iter(victims))
            self._drop(victim)
            self._closed(SHED)
            victim.close()
        connection.since = self._now()
        self._idle[connection] = None
        self._by_transport[connection.transport] = connection
        self._start_sweeping()
        return True

    def heard(self, connection: _Connection) -> None:
        """Bytes from an idle connection begin a head, which the head timeout bounds."""
        if connection in self._idle:
            del self._idle[connection]
            connection.since = self._now()
            self._heads[connection] = None

    def forget(self, connection: _Connection) -> bool:
        """The connection is gone; whether aiohttp ever saw it."""
        known = self._by_transport.pop(connection.transport, None) is connection
        self._drop(connection)
        return known

    def _drop(self, connection: _Connection) -> None:
        self._idle.pop(connection, None)
        self._heads.pop(connection, None)
        self._busy.discard(connection)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A request's head arrived: busy until it is answered, then idle again."""
        connection = self._by_transport.get(request.transport)
        if connection is None:
            return await handler(request)
        self._idle.pop(connection, None)
        self._heads.pop(connection, None)
        self._busy.add(connection)
        connection.busy += 1
        try:
            if request.can_read_body:  # the login form: whole within the head's time too
                try:
                    async with asyncio.timeout(self.limits.admin_head_timeout):
                        await request.read()  # kept: the handler reads it again
                except TimeoutError:
                    self._closed(HEAD_TIMEOUT)
                    connection.close()
                    raise web.HTTPRequestTimeout() from None
            return await handler(request)
        finally:
            connection.busy -= 1
            if connection.busy == 0 and connection in self._busy:
                self._busy.discard(connection)
                connection.since = self._now()
                self._idle[connection] = None
                self._start_sweeping()

    def _start_sweeping(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        limits = self.limits
        interval = min(max(min(limits.admin_head_timeout, limits.admin_idle_timeout) / 4,
                           0.05), 1.0)
        while self._idle or self._heads:
            await asyncio.sleep(interval)
            now = self._now()
            for waiting, timeout, reason in (
                    (self._heads, limits.admin_head_timeout, HEAD_TIMEOUT),
                    (self._idle, limits.admin_idle_timeout, IDLE_TIMEOUT)):
                while waiting:
                    oldest = next(iter(waiting))
                    if now - oldest.since < timeout:
                        break
                    self._drop(oldest)
                    self._closed(reason)
                    oldest.close()

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()


class GatedSite(web.TCPSite):
    """A TCPSite whose connections pass through a `ConnectionGate`."""

    def __init__(self, runner: web.AppRunner, host: str, port: int,
                 gate: ConnectionGate) -> None:
        super().__init__(runner, host, port)
        self._gate = gate

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._gate.factory(server), self._host, self._port,
            backlog=self._backlog, reuse_address=self._reuse_address,
            reuse_port=self._reuse_port)
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
