"""A relayed protocol switch: after the upstream answered an `Upgrade` request (a
WebSocket handshake, say) with 101, the client's connection and the upstream's carry
bytes both ways, unparsed and unobserved, until either side closes or nothing moves for
`idle_timeout` (nginx's proxy_read_timeout does the same for its tunnels).

Flow control is end to end: a side whose writes back up pauses reading from the other.
`h2c` is not relayed: that upgrade is served as HTTP/1.1, as RFC 9113 lets a server do.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class TunnelEnd(Protocol):
    """One connection's side of the tunnel, client's or upstream's."""

    def write(self, data: bytes) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...


class TunnelFlow:
    """The writing side of a connection protocol that can become a tunnel's end: its
    own writers wait on `_writable`; once a tunnel, the other end stops reading."""

    _writable: asyncio.Event
    _tunnel: Tunnel | None

    def pause_writing(self) -> None:
        self._writable.clear()
        if self._tunnel is not None:
            self._tunnel.blocked(self)

    def resume_writing(self) -> None:
        self._writable.set()
        if self._tunnel is not None:
            self._tunnel.unblocked(self)


class Tunnel:
    def __init__(self, client: TunnelEnd, upstream: TunnelEnd, idle_timeout: float) -> None:
        self._client, self._upstream = client, upstream
        self._idle_timeout = idle_timeout
        self._loop = asyncio.get_running_loop()
        self._done = self._loop.create_future()
        self._last = self._loop.time()
        self.bytes_up = 0  # client to upstream
        self.bytes_down = 0
        self._timer = self._loop.call_later(idle_timeout, self._check_idle)

    # --- bytes -----------------------------------------------------------------------
    def from_client(self, data: bytes) -> None:
        self._last = self._loop.time()
        self.bytes_up += len(data)
        self._upstream.write(data)

    def from_upstream(self, data: bytes) -> None:
        self._last = self._loop.time()
        self.bytes_down += len(data)
        self._client.write(data)

    # --- flow control: `side` can no longer take writes, or can again -----------------
    def blocked(self, side: TunnelEnd) -> None:
        self._other(side).pause_reading()

    def unblocked(self, side: TunnelEnd) -> None:
        self._other(side).resume_reading()

    def _other(self, side: TunnelEnd) -> TunnelEnd:
        return self._upstream if side is self._client else self._client

    # --- the end -----------------------------------------------------------------------
    def closed(self, side: TunnelEnd) -> None:
        """One side went away: the other is closed after what it was sent is written."""
        self._finish()
        self._other(side).close()

    def _check_idle(self) -> None:
        if self._done.done():
            return
        quiet_until = self._last + self._idle_timeout
        if self._loop.time() >= quiet_until:
            self.close()
            return
        self._timer = self._loop.call_at(quiet_until, self._check_idle)

    def close(self) -> None:
        """Both sides now (the sidecar is stopping and the grace is over)."""
        self._client.close()
        self._upstream.close()
        self._finish()

    def _finish(self) -> None:
        self._timer.cancel()
        if not self._done.done():
            self._done.set_result(None)

    async def wait(self) -> None:
        await asyncio.shield(self._done)
