"""SIGTERM: stop accepting, finish in-flight requests, flush spans, exit 0."""

from __future__ import annotations

import contextlib
import signal
import threading

from tests.support.otlp import HttpOtlpReceiver
from tests.support.processes import (
    port_accepts,
    request,
    start_sidecar,
    wait_until,
)


def test_sigterm_drains_in_flight_requests_and_exits_zero(upstream_port: int) -> None:
    sidecar = start_sidecar(f"http://127.0.0.1:{upstream_port}", "--shutdown-grace", "20")
    results: list = []
    clients = [
        threading.Thread(target=lambda: results.append(
            request(sidecar.port, "POST", "/slow?delay=1.5", body=b"frame")))
        for _ in range(3)
    ]
    for client in clients:
        client.start()
    wait_until(lambda: request(upstream_port, "GET", "/in-flight").json()["slow"] >= 3, 20,
               "three requests in flight at the upstream")

    sidecar.process.popen.send_signal(signal.SIGTERM)
    wait_until(lambda: not port_accepts(sidecar.port), 10, "the data port to stop accepting")
    assert request(sidecar.admin_port, "GET", "/readyz").status == 503
    for client in clients:
        client.join(30)

    assert [r.status for r in results] == [200, 200, 200]
    assert all(r.json() == {"slept": 1.5} for r in results)
    assert sidecar.process.popen.wait(30) == 0, sidecar.process.output
    assert "shutdown complete" in sidecar.process.output


def test_grace_period_bounds_the_drain(upstream_port: int) -> None:
    sidecar = start_sidecar(f"http://127.0.0.1:{upstream_port}", "--shutdown-grace", "0.5")
    client = threading.Thread(target=_ignore_errors, args=(sidecar.port,))
    client.start()
    wait_until(lambda: request(upstream_port, "GET", "/in-flight").json()["slow"] >= 1, 20,
               "a request in flight at the upstream")
    sidecar.process.popen.send_signal(signal.SIGTERM)
    # exits well before the 30 s request would finish
    assert sidecar.process.popen.wait(15) == 0
    client.join(30)


def _ignore_errors(port: int) -> None:
    with contextlib.suppress(OSError):
        request(port, "GET", "/slow?delay=30", timeout=60)


def test_buffered_spans_are_flushed_on_shutdown(upstream_port: int) -> None:
    """Stopped straight after its one request, with spans exported every 3 s: the stop
    waits for Envoy's next flush (Envoy has no flush of its own on exit)."""
    receiver = HttpOtlpReceiver()
    env = {**receiver.env, "OTEL_TRACES_SAMPLER": "always_on",
           "OTEL_BSP_SCHEDULE_DELAY": "3000", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "512"}
    sidecar = start_sidecar(f"http://127.0.0.1:{upstream_port}", env=env)
    try:
        response = request(sidecar.port, "GET", "/echo")
        assert response.status == 200
        assert sidecar.stop() == 0
        spans = receiver.wait_for(1)
    finally:
        receiver.close()
    assert len(spans) == 1  # the request's one span (Envoy makes no upstream span)

