"""Hostile and slow peers, shaped the way attackers and bad networks behave.

Each function below runs ONE attack shape against ``host:port`` (loopback only) and
returns a small dataclass of *outcomes and counts*: frames sent, whether the server sent
GOAWAY and with which error code, whether it closed or reset the connection, how many
streams it refused, how many responses came back. Nothing here asserts on wall-clock
time; every loop is bounded by a count and by a deadline so a server that does nothing
cannot hang a test.

HTTP/2 shapes speak cleartext HTTP/2 with prior knowledge (h2c, RFC 9113 §3.3), with
frames built by hand (``struct`` + ``hpack``) so that they can be as wrong as an attacker
wants: no h2 library would let us send PUSH_PROMISE from a client.

    from tests.support.hostile import rapid_reset, GoodClient
    with GoodClient("127.0.0.1", http_port, kind="http") as good:
        outcome = rapid_reset("127.0.0.1", h2_port, pairs=2000)
    assert outcome.goaway_code == "ENHANCE_YOUR_CALM" or outcome.closed_by_server
    assert good.ok > 0 and good.failed == 0

The module imports only the standard library and ``hpack`` (``grpc`` lazily, inside
:class:`GoodClient` when ``kind="grpc"``), so it imports without Envoy or nginx present.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import ipaddress
import selectors
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hpack import Decoder, Encoder

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, \
    WINDOW_UPDATE, CONTINUATION = range(10)

END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4

SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4

ERROR_CODES = {
    0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR", 0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED", 0x6: "FRAME_SIZE_ERROR",
    0x7: "REFUSED_STREAM", 0x8: "CANCEL", 0x9: "COMPRESSION_ERROR", 0xA: "CONNECT_ERROR",
    0xB: "ENHANCE_YOUR_CALM", 0xC: "INADEQUATE_SECURITY", 0xD: "HTTP_1_1_REQUIRED",
}
CANCEL = 0x8

GRPC_METHOD = "/inference.GRPCInferenceService/ModelInfer"
GRPC_READY = "/inference.GRPCInferenceService/ServerReady"

MAX_WINDOW = 2**31 - 1


def _loopback_only(host: str) -> str:
    """Refuse anything but loopback: these shapes must never leave the machine."""
    address = socket.gethostbyname(host)
    if not ipaddress.ip_address(address).is_loopback:
        raise ValueError(f"hostile peers only attack loopback, not {host} ({address})")
    return address


def error_name(code: int | None) -> str | None:
    if code is None:
        return None
    return ERROR_CODES.get(code, f"0x{code:x}")


# --------------------------------------------------------------------------- frames

def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame: 24-bit length, type, flags, 31-bit stream id, payload."""
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags,
                                                            stream & MAX_WINDOW) + payload


def settings_frame(settings: dict[int, int] | None = None, ack: bool = False) -> bytes:
    payload = b"".join(struct.pack(">HI", key, value)
                       for key, value in (settings or {}).items())
    return frame(SETTINGS, ACK if ack else 0, 0, payload)


def rst_stream(stream: int, code: int = CANCEL) -> bytes:
    return frame(RST_STREAM, 0, stream, struct.pack(">I", code))


def window_update(stream: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream, struct.pack(">I", increment & MAX_WINDOW))


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literal(headers: list[tuple[bytes | str, bytes | str]]) -> bytes:
    """Encode headers as 'literal without indexing, new name', no Huffman, verbatim.

    Unlike ``hpack.Encoder`` this never normalises or validates: uppercase names, CR, LF
    and NUL go on the wire exactly as given, which is the point of the malformed shapes.
    It touches no dynamic table, so it mixes freely with a real encoder's output.
    """
    out = bytearray()
    for name, value in headers:
        raw_name = name.encode("latin-1") if isinstance(name, str) else name
        raw_value = value.encode("latin-1") if isinstance(value, str) else value
        out += b"\x00" + _hpack_int(len(raw_name), 7) + raw_name
        out += _hpack_int(len(raw_value), 7) + raw_value
    return bytes(out)


def request_headers(authority: str, path: str = "/", method: str = "GET",
                    grpc: bool = False) -> list[tuple[str, str]]:
    headers = [(":method", method), (":scheme", "http"), (":authority", authority),
               (":path", path)]
    if grpc:
        headers += [("content-type", "application/grpc"), ("te", "trailers")]
    return headers


# --------------------------------------------------------------------------- wire

@dataclass
class H2Outcome:
    """What an HTTP/2 server did to one hostile connection."""
    frames_sent: int = 0
    goaway_code: str | None = None
    goaway_last_stream: int | None = None
    goaway_debug: str = ""
    goaway_after: int | None = None  # shape units (pairs, frames...) sent when GOAWAY seen
    ended_after: int | None = None   # shape units sent when the server closed/reset
    closed_by_server: bool = False   # orderly EOF from the server
    reset_by_server: bool = False    # ECONNRESET / EPIPE
    send_blocked: bool = False       # server stopped reading (our send buffer filled)
    rst_codes: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    server_settings: dict[int, int] = field(default_factory=dict)
    settings_acks: int = 0
    error: str | None = None

    @property
    def responses(self) -> int:
        return sum(self.statuses.values())

    @property
    def ended(self) -> bool:
        """The server ended the connection one way or another."""
        return bool(self.goaway_code or self.closed_by_server or self.reset_by_server)

    def verdict(self) -> str:
        """A short human summary: 'GOAWAY ENHANCE_YOUR_CALM', 'closed', 'open'."""
        parts = []
        if self.goaway_code:
            parts.append(f"GOAWAY {self.goaway_code}")
        if self.rst_codes:
            parts.append(", ".join(f"RST {code}x{count}"
                                   for code, count in sorted(self.rst_codes.items())))
        if self.statuses:
            parts.append(", ".join(f"{status}x{count}"
                                   for status, count in sorted(self.statuses.items())))
        if self.reset_by_server:
            parts.append("reset")
        elif self.closed_by_server:
            parts.append("closed")
        if self.send_blocked:
            parts.append("stopped reading")
        if self.error:
            parts.append(f"error: {self.error}")
        return "; ".join(parts) or "no reaction (connection open)"


class H2Wire:
    """A raw h2c connection: send bytes, read and record whatever the server answers.

    The socket is non-blocking and every send interleaves reads (unless ``reading`` is
    off), so neither side can deadlock on a full buffer. Server SETTINGS are ACKed and
    PINGs answered, like a well-behaved client, unless ``auto_ack`` is False.
    """

    def __init__(self, host: str, port: int, *, timeout: float = 5.0,
                 settings: dict[int, int] | None = None, handshake: bool = True,
                 auto_ack: bool = True, reading: bool = True) -> None:
        self.address = (_loopback_only(host), port)
        self.authority = f"{host}:{port}"
        self.timeout = timeout
        self.auto_ack = auto_ack
        self.reading = reading
        self.outcome = H2Outcome()
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.ended_streams: set[int] = set()
        self.stream_status: dict[int, str] = {}
        self.stream_reset: dict[int, str] = {}
        self.data_bytes: Counter = Counter()
        self._buffer = bytearray()
        self._units = 0
        self.sock = socket.create_connection(self.address, timeout=timeout)
        self.sock.setblocking(False)
        if handshake:
            self.send(PREFACE + settings_frame(settings if settings is not None
                                               else {SETTINGS_ENABLE_PUSH: 0}))

    # -- bookkeeping
    def mark(self, units: int) -> None:
        """Record how many shape units (pairs, frames) have been sent so far."""
        self._units = units

    @property
    def dead(self) -> bool:
        ended = self.outcome.closed_by_server or self.outcome.reset_by_server
        if ended and self.outcome.ended_after is None:
            self.outcome.ended_after = self._units
        return ended

    # -- sending
    def send(self, data: bytes, frames: int = 1, deadline: float | None = None) -> bool:
        """Send everything or give up; False when the server closed or stopped reading."""
        if self.dead:
            return False
        view = memoryview(data)
        end = deadline or (time.monotonic() + self.timeout)
        while view:
            try:
                sent = self.sock.send(view)
                view = view[sent:]
                continue
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                self.outcome.reset_by_server = True
                return False
            except OSError as exc:
                self.outcome.error = str(exc)
                return False
            if time.monotonic() > end:
                self.outcome.send_blocked = True
                return False
            readers = [self.sock] if self.reading else []
            readable, _, _ = _select(readers, [self.sock], 0.05)
            if readable:
                self._read_available()
                if self.dead:
                    return False
        self.outcome.frames_sent += frames
        return True

    # -- receiving
    def pump(self, wait: float = 0.0, until: Any = None) -> None:
        """Read and handle frames for up to ``wait`` seconds, or until ``until()``."""
        end = time.monotonic() + wait
        while not self.dead:
            remaining = end - time.monotonic()
            readable, _, _ = _select([self.sock], [], max(0.0, min(remaining, 0.05)))
            if readable:
                self._read_available()
            if until is not None and until():
                return
            if remaining <= 0 and not readable:
                return

    def _read_available(self) -> None:
        while True:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                break
            except ConnectionResetError:
                self.outcome.reset_by_server = True
                break
            except OSError as exc:
                self.outcome.error = str(exc)
                self.outcome.reset_by_server = True
                break
            if not chunk:
                self.outcome.closed_by_server = True
                break
            self._buffer += chunk
        self._parse()

    def _parse(self) -> None:
        while len(self._buffer) >= 9:
            length = int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < 9 + length:
                return
            kind, flags, stream = struct.unpack(">BBI", self._buffer[3:9])
            stream &= MAX_WINDOW
            payload = bytes(self._buffer[9:9 + length])
            del self._buffer[:9 + length]
            self._handle(kind, flags, stream, payload)

    def _handle(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        outcome = self.outcome
        if kind == SETTINGS:
            if flags & ACK:
                outcome.settings_acks += 1
                return
            for offset in range(0, len(payload) - 5, 6):
                key, value = struct.unpack(">HI", payload[offset:offset + 6])
                outcome.server_settings[key] = value
            if self.auto_ack:
                self._quiet_send(settings_frame(ack=True))
        elif kind == PING and not flags & ACK and self.auto_ack:
            self._quiet_send(frame(PING, ACK, 0, payload))
        elif kind == GOAWAY and len(payload) >= 8:
            last, code = struct.unpack(">II", payload[:8])
            if outcome.goaway_code is None or code != 0:
                outcome.goaway_code = error_name(code)
                outcome.goaway_last_stream = last & MAX_WINDOW
                outcome.goaway_debug = payload[8:200].decode("latin-1", "replace")
                outcome.goaway_after = self._units
        elif kind == RST_STREAM and len(payload) >= 4:
            code = error_name(struct.unpack(">I", payload[:4])[0])
            outcome.rst_codes[code] += 1
            self.stream_reset[stream] = code
            self.ended_streams.add(stream)
        elif kind == HEADERS:
            block = payload
            if flags & 0x8:  # PADDED
                block = block[1:len(block) - block[0]]
            if flags & 0x20:  # PRIORITY
                block = block[5:]
            try:
                headers = dict(self.decoder.decode(block, raw=False))
            except Exception:  # a broken block is an outcome too
                headers = {}
            if ":status" in headers:
                outcome.statuses[headers[":status"]] += 1
                self.stream_status[stream] = headers[":status"]
            if flags & END_STREAM:
                self.ended_streams.add(stream)
        elif kind == DATA:
            self.data_bytes[stream] += len(payload)
            if payload and self.auto_ack:  # keep the server's window open for us
                self._quiet_send(window_update(0, len(payload))
                                 + window_update(stream, len(payload)))
            if flags & END_STREAM:
                self.ended_streams.add(stream)

    def _quiet_send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(data)

    # -- helpers used by the shapes
    def headers(self, stream: int, headers: list[tuple[str, str]], end_stream: bool,
                end_headers: bool = True, raw_block: bytes | None = None) -> bytes:
        block = raw_block if raw_block is not None else self.encoder.encode(headers)
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        return frame(HEADERS, flags, stream, block)

    def wait_for_settings(self) -> None:
        self.pump(self.timeout, until=lambda: bool(self.outcome.server_settings)
                  or self.outcome.settings_acks > 0)

    def finish(self, linger: float = 1.0, until: Any = None) -> H2Outcome:
        """Give the server up to ``linger`` seconds to react (to close, or until
        ``until()`` holds), then close and return the outcome. Envoy closes a connection
        it refused after its delayed-close wait (1 s by default), so linger past that."""
        if not self.dead:
            self.reading = True
            self.pump(linger, until=lambda: self.dead or (until is not None and until()))
        self.close()
        return self.outcome

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _select(readers: list[socket.socket], writers: list[socket.socket],
            timeout: float) -> tuple[list, list, list]:
    import select

    try:
        return select.select(readers, writers, [], timeout)
    except (OSError, ValueError):
        return [], [], []


# --------------------------------------------------------------------------- h2 shapes

@dataclass
class RapidResetResult(H2Outcome):
    pairs_sent: int = 0

    @property
    def streams_accepted(self) -> int | None:
        """Streams the server says it processed (from GOAWAY's last-stream-id)."""
        if self.goaway_last_stream is None:
            return None
        return (self.goaway_last_stream + 1) // 2


def _result(cls: type, wire: H2Wire, **extra: Any) -> Any:
    result = cls(**{name: getattr(wire.outcome, name)
                    for name in H2Outcome.__dataclass_fields__}, **extra)
    return result


def _flood(wire: H2Wire, total: int, batch: int, deadline: float,
           units: Callable[[int, int], tuple[bytes, int]], read: bool = True) -> int:
    """Send `total` units in batches (`units(sent, count)` gives a batch's bytes and its
    frame count) until the server ends the connection, sends GOAWAY or the deadline
    passes; returns the units sent."""
    sent = 0
    while sent < total and not wire.dead and wire.outcome.goaway_code is None:
        count = min(batch, total - sent)
        data, frames = units(sent, count)
        if not wire.send(data, frames=frames, deadline=deadline):
            break
        sent += count
        wire.mark(sent)
        if read:
            wire.pump(0)
        if time.monotonic() > deadline:
            break
    return sent


def rapid_reset(host: str, port: int, pairs: int = 2000, *, grpc: bool = True,
                path: str | None = None, batch: int = 20, linger: float = 2.5,
                deadline_s: float = 20.0) -> RapidResetResult:
    """CVE-2023-44487: HEADERS then RST_STREAM(CANCEL) at once, ``pairs`` times.

    Stops as soon as the server sends GOAWAY or closes. ``goaway_after`` counts pairs
    sent when the GOAWAY was read; ``streams_accepted`` is what the server's GOAWAY
    admits to having processed. The caller compares the upstream's call count.
    """
    wire = H2Wire(host, port)
    wire.wait_for_settings()
    method = "POST" if grpc else "GET"
    target = path or (GRPC_METHOD if grpc else "/hostile/rapid-reset")
    headers = request_headers(wire.authority, target, method, grpc)

    def pairs_of(sent: int, count: int) -> tuple[bytes, int]:
        chunk = bytearray()
        for index in range(count):
            stream = 2 * (sent + index) + 1
            chunk += wire.headers(stream, headers, end_stream=not grpc)
            chunk += rst_stream(stream, CANCEL)
        return bytes(chunk), 2 * count

    sent = _flood(wire, pairs, batch, time.monotonic() + deadline_s, pairs_of)
    wire.finish(linger)
    return _result(RapidResetResult, wire, pairs_sent=sent)


@dataclass
class FloodResult(H2Outcome):
    flood_frames_sent: int = 0


def continuation_flood(host: str, port: int, frames: int = 10000, *, batch: int = 200,
                       linger: float = 2.5, deadline_s: float = 15.0) -> FloodResult:
    """HEADERS without END_HEADERS, then ``frames`` empty CONTINUATION frames.

    A server that waits for END_HEADERS forever while counting nothing is the
    CVE-2024-27316/30255 family (CONTINUATION flood): it should GOAWAY or close.
    """
    wire = H2Wire(host, port)
    wire.wait_for_settings()
    first = wire.headers(1, request_headers(wire.authority, "/hostile/continuation"),
                         end_stream=True, end_headers=False)
    deadline = time.monotonic() + deadline_s
    sent = 0
    if wire.send(first, deadline=deadline):
        empty = frame(CONTINUATION, 0, 1)
        sent = _flood(wire, frames, batch, deadline,
                      lambda _, count: (empty * count, count))
    wire.finish(linger)
    return _result(FloodResult, wire, flood_frames_sent=sent)


def settings_flood(host: str, port: int, frames: int = 20000, *, read_acks: bool = False,
                   batch: int = 500, linger: float = 2.5,
                   deadline_s: float = 15.0) -> FloodResult:
    """``frames`` SETTINGS frames, each of which obliges the server to queue an ACK.

    With ``read_acks=False`` the client never reads, so the ACKs pile up in the server's
    outbound queue: a server that caps queued control frames closes the connection.
    """
    wire = H2Wire(host, port, reading=read_acks, auto_ack=read_acks)
    one = settings_frame({SETTINGS_INITIAL_WINDOW_SIZE: 65535})
    sent = _flood(wire, frames, batch, time.monotonic() + deadline_s,
                  lambda _, count: (one * count, count), read=read_acks)
    wire.finish(linger)
    return _result(FloodResult, wire, flood_frames_sent=sent)


@dataclass
class ManyStreamsResult(H2Outcome):
    streams_opened: int = 0
    advertised_max_concurrent_streams: int | None = None

    @property
    def refused(self) -> int:
        return self.rst_codes.get("REFUSED_STREAM", 0)


def many_streams(host: str, port: int, n: int = 2000, *, grpc: bool = True,
                 path: str | None = None, linger: float = 2.5) -> ManyStreamsResult:
    """Open ``n`` concurrent streams (HEADERS without END_STREAM) on one connection.

    A server that advertises SETTINGS_MAX_CONCURRENT_STREAMS should answer the excess with
    RST_STREAM(REFUSED_STREAM) (or GOAWAY PROTOCOL_ERROR), never forward them.
    """
    wire = H2Wire(host, port)
    wire.wait_for_settings()
    method = "POST"
    target = path or (GRPC_METHOD if grpc else "/hostile/many-streams")
    headers = request_headers(wire.authority, target, method, grpc)
    opened = 0
    for start in range(0, n, 100):
        chunk = b"".join(wire.headers(2 * index + 1, headers, end_stream=False)
                         for index in range(start, min(n, start + 100)))
        if not wire.send(chunk, frames=min(n, start + 100) - start):
            break
        opened = min(n, start + 100)
        wire.mark(opened)
        wire.pump(0)
        if wire.outcome.goaway_code:
            break
    wire.finish(linger)
    return _result(ManyStreamsResult, wire, streams_opened=opened,
                   advertised_max_concurrent_streams=wire.outcome.server_settings.get(
                       SETTINGS_MAX_CONCURRENT_STREAMS))


@dataclass
class CaseResult:
    """One malformed/forbidden case on its own connection."""
    name: str
    outcome: H2Outcome

    @property
    def refused(self) -> bool:
        """The server rejected it: GOAWAY (non-zero), RST_STREAM, 4xx, or closing."""
        o = self.outcome
        statuses = set(o.statuses)
        return bool((o.goaway_code and o.goaway_code != "NO_ERROR") or o.rst_codes
                    or any(s.startswith("4") for s in statuses)
                    or (not statuses and (o.closed_by_server or o.reset_by_server)))

    def verdict(self) -> str:
        return self.outcome.verdict()


def window_overflow(host: str, port: int, *, linger: float = 2.5) -> list[CaseResult]:
    """WINDOW_UPDATE past 2^31-1: on the connection (expect GOAWAY FLOW_CONTROL_ERROR)
    and on one open stream (expect RST_STREAM FLOW_CONTROL_ERROR), each on its own
    connection."""
    results = []
    wire = H2Wire(host, port)
    wire.wait_for_settings()
    wire.send(window_update(0, MAX_WINDOW))
    results.append(CaseResult("connection window", wire.finish(linger)))

    wire = H2Wire(host, port)
    wire.wait_for_settings()
    wire.send(wire.headers(1, request_headers(wire.authority, "/hostile/window", "POST"),
                           end_stream=False) + window_update(1, MAX_WINDOW))
    results.append(CaseResult("stream window", wire.finish(
        linger, until=lambda: 1 in wire.stream_reset)))
    return results


def forbidden_frames(host: str, port: int, *, linger: float = 2.5) -> list[CaseResult]:
    """Frames a client may never send; each on its own connection, each should end in
    GOAWAY PROTOCOL_ERROR (RFC 9113 §6.1, §6.6, §5.1.1)."""
    cases: dict[str, Any] = {
        "DATA on stream 0": lambda w: frame(DATA, END_STREAM, 0, b"x"),
        "PUSH_PROMISE from client": lambda w: frame(
            PUSH_PROMISE, END_HEADERS, 1,
            struct.pack(">I", 2) + w.encoder.encode(
                request_headers(w.authority, "/hostile/push"))),
        "HEADERS on even stream": lambda w: w.headers(
            2, request_headers(w.authority, "/hostile/even"), end_stream=True),
        "zero WINDOW_UPDATE": lambda w: frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0)),
    }
    results = []
    for name, build in cases.items():
        wire = H2Wire(host, port)
        wire.wait_for_settings()
        wire.send(build(wire))
        results.append(CaseResult(name, wire.finish(linger)))
    return results


MALFORMED_MARK = "hostile-malformed"


def malformed_cases(authority: str, marker: str = MALFORMED_MARK
                    ) -> dict[str, list[tuple[str, str]]]:
    """The requests, keyed by case name; each path carries ``?case=<name>`` so the
    caller can tell from the upstream's log exactly which cases were forwarded."""

    def base(case: str, path_suffix: str = "") -> list[tuple[str, str]]:
        return request_headers(authority, f"/{marker}{path_suffix}?case={case}")

    return {
        "CR in :path": base("cr", "/a\rb"),
        "LF in :path": base("lf", "/a\nb"),
        "NUL in :path": base("nul", "/a\x00b"),
        "connection header": [*base("connection"), ("connection", "keep-alive")],
        "transfer-encoding: chunked": [*base("te"), ("transfer-encoding", "chunked")],
        "uppercase header name": [*base("upper"), ("X-Hostile", "1")],
        "underscore header name": [*base("underscore"), ("x_hostile", "1")],
    }


def malformed_requests(host: str, port: int, *, linger: float = 2.5,
                       marker: str = MALFORMED_MARK) -> list[CaseResult]:
    """Each malformed HTTP/2 request on a fresh connection. ``refused`` is True when
    the server answered RST_STREAM / 4xx / GOAWAY; a 2xx means it forwarded it — the
    caller confirms with the upstream's received ``case=`` markers."""
    results = []
    for name, headers in malformed_cases(f"{host}:{port}", marker).items():
        wire = H2Wire(host, port)
        wire.wait_for_settings()
        wire.send(wire.headers(1, [], end_stream=True, raw_block=hpack_literal(headers)))
        wire.pump(linger, until=lambda w=wire: 1 in w.ended_streams or w.dead)
        results.append(CaseResult(name, wire.finish(0.1)))
    return results


# --------------------------------------------------------------------------- slow peers

@dataclass
class SlowUploadReport:
    started: int = 0
    connected: int = 0
    still_open: int = 0
    closed_by_server: int = 0
    reset_by_server: int = 0
    connect_failed: int = 0
    bytes_sent: int = 0
    statuses: Counter = field(default_factory=Counter)

    def verdict(self) -> str:
        status = ", ".join(f"{s}x{c}" for s, c in sorted(self.statuses.items()))
        return (f"{self.still_open}/{self.started} still open, "
                f"{self.closed_by_server + self.reset_by_server} closed by server"
                + (f" ({status})" if status else "")
                + (f", {self.connect_failed} connect failed" if self.connect_failed else ""))


class SlowUploads:
    """``n`` HTTP/1.1 POSTs declaring ``Content-Length: declared_bytes`` that trickle
    their bodies at ``rate`` bytes/second/connection, all from ONE selector thread.

    Use as a context manager, or ``start()`` / ``stop()``; ``report()`` is safe at any
    time. The uploads never complete on their own (unless rate x time ≥ declared_bytes):
    they hold server (and, for a proxy that does not buffer, upstream) resources.
    """

    def __init__(self, host: str, port: int, n: int = 200, declared_bytes: int = 1 << 20,
                 rate: float = 1.0, path: str = "/hostile/slow-upload",
                 connect_batch: int = 100) -> None:
        self.address = (_loopback_only(host), port)
        self.n, self.declared, self.rate = n, declared_bytes, rate
        self.head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                     f"Content-Type: application/octet-stream\r\n"
                     f"Content-Length: {declared_bytes}\r\n\r\n").encode()
        self.connect_batch = connect_batch
        self._report = SlowUploadReport(started=n)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="slow-uploads")
        self._socks: dict[socket.socket, dict[str, Any]] = {}

    def start(self) -> SlowUploads:
        self._thread.start()
        return self

    def __enter__(self) -> SlowUploads:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_connected(self, timeout: float = 10.0) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                done = self._report.connected + self._report.connect_failed
            if done >= self.n:
                break
            time.sleep(0.05)
        return self._report.connected

    def report(self) -> SlowUploadReport:
        with self._lock:
            r = self._report
            return SlowUploadReport(r.started, r.connected, r.still_open, r.closed_by_server,
                                    r.reset_by_server, r.connect_failed, r.bytes_sent,
                                    Counter(r.statuses))

    def stop(self) -> SlowUploadReport:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        return self.report()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        pending = 0
        try:
            for index in range(self.n):
                if self._stop.is_set():
                    break
                sock = socket.socket()
                sock.setblocking(False)
                code = sock.connect_ex(self.address)
                if code not in (0, errno.EINPROGRESS):
                    sock.close()
                    with self._lock:
                        self._report.connect_failed += 1
                    continue
                state = {"connected": False, "sent": 0, "credit": 0.0, "buf": b""}
                self._socks[sock] = state
                sel.register(sock, selectors.EVENT_WRITE | selectors.EVENT_READ, state)
                pending += 1
                if pending >= self.connect_batch or index == self.n - 1:
                    self._poll(sel, 0.05)
                    pending = 0
            last = time.monotonic()
            while not self._stop.is_set():
                self._poll(sel, 0.1)
                now = time.monotonic()
                self._trickle(sel, now - last)
                last = now
        finally:
            for sock in list(self._socks):
                with contextlib.suppress(KeyError, ValueError):
                    sel.unregister(sock)
                sock.close()
            sel.close()

    def _poll(self, sel: selectors.BaseSelector, timeout: float) -> None:
        for key, events in sel.select(timeout):
            sock, state = key.fileobj, key.data
            if not state["connected"] and events & selectors.EVENT_WRITE:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self._drop(sel, sock, "connect_failed")
                    continue
                state["connected"] = True
                with self._lock:
                    self._report.connected += 1
                    self._report.still_open += 1
                try:
                    sock.send(self.head)
                except OSError:
                    self._drop(sel, sock, "reset_by_server")
                    continue
                sel.modify(sock, selectors.EVENT_READ, state)
            elif events & selectors.EVENT_READ:
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    self._drop(sel, sock, "reset_by_server")
                    continue
                if not data:
                    self._drop(sel, sock, "closed_by_server")
                    continue
                state["buf"] += data
                if state["buf"].startswith(b"HTTP/") and b"\r\n" in state["buf"] \
                        and "status" not in state:
                    status = state["buf"].split(b" ", 2)[1].decode("latin-1", "replace")
                    state["status"] = status
                    with self._lock:
                        self._report.statuses[status] += 1

    def _trickle(self, sel: selectors.BaseSelector, elapsed: float) -> None:
        for sock, state in list(self._socks.items()):
            if not state["connected"] or state["sent"] >= self.declared:
                continue
            state["credit"] += self.rate * elapsed
            count = min(int(state["credit"]), self.declared - state["sent"])
            if count <= 0:
                continue
            try:
                sent = sock.send(b"x" * count)
            except BlockingIOError:
                continue
            except OSError:
                self._drop(sel, sock, "reset_by_server")
                continue
            state["credit"] -= sent
            state["sent"] += sent
            with self._lock:
                self._report.bytes_sent += sent

    def _drop(self, sel: selectors.BaseSelector, sock: socket.socket, why: str) -> None:
        state = self._socks.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(sock)
        sock.close()
        with self._lock:
            setattr(self._report, why, getattr(self._report, why) + 1)
            if state and state["connected"]:
                self._report.still_open -= 1


def slow_uploads(host: str, port: int, n: int = 200, declared_bytes: int = 1 << 20,
                 rate: float = 1.0, **kwargs: Any) -> SlowUploads:
    """Start :class:`SlowUploads` and return the running handle (call ``stop()``)."""
    return SlowUploads(host, port, n, declared_bytes, rate, **kwargs).start()


@dataclass
class IdleReport:
    opened: int = 0
    connect_failed: int = 0
    closed_by_server: int = 0
    still_open: int = 0
    hold_s: float = 0.0

    def verdict(self) -> str:
        return (f"{self.closed_by_server}/{self.opened} closed by server within "
                f"{self.hold_s:g}s hold, {self.still_open} still open"
                + (f", {self.connect_failed} connect failed" if self.connect_failed else ""))


def idle_sockets(host: str, port: int, n: int = 200, hold: float = 10.0) -> IdleReport:
    """Open ``n`` TCP connections that never send a byte; hold them ``hold`` seconds
    (or until all are closed) and count those the server closed."""
    address = (_loopback_only(host), port)
    report = IdleReport(hold_s=hold)
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(n):
        sock = socket.socket()
        sock.settimeout(2.0)
        try:
            sock.connect(address)
        except OSError:
            report.connect_failed += 1
            sock.close()
            continue
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
        socks.append(sock)
    report.opened = len(socks)
    open_socks = set(socks)
    end = time.monotonic() + hold
    while open_socks and time.monotonic() < end:
        for key, _ in sel.select(min(0.2, max(0.0, end - time.monotonic()))):
            sock = key.fileobj
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:  # EOF or reset: the server gave up on us (bytes = a 408 page)
                sel.unregister(sock)
                open_socks.discard(sock)
                report.closed_by_server += 1
    report.still_open = len(open_socks)
    for sock in socks:
        sock.close()
    sel.close()
    return report


# --------------------------------------------------------------------------- good client

class GoodClient:
    """A well-behaved client on its own connection, counting successes and failures.

    ``kind``: ``"http"`` (HTTP/1.1 keep-alive GET ``path``), ``"h2"`` (raw h2c GET on one
    connection) or ``"grpc"`` (grpcio unary call to ``method`` with raw bytes). Runs in a
    thread; use as a context manager around the attack. Tests assert "served throughout"
    as ``ok > 0 and failed == 0`` — counts, never latency.
    """

    def __init__(self, host: str, port: int, kind: str = "http", path: str = "/",
                 method: str = GRPC_READY, pause: float = 0.02,
                 timeout: float = 10.0) -> None:
        self.host = _loopback_only(host)
        self.port, self.kind, self.path, self.method = port, kind, path, method
        self.pause, self.timeout = pause, timeout
        self.ok = 0
        self.failed = 0
        self.errors: Counter = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"good-{kind}")

    def __enter__(self) -> GoodClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> GoodClient:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.timeout + 5)
        return self

    def verdict(self) -> str:
        errors = f" ({', '.join(f'{e}x{c}' for e, c in self.errors.most_common(2))})" \
            if self.errors else ""
        return f"good {self.kind} {self.ok} ok / {self.failed} failed{errors}"

    def _count(self, ok: bool, error: str = "") -> None:
        if ok:
            self.ok += 1
        else:
            self.failed += 1
            self.errors[error[:60]] += 1

    def _run(self) -> None:
        runner = {"http": self._http, "h2": self._h2, "grpc": self._grpc}[self.kind]
        runner()

    def _http(self) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port,
                                                      timeout=self.timeout)
                conn.request("GET", self.path)
                response = conn.getresponse()
                response.read()
                self._count(200 <= response.status < 400, f"HTTP {response.status}")
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                self._count(False, type(exc).__name__)
                if conn is not None:
                    conn.close()
                conn = None
            self._stop.wait(self.pause)
        if conn is not None:
            conn.close()

    def _h2(self) -> None:
        wire = None
        stream = 1
        while not self._stop.is_set():
            try:
                if wire is None or wire.dead or wire.outcome.goaway_code or stream > 2**30:
                    if wire is not None:
                        wire.close()
                    wire = H2Wire(self.host, self.port, timeout=self.timeout)
                    stream = 1
                wire.send(wire.headers(stream, request_headers(
                    f"{self.host}:{self.port}", self.path), end_stream=True))
                wire.pump(self.timeout, until=lambda s=stream, w=wire: s in w.ended_streams
                          or w.dead)
                status = wire.stream_status.get(stream, "none")
                good = stream in wire.ended_streams and stream not in wire.stream_reset
                self._count(good and status.startswith(("2", "3")),
                            f"h2 status {status} {wire.stream_reset.get(stream, '')}")
                stream += 2
            except OSError as exc:
                self._count(False, type(exc).__name__)
                wire = None
            self._stop.wait(self.pause)
        if wire is not None:
            wire.close()

    def _grpc(self) -> None:
        import grpc  # lazily: the module must import without grpcio

        channel = grpc.insecure_channel(f"{self.host}:{self.port}")
        call = channel.unary_unary(self.method, request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
        try:
            while not self._stop.is_set():
                try:
                    call(b"", timeout=self.timeout)
                    self._count(True)
                except grpc.RpcError as exc:
                    self._count(False, str(exc.code()))
                self._stop.wait(self.pause)
        finally:
            channel.close()
