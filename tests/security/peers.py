"""Send one raw request shape to a proxy and read back what it answered."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

import httptools


@dataclass
class Answer:
    statuses: list[int] = field(default_factory=list)  # final responses, in order
    interim: list[int] = field(default_factory=list)  # 1xx
    headers: list[list[tuple[str, str]]] = field(default_factory=list)
    closed: bool = False  # the proxy closed the connection

    @property
    def status(self) -> int:
        return self.statuses[0] if self.statuses else 0


class _Reader:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.headers: list[tuple[str, str]] = []
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self.answer.interim.append(status)
        else:
            self.answer.statuses.append(status)
            self.answer.headers.append(self.headers)
        self.headers = []


def send_raw(port: int, raw: bytes, responses: int = 1, timeout: float = 5.0,
             head_request: bool = False) -> Answer:
    """Send `raw`, read until `responses` final answers, a close, or `timeout`."""
    answer = Answer()
    reader = _Reader(answer)
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
        except OSError:
            answer.closed = True
            return answer
        pending = b""
        while len(answer.statuses) < responses and time.monotonic() < deadline:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                answer.closed = True
                break
            if not data:
                answer.closed = True
                break
            pending += data
            if head_request:  # a HEAD answer has no body, whatever its length says
                answer.statuses.append(int(pending.split(None, 2)[1]))
                break
            try:
                reader.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                break
            except httptools.HttpParserError:
                if 100 <= reader.parser.get_status_code() < 200:  # after an interim 100
                    reader.parser = httptools.HttpResponseParser(reader)
                    continue
                break
    return answer
