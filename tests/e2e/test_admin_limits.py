"""The admin port's connection cap inside the descriptor budget, against a real sidecar
whose RLIMIT_NOFILE is lowered below what the idle sockets would take: counts and
outcomes, never times."""

from __future__ import annotations

import select
import socket
import sys
from collections.abc import Iterator

import pytest

from lookout.slo import catalog
from tests.support.processes import (
    ManagedProcess,
    SidecarProcess,
    free_port,
    request,
    start_sidecar,
    start_upstream,
    wait_until,
)

IDLE_SOCKETS = 5_000
ADMIN_CAP = 64
# below the idle sockets, above what the caps need: 2 x 128 + 64 client connections,
# 4,096 upstream, the admin cap, one ring, the reserve
FILE_LIMIT = 4_700
CLOSED = catalog.ADMIN_CONNECTIONS_CLOSED.sample_name


@pytest.fixture(scope="module")
def sidecar() -> Iterator[SidecarProcess]:
    upstream, port = start_upstream()
    sidecar = start_sidecar(f"http://127.0.0.1:{port}", "--analysis-workers", "1",
                            "--max-client-connections", "128",
                            "--admin-max-connections", str(ADMIN_CAP),
                            "--admin-head-timeout", "1", "--admin-idle-timeout", "600",
                            file_limit=FILE_LIMIT)
    yield sidecar
    assert sidecar.stop() == 0
    upstream.terminate()


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server closed `sock` (EOF or a reset); never blocks."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if not poller.poll(0):
        return False
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _open_ones(sockets: list[socket.socket]) -> list[socket.socket]:
    """The sockets the server has not closed; the closed ones are closed here too."""
    still = []
    for sock in sockets:
        if _closed_by_peer(sock):
            sock.close()
        else:
            still.append(sock)
    return still


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setblocking(False)
    return sock


def test_idle_sockets_are_shed_and_neither_the_data_port_nor_metrics_starve(
        sidecar: SidecarProcess) -> None:
    idle = [_connect(sidecar.admin_port) for _ in range(IDLE_SOCKETS)]
    try:
        # the data port (Envoy) serves meanwhile
        for _ in range(20):
            assert request(sidecar.port, "GET", "/echo").status == 200
        # a fresh scrape takes an idle connection's place
        metrics = request(sidecar.admin_port, "GET", "/metrics")
        assert metrics.status == 200
        assert request(sidecar.admin_port, "GET", "/readyz").status == 200  # the probe
        def shed_to_the_cap() -> bool:
            idle[:] = _open_ones(idle)
            return len(idle) <= ADMIN_CAP

        wait_until(shed_to_the_cap, 60, "the idle sockets over the cap to be closed")
        shed = sidecar.metric(CLOSED, reason="shed_idle")
        assert shed >= IDLE_SOCKETS - ADMIN_CAP
    finally:
        for sock in idle:
            sock.close()
    assert sidecar.process.alive()
    assert "Too many open files" not in sidecar.process.output


def test_a_head_that_never_ends_is_closed_by_the_head_timeout(
        sidecar: SidecarProcess) -> None:
    before = sidecar.metric(CLOSED, reason="head_timeout")
    slow = _connect(sidecar.admin_port)
    slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: lookout\r\nX-Slow: ")
    try:
        wait_until(lambda: _closed_by_peer(slow), 30, "the slow head to be closed")
    finally:
        slow.close()
    assert sidecar.metric(CLOSED, reason="head_timeout") == before + 1
    assert request(sidecar.admin_port, "GET", "/healthz").status == 200


def test_a_body_that_never_ends_is_closed_by_the_head_timeout(
        sidecar: SidecarProcess) -> None:
    before = sidecar.metric(CLOSED, reason="head_timeout")
    slow = _connect(sidecar.admin_port)
    slow.sendall(b"POST /ui/login HTTP/1.1\r\nHost: lookout\r\nContent-Length: 100\r\n"
                 b"Content-Type: application/x-www-form-urlencoded\r\n\r\ntoken=")
    try:
        wait_until(lambda: _closed_by_peer(slow), 30, "the slow body to be closed")
    finally:
        slow.close()
    assert sidecar.metric(CLOSED, reason="head_timeout") == before + 1


def test_caps_that_cannot_fit_the_descriptor_limit_are_refused_naming_the_settings(
        ) -> None:
    process = ManagedProcess([sys.executable, "-m", "lookout", "serve",
                              "--listen", f"127.0.0.1:{free_port()}",
                              "--admin", f"127.0.0.1:{free_port()}",
                              "--max-client-connections", "4096"], file_limit=4_096)
    try:
        wait_until(lambda: not process.alive(), 60, "the sidecar to refuse")
        assert process.popen.returncode == 1
    finally:
        process.terminate()
    output = process.output
    assert "max_client_connections" in output and "admin_max_connections" in output
    assert "RLIMIT_NOFILE allows 4096" in output
