"""`lookout demo`: the sidecar in front of the built-in echo upstream, some traffic,
and the RED metrics it produced, read back from the admin port like Prometheus would."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import random
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from PIL import Image, ImageDraw
from prometheus_client.parser import text_string_to_metric_families

from sidecar import catalog, echo_upstream
from sidecar.config import Config
from sidecar.server import Sidecar

DEMO_ROUTES = ("/v2/models/yolo/infer", "/predict", "/v2/health/ready")


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _frames(rng: random.Random) -> list[bytes]:
    """A few JPEG camera frames of the usual sizes, drawn here: nothing is downloaded."""
    frames = []
    for size in ((640, 480), (1280, 720), (1920, 1080)):
        image = Image.new("RGB", size, (rng.randrange(256), 90, 120))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x, y = rng.randrange(size[0] - 100), rng.randrange(size[1] - 100)
            draw.rectangle((x, y, x + rng.randrange(20, 100), y + rng.randrange(20, 100)),
                           fill=(rng.randrange(256), rng.randrange(256), 30))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        frames.append(buffer.getvalue())
    return frames


async def _send_traffic(base: str, count: int) -> None:
    rng = random.Random(7)
    frames = _frames(rng)
    async with aiohttp.ClientSession() as session:
        for index in range(count):
            route = DEMO_ROUTES[index % len(DEMO_ROUTES)]
            if route.endswith("ready"):
                async with session.get(base + route) as response:
                    await response.read()
                continue
            body = rng.choice(frames)
            async with session.post(base + route, data=body,
                                    headers={"Content-Type": "image/jpeg"}) as response:
                await response.read()


def _histogram_quantile(buckets: list[tuple[float, float]], quantile: float) -> float:
    """Upper bound of the bucket holding `quantile` (what PromQL interpolates within)."""
    total = buckets[-1][1]
    for bound, cumulative in buckets:
        if total and cumulative / total >= quantile:
            return bound
    return float("inf")


def _summarise(metrics_text: str) -> str:
    lines = ["", "RED metrics scraped from the admin port (the echo upstream returns no "
             "detections, so the analysis counts its answers as unrecognized):"]
    buckets: dict[str, list[tuple[float, float]]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == catalog.REQUESTS.sample_name:
                labels = sample.labels
                lines.append(f"  requests route={labels['route']:<28} code={labels['code']:<4}"
                             f" {sample.value:>6.0f}")
            elif sample.name == catalog.PARSE_FAILURES.sample_name and sample.value:
                lines.append(f"  analysis could not parse: reason={sample.labels['reason']:<22}"
                             f" {sample.value:>6.0f}")
            elif sample.name == catalog.REQUEST_DURATION.bucket_name:
                route = sample.labels["route"]
                buckets.setdefault(route, []).append((float(sample.labels["le"]), sample.value))
    for route, route_buckets in sorted(buckets.items()):
        route_buckets.sort()
        p50 = _histogram_quantile(route_buckets, 0.5) * 1000
        p99 = _histogram_quantile(route_buckets, 0.99) * 1000
        lines.append(f"  latency  route={route:<28} p50<={p50:g} ms  p99<={p99:g} ms")
    return "\n".join(lines)


async def _demo(config: Config, requests: int, keep_serving: bool) -> None:
    upstream = urlsplit(config.upstream)
    runner = web.AppRunner(echo_upstream.build_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, upstream.hostname, upstream.port or 80).start()
    sidecar = Sidecar(config)
    await sidecar.start()
    base = f"http://{_client_host(config.listen.host)}:{config.listen.port}"
    admin = f"http://{_client_host(config.admin.host)}:{config.admin.port}"
    try:
        print(f"echo upstream on {config.upstream}; lookout data port {base}, admin {admin}")
        await _send_traffic(base, requests)
        async with aiohttp.ClientSession() as session:
            async with session.get(admin + "/metrics") as response:
                print(_summarise(await response.text()))
            async with session.get(admin + "/readyz") as response:
                print(f"\n/readyz -> {response.status} {await response.text()}")
        if keep_serving:
            print(f"\nserving; try: curl -s {base}/predict -d hello ; "
                  f"curl -s {admin}/metrics  (Ctrl-C stops)")
            await asyncio.Event().wait()
    finally:
        await sidecar.stop()
        await runner.cleanup()


def run_demo(config: Config, requests: int, keep_serving: bool) -> int:
    if not any(name in os.environ for name in
               ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        os.environ.setdefault("OTEL_TRACES_EXPORTER", "none")  # no collector in a demo
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_demo(config, requests, keep_serving))
    return 0
