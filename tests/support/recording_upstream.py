"""An upstream that records exactly what reaches it, and a decoy that must never be
reached: the two ends of the data-port security tests. Both run in a thread of the
test process, on loopback, parsing with llhttp (httptools) like any real server."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

import httptools


@dataclass
class Recorded:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes = b""


@dataclass
class _Parsing:
    target: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)


class _RecordingProtocol(asyncio.Protocol):
    def __init__(self, owner: RecordingUpstream) -> None:
        self.owner = owner
        self.parser = httptools.HttpRequestParser(self)
        self.current = _Parsing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
            self.transport.close()

    def on_url(self, fragment: bytes) -> None:
        self.current.target += fragment

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, chunk: bytes) -> None:
        self.current.body += chunk

    def on_message_complete(self) -> None:
        parsed, self.current = self.current, _Parsing()
        record = Recorded(self.parser.get_method().decode(), parsed.target.decode("latin-1"),
                          parsed.headers, bytes(parsed.body))
        with self.owner.lock:
            self.owner.requests.append(record)
        body = b"" if record.method == "HEAD" else b"recorded-ok"
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: 11\r\n\r\n" + body)


class _DecoyProtocol(asyncio.Protocol):
    def __init__(self, owner: RecordingUpstream) -> None:
        self.owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        with self.owner.lock:
            self.owner.decoy_connections += 1
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        with self.owner.lock:
            self.owner.decoy_bytes += len(data)
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nevil-ok")


class RecordingUpstream:
    """`port` records every request; `decoy_port` counts every connection and byte."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[Recorded] = []
        self.decoy_connections = 0
        self.decoy_bytes = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="recording")
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def listen() -> None:
            upstream = await self._loop.create_server(lambda: _RecordingProtocol(self),
                                                      "127.0.0.1", 0)
            decoy = await self._loop.create_server(lambda: _DecoyProtocol(self),
                                                   "127.0.0.1", 0)
            self.port = upstream.sockets[0].getsockname()[1]
            self.decoy_port = decoy.sockets[0].getsockname()[1]
            self._ready.set()

        self._loop.run_until_complete(listen())
        self._loop.run_forever()

    def take(self) -> list[Recorded]:
        with self.lock:
            taken, self.requests = self.requests, []
        return taken

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
