"""lookout's data ports (Envoy, configured by lookout) against hostile and slow peers,
shaped by hand the way attackers and bad networks behave (`tests/support/hostile.py`).

Every test asserts outcomes and counts: the attacker's connection was ended, at most a
bound of calls reached the upstream, and a well-behaved client on its own connection was
served throughout (`ok > 0 and failed == 0`). Nothing here measures time.
`bench/hostile.py` runs the same shapes against nginx and Envoy alone (SECURITY.md)."""

from __future__ import annotations

import resource
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from lookout.sidecar.dataplane.envoy_config import H2_MAX_STREAMS, RESET_STREAM_COUNT
from tests.support import hostile
from tests.support.counting_grpc_upstream import CountingGrpcUpstream
from tests.support.processes import (
    SidecarProcess,
    free_port,
    port_accepts,
    request,
    start_sidecar,
    wait_until,
)
from tests.support.recording_upstream import RecordingUpstream

pytestmark = pytest.mark.xdist_group("hostile")  # one sidecar, one worker
HEAD_TIMEOUT = 2  # seconds a silent connection may stay (the test's own, small)
CONNECTIONS = 4096


@dataclass
class Target:
    sidecar: SidecarProcess
    grpc_port: int
    http: RecordingUpstream
    grpc: CountingGrpcUpstream

    @property
    def http_port(self) -> int:
        return self.sidecar.port


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # 1,500 sockets of our own
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    http, grpc = RecordingUpstream(), CountingGrpcUpstream()
    grpc_port = free_port()
    sidecar = start_sidecar(
        f"http://127.0.0.1:{http.port}", "--grpc-listen", f"127.0.0.1:{grpc_port}",
        "--grpc-upstream", f"127.0.0.1:{grpc.port}", "--analysis-workers", "1",
        "--client-head-timeout", str(HEAD_TIMEOUT),
        "--max-client-connections", str(CONNECTIONS))
    wait_until(lambda: port_accepts(grpc_port), 30, "the gRPC port")
    yield Target(sidecar, grpc_port, http, grpc)
    sidecar.stop()
    http.close()
    grpc.close()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def good_clients(target: Target) -> tuple[hostile.GoodClient, hostile.GoodClient]:
    return (hostile.GoodClient("127.0.0.1", target.http_port, "http", path="/good"),
            hostile.GoodClient("127.0.0.1", target.grpc_port, "grpc"))


def served_throughout(*clients: hostile.GoodClient) -> None:
    for client in clients:
        assert client.ok > 0 and client.failed == 0, client.verdict()


def test_rapid_reset_ends_the_attacker_and_reaches_the_upstream_a_bounded_number_of_times(
        target: Target) -> None:
    before = target.grpc.total(hostile.GRPC_METHOD)
    http, grpc = good_clients(target)
    with http, grpc:
        outcome = hostile.rapid_reset("127.0.0.1", target.grpc_port, pairs=20_000)
    assert outcome.ended, outcome.verdict()
    assert outcome.pairs_sent < 20_000
    assert target.grpc.total(hostile.GRPC_METHOD) - before <= RESET_STREAM_COUNT
    served_throughout(http, grpc)


@pytest.mark.parametrize("read_acks", [False, True])
def test_a_settings_flood_is_ended(target: Target, read_acks: bool) -> None:
    http, grpc = good_clients(target)
    with http, grpc:
        outcome = hostile.settings_flood("127.0.0.1", target.grpc_port, frames=200_000,
                                         read_acks=read_acks)
    assert outcome.ended, outcome.verdict()  # the connection is ended, whoever reads
    served_throughout(http, grpc)


def test_headers_without_end_then_empty_continuations_are_ended(target: Target) -> None:
    http, grpc = good_clients(target)
    with http, grpc:
        outcome = hostile.continuation_flood("127.0.0.1", target.grpc_port, frames=100_000)
    assert outcome.ended, outcome.verdict()
    assert target.grpc.total("/hostile/continuation") == 0
    served_throughout(http, grpc)


def test_twenty_thousand_streams_are_capped_and_never_forwarded_past_the_cap(
        target: Target) -> None:
    before = target.grpc.total(hostile.GRPC_METHOD)
    http, grpc = good_clients(target)
    with http, grpc:
        outcome = hostile.many_streams("127.0.0.1", target.grpc_port, n=20_000)
    assert outcome.advertised_max_concurrent_streams == H2_MAX_STREAMS
    assert outcome.ended or outcome.refused, outcome.verdict()
    assert target.grpc.total(hostile.GRPC_METHOD) - before <= H2_MAX_STREAMS
    served_throughout(http, grpc)


def test_window_overflow_and_forbidden_frames_end_the_connection(target: Target) -> None:
    cases = [*hostile.window_overflow("127.0.0.1", target.grpc_port),
             *hostile.forbidden_frames("127.0.0.1", target.grpc_port)]
    assert len(cases) >= 5
    for case in cases:
        assert case.refused, f"{case.name}: {case.verdict()}"


def test_malformed_requests_are_refused_and_never_reach_the_upstream(target: Target) -> None:
    target.http.take()
    cases = hostile.malformed_requests("127.0.0.1", target.http_port)
    forwarded = [r.target for r in target.http.take() if hostile.MALFORMED_MARK in r.target]
    assert forwarded == []
    for case in cases:
        assert case.refused, f"{case.name}: {case.verdict()}"


def test_1500_slow_uploads_hold_no_upstream_connection_and_starve_nobody(
        target: Target) -> None:
    """Past Envoy's default circuit breaker (1,024): bodies are read whole before an
    upstream connection is taken, so the upstream sees none of them."""
    target.http.take()
    http, grpc = good_clients(target)
    with hostile.SlowUploads("127.0.0.1", target.http_port, n=1500,
                             declared_bytes=10 * 1024**2) as uploads:
        assert uploads.wait_connected() == 1500
        with http, grpc:
            fresh = request(target.http_port, "GET", "/fresh-connection")
            held = uploads.report()
    assert fresh.status == 200
    assert held.still_open >= 1400, held.verdict()  # still trickling, none cut short
    reached = [r.target for r in target.http.take() if r.method == "POST"]
    assert reached == []
    served_throughout(http, grpc)


@pytest.mark.parametrize("port_name", ["http_port", "grpc_port"])
def test_silent_sockets_are_closed_and_lock_nobody_out(target: Target,
                                                       port_name: str) -> None:
    port = getattr(target, port_name)
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(1024)]
    try:
        http, grpc = good_clients(target)
        with http, grpc:
            fresh = request(target.http_port, "GET", "/while-silent")
            closed = wait_until(lambda: sum(_closed(s) for s in silent) == len(silent),
                                HEAD_TIMEOUT * 10, "the silent sockets to be closed")
        assert closed and fresh.status == 200
        served_throughout(http, grpc)
    finally:
        for sock in silent:
            sock.close()


def _closed(sock: socket.socket) -> bool:
    """The server closed it: readable, and the read says EOF (or reset)."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
