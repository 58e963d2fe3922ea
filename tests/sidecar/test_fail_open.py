"""No failure of an observability component changes what the client gets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import aiohttp
import pytest
from opentelemetry.sdk.trace import TracerProvider

from lookout.sidecar.config import load_config
from lookout.sidecar.pipeline.observation import Observation
from lookout.sidecar.runtime.tracing import Tracing
from lookout.sidecar.server import Sidecar
from lookout.slo import catalog
from tests.support.processes import free_port, python_data_plane, request, start_sidecar

PATHS = ("/echo", "/status/404", "/status/503", "/chunked?parts=3&size=10")


class RaisingConsumer:
    name = "exploding"

    def __init__(self) -> None:
        self.seen = 0
        self.batches = 0

    async def consume(self, observations: list[Observation]) -> None:
        self.seen += len(observations)
        self.batches += 1
        raise RuntimeError("analysis bug")


class StuckConsumer:
    name = "stuck"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.seen: list[Observation] = []

    async def consume(self, observations: list[Observation]) -> None:
        self.seen.extend(observations)
        await self.release.wait()


async def _fetch_all(base: str) -> list[tuple[int, bytes]]:
    async with aiohttp.ClientSession() as session:
        results = []
        for path in PATHS:
            async with session.get(base + path) as response:
                body = await response.read()
                results.append((response.status, body if path != "/echo" else b""))
        return results


async def _run_in_process(upstream_port: int, consumers, queue_size: int = 64):
    config = load_config({
        "listen": f"127.0.0.1:{free_port()}", "admin": f"127.0.0.1:{free_port()}",
        "upstream": f"http://127.0.0.1:{upstream_port}",
        "observation_queue_size": str(queue_size), "data_plane": "python",
    }, env={"OTEL_TRACES_EXPORTER": "none"})
    # no exporter: these tests are about the pipeline, not span delivery
    sidecar = Sidecar(config, tracing=Tracing(TracerProvider()), consumers=consumers)
    await sidecar.start()
    return sidecar, f"http://127.0.0.1:{config.listen.port}"


def _metric(sidecar: Sidecar, spec: catalog.MetricSpec, **labels: str) -> float:
    value = sidecar.metrics.registry.get_sample_value(spec.sample_name, labels)
    return value or 0.0


def test_a_raising_consumer_changes_no_response(upstream_port: int) -> None:
    async def scenario() -> None:
        direct = await _fetch_all(f"http://127.0.0.1:{upstream_port}")
        consumer = RaisingConsumer()
        sidecar, base = await _run_in_process(upstream_port, [consumer])
        try:
            proxied = await _fetch_all(base)
            await asyncio.wait_for(sidecar.queue.join(), 10)
        finally:
            await sidecar.stop()
        assert proxied == direct
        assert consumer.seen == len(PATHS)
        errors = _metric(sidecar, catalog.COMPONENT_ERRORS, component="exploding")
        assert errors == consumer.batches >= 1
        assert sidecar.pipeline.running is False  # stopped by stop(), not by the errors

    asyncio.run(scenario())


def test_a_full_queue_drops_and_counts_without_waiting(upstream_port: int) -> None:
    async def scenario() -> None:
        consumer = StuckConsumer()
        sidecar, base = await _run_in_process(upstream_port, [consumer], queue_size=2)
        try:
            results = await _fetch_all(base)
            results += await _fetch_all(base)
            dropped = _metric(sidecar, catalog.QUEUE_DROPPED, queue="observations")
            # one observation held by the consumer, two queued, the rest dropped
            assert dropped == 2 * len(PATHS) - 3
            assert [status for status, _ in results] == [200, 404, 503, 200] * 2
            consumer.release.set()
        finally:
            await sidecar.stop()
        assert len(consumer.seen) == 3

    asyncio.run(scenario())


def test_observations_describe_the_exchange(upstream_port: int) -> None:
    async def scenario() -> None:
        consumer = StuckConsumer()
        consumer.release.set()
        sidecar, base = await _run_in_process(upstream_port, [consumer])
        try:
            async with aiohttp.ClientSession() as session, session.post(
                base + "/v2/models/m/infer", data=b"\x89PNG-bytes",
                headers={"Content-Type": "image/png"},
            ) as response:
                body = await response.read()
            await asyncio.wait_for(sidecar.queue.join(), 10)
        finally:
            await sidecar.stop()
        [observation] = consumer.seen
        assert observation.request_body == b"\x89PNG-bytes"
        assert observation.request_headers["Content-Type"] == "image/png"
        assert observation.response_body == body
        assert observation.route == "/v2/models/{model}/infer"
        assert observation.status == 200 and observation.code == "200"
        assert observation.upstream_duration is not None
        assert 0 < observation.upstream_duration <= observation.duration
        assert observation.trace_id is not None and len(observation.trace_id) == 32

    asyncio.run(scenario())


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


@pytest.fixture(scope="module", autouse=True)
def _python_request_path() -> Iterator[None]:
    """The Python request path's own behaviour, not yet carried over to Envoy."""
    with python_data_plane():
        yield
