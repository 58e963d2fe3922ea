"""No failure of the span pipeline changes what the client gets (a failing analysis
worker: tests/sidecar/test_analysis_workers.py; a full ring and a killed Envoy:
tests/e2e/test_envoy_data_plane.py)."""

from __future__ import annotations

import socket

from tests.support.processes import free_port, request, start_sidecar

PATHS = ("/echo", "/status/404", "/status/503", "/chunked?parts=3&size=10")


def _statuses_with_collector(upstream_port: int, endpoint: str, protocol: str) -> list[int]:
    """Statuses of 40 requests through a sidecar exporting every span to `endpoint`;
    the sidecar must also still exit 0 (span flushing at shutdown is bounded)."""
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "always_on",
           "OTEL_EXPORTER_OTLP_PROTOCOL": protocol, "OTEL_EXPORTER_OTLP_INSECURE": "true",
           "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    sidecar = start_sidecar(f"http://127.0.0.1:{upstream_port}", env=env)
    try:
        return [request(sidecar.port, "GET", path).status for path in PATHS * 10]
    finally:
        assert sidecar.stop() == 0


def test_dead_collector_changes_no_response(upstream_port: int) -> None:
    statuses = _statuses_with_collector(upstream_port, f"http://127.0.0.1:{free_port()}",
                                        "http/protobuf")
    assert statuses == [200, 404, 503, 200] * 10


def test_black_holed_collector_changes_no_response(upstream_port: int) -> None:
    # accepts connections (backlog) but never reads or answers
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(64)
        statuses = _statuses_with_collector(
            upstream_port, f"http://127.0.0.1:{black_hole.getsockname()[1]}", "grpc")
    assert statuses == [200, 404, 503, 200] * 10


def test_spans_flow_again_once_the_collector_is_back(upstream_port: int) -> None:
    """The collector is down for the first requests (their export fails, the responses
    are untouched), then comes up on its address: spans arrive again."""
    from tests.support.otlp import HttpOtlpReceiver, http_exporter_env

    port = free_port()
    sidecar = start_sidecar(f"http://127.0.0.1:{upstream_port}",
                            env={**http_exporter_env(port), "OTEL_TRACES_SAMPLER": "always_on"})
    collector = None
    try:
        assert [request(sidecar.port, "GET", "/echo").status for _ in range(5)] == [200] * 5
        collector = HttpOtlpReceiver(port)
        assert [request(sidecar.port, "GET", "/echo").status for _ in range(5)] == [200] * 5
        assert collector.wait_for(5, timeout=60)
    finally:
        assert sidecar.stop() == 0
        if collector:
            collector.close()
