"""An upstream whose every response is described by the request that asks for it, so two
proxies in front of it get the very same response to relay: `/shape/<hex of JSON>` with
`status`, `headers` (name, value pairs), `size` and `framing` (`length`, `chunked`,
`close`: the body ends with the connection, or `cut`: the connection closes half-way
through a declared length). It records what reached it (method, target, headers, body)
and runs in a thread of the test process.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field

import httptools

from tests.support.processes import free_port
from tests.support.recording_upstream import Recorded


@dataclass
class ResponseShape:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    size: int = 0
    framing: str = "length"

    def path(self) -> str:
        document = {"status": self.status, "headers": self.headers, "size": self.size,
                    "framing": self.framing}
        return "/shape/" + json.dumps(document).encode().hex()

    @classmethod
    def from_target(cls, target: str) -> ResponseShape:
        if not target.startswith("/shape/"):
            return cls(404)
        document = json.loads(bytes.fromhex(target[len("/shape/"):].split("?")[0]))
        return cls(document["status"], [tuple(h) for h in document["headers"]],
                   document["size"], document["framing"])

    def body(self) -> bytes:
        return bytes((i * 7 + 3) % 251 for i in range(self.size))

    def response(self) -> tuple[bytes, bool]:
        """The bytes to write and whether to close after them."""
        body = b"" if self.status in (204, 304) else self.body()
        lines = [f"HTTP/1.1 {self.status} Whatever"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        close = self.framing in ("close", "cut")
        if self.framing == "chunked" and body:
            lines.append("Transfer-Encoding: chunked")
            half = len(body) // 2
            payload = b"".join(b"%x\r\n%b\r\n" % (len(c), c)
                               for c in (body[:half], body[half:]) if c) + b"0\r\n\r\n"
        elif self.framing == "close":
            lines.append("Connection: close")
            payload = body
        else:
            if self.status not in (204, 304):
                lines.append(f"Content-Length: {len(body)}")
            payload = body[: len(body) // 2] if self.framing == "cut" else body
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        return head + payload, close


class _Request:
    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


class ShapeUpstream:
    def __init__(self) -> None:
        self.port = free_port()
        self.seen: list[Recorded] = []
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        started.wait(10)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port))
        started.set()
        self._loop.run_forever()
        server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = _Request()
                parser = httptools.HttpRequestParser(request)
                while not request.done:
                    data = await reader.read(65536)
                    if not data:
                        return
                    parser.feed_data(data)
                target = request.url.decode("latin-1")
                self.seen.append(Recorded(parser.get_method().decode(), target, request.headers,
                                      bytes(request.body)))
                payload, close = ResponseShape.from_target(target).response()
                writer.write(payload)
                await writer.drain()
                if close:
                    return
        except (ConnectionError, httptools.HttpParserError):
            return
        finally:
            writer.close()

    def take(self) -> list[Recorded]:
        seen, self.seen = self.seen, []
        return seen

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
