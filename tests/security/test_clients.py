"""Slow, greedy and hostile clients on the data port: each limit closes what exceeds it,
is counted, and leaves everyone else served."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from lookout.slo.catalog import CLIENT_REFUSED
from tests.security.peers import send_raw
from tests.support.processes import (
    SidecarProcess,
    request,
    start_sidecar,
    wait_until,
)
from tests.support.recording_upstream import RecordingUpstream

# one worker builds the module's expensive fixtures once
pytestmark = pytest.mark.xdist_group("clients")

TIMEOUT = 1.0  # every client timeout of the sidecar under test, in seconds
WAIT = 15.0  # how long a test waits for something that must happen after TIMEOUT


@pytest.fixture(scope="module")
def strict(recording: RecordingUpstream) -> Iterator[SidecarProcess]:
    sidecar = start_sidecar(
        f"http://127.0.0.1:{recording.port}", "--client-head-timeout", str(TIMEOUT),
        "--client-body-timeout", str(TIMEOUT), "--client-keepalive-timeout", str(TIMEOUT),
        "--read-timeout", str(TIMEOUT), "--max-body-bytes", "1MiB")
    yield sidecar
    sidecar.stop()


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the sidecar sends until it closes the connection (or WAIT passes)."""
    sock.settimeout(WAIT)
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:  # closed with our request unread: a reset
            return received
        if not chunk:
            return received
        received += chunk


def _refused(sidecar: SidecarProcess, reason: str) -> float:
    return sidecar.metric(CLIENT_REFUSED.sample_name, reason=reason)


class _NormalClient(threading.Thread):
    """Sends requests back to back until told to stop; every answer must be 200."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.statuses, self.halt = port, [], threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.statuses.append(request(self.port, "GET", "/normal", timeout=WAIT).status)


def test_slow_clients_are_closed_while_a_normal_client_is_served(
        strict: SidecarProcess) -> None:
    before = {reason: _refused(strict, reason)
              for reason in ("head_timeout", "body_timeout", "keepalive_timeout")}
    normal = _NormalClient(strict.port)
    normal.start()
    partial_head = socket.create_connection(("127.0.0.1", strict.port))
    partial_head.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Half: ")
    partial_body = socket.create_connection(("127.0.0.1", strict.port))
    partial_body.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
    idle = socket.create_connection(("127.0.0.1", strict.port))
    idle.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        head_answer = _read_until_closed(partial_head)
        body_answer = _read_until_closed(partial_body)
        idle_answer = _read_until_closed(idle)
    finally:
        normal.halt.set()
        normal.join(WAIT)
        for sock in (partial_head, partial_body, idle):
            sock.close()
    assert head_answer.startswith(b"HTTP/1.1 408 "), head_answer[:100]
    assert b"x-lookout-error: head-timeout" in head_answer.lower()
    assert body_answer.startswith(b"HTTP/1.1 408 "), body_answer[:100]
    assert b"x-lookout-error: body-timeout" in body_answer.lower()
    assert idle_answer.startswith(b"HTTP/1.1 200 ")  # its one request, then the close
    assert normal.statuses and set(normal.statuses) == {200}
    for reason, count in before.items():
        assert _refused(strict, reason) >= count + 1, reason


def test_a_connection_that_sends_nothing_is_closed(strict: SidecarProcess) -> None:
    with socket.create_connection(("127.0.0.1", strict.port)) as silent:
        assert _read_until_closed(silent) == b""  # nothing to answer: just closed


def test_connections_over_the_cap_are_closed_and_counted(
        recording: RecordingUpstream) -> None:
    sidecar = start_sidecar(f"http://127.0.0.1:{recording.port}",
                            "--max-client-connections", "4")
    held = []
    try:
        # the readiness checks of start_sidecar may still hold a connection: fill up
        for _ in range(4):
            held.append(socket.create_connection(("127.0.0.1", sidecar.port)))
        wait_until(lambda: _over_cap_closed(sidecar.port), WAIT, "a connection over the cap "
                   "to be closed")
        assert _refused(sidecar, "connection_limit") >= 1
        for sock in held:
            sock.close()
        held.clear()
        wait_until(lambda: _served(sidecar.port), WAIT, "service once connections closed")
    finally:
        for sock in held:
            sock.close()
        sidecar.stop()


def _over_cap_closed(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port)) as extra:
        extra.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        return _read_until_closed(extra) == b""


def _served(port: int) -> bool:
    try:
        return request(port, "GET", "/again", timeout=WAIT).status == 200
    except OSError:
        return False


def test_expect_100_continue_is_answered_here_and_not_forwarded(
        strict: SidecarProcess, recording: RecordingUpstream) -> None:
    recording.take()
    with socket.create_connection(("127.0.0.1", strict.port), timeout=WAIT) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        interim = sock.recv(65536)  # a client waiting for the 100 before its body
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"b" * 2000)
        final = sock.recv(65536)
    assert final.startswith(b"HTTP/1.1 200 ")
    [forwarded] = recording.take()
    assert forwarded.body == b"b" * 2000
    assert "expect" not in {name.lower() for name, _ in forwarded.headers}


def test_expect_100_continue_over_the_limit_is_413_before_any_body(
        strict: SidecarProcess, recording: RecordingUpstream) -> None:
    """Envoy answers the Expect itself (a 100) as it reads the head, then the route
    refuses the declared length: the client never has to send its body."""
    recording.take()
    answer = send_raw(strict.port, b"POST /upload HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: 2000000\r\nExpect: 100-continue\r\n\r\n")
    assert answer.statuses == [413]
    assert recording.take() == []


def test_lookout_adds_no_header_of_its_own(strict: SidecarProcess,
                                           recording: RecordingUpstream) -> None:
    """The recording upstream sends no Server or Date header: the relay adds no Server
    and, as every HTTP/1.1 origin must (RFC 9110 6.6.1) and nginx does, a Date. CONNECT
    is never relayed: Envoy has no CONNECT route here and holds it until it times out."""
    relayed = send_raw(strict.port, b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
    assert relayed.statuses == [200]
    names = [name.lower() for name, _ in relayed.headers[0]]
    assert sorted(names) == ["content-length", "content-type", "date"]
    recording.take()
    refused = send_raw(strict.port, b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: x\r\n\r\n",
                       timeout=WAIT)
    assert refused.statuses in ([], [408])
    assert recording.take() == []


def test_malformed_requests_are_logged_as_a_tally_without_their_values(
        recording: RecordingUpstream) -> None:
    sidecar = start_sidecar(f"http://127.0.0.1:{recording.port}")
    try:
        secret = b"Authorization: Bearer USER-SECRET-abc123\x01\r\n"
        for _ in range(50):
            answer = send_raw(sidecar.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + secret + b"\r\n")
            assert answer.statuses == [400]
        send_raw(sidecar.port, b"GET /x HTTP/1.1\r\nHost: x\r\nCookie: session=COOKIE-VALUE\r\n"
                 b"X: \x7f\r\n\r\n")
        wait_until(lambda: _refused(sidecar, "bad_request") >= 51, WAIT, "the refusals")
    finally:
        sidecar.stop()
    logs = sidecar.process.output
    assert "USER-SECRET" not in logs and "COOKIE-VALUE" not in logs
    assert "Traceback" not in logs
    tallies = [line for line in logs.splitlines() if "refused client requests" in line]
    assert 1 <= len(tallies) <= 2, tallies  # the first at once, the rest in the shutdown tally
    assert "bad_request=" in tallies[-1]
