"""Soak: the demo inference server behind lookout with everything on — tracing at 10%
to an OTLP endpoint, shadow evaluation, thumbnail sampling to a store, drift — offered
twice the rate the server sustains alone, for a bounded time, on loopback only.

It reports what an on-call engineer would ask of a sidecar under overload: every
request's fate by status and by origin (the inference server, or lookout itself, which
marks its own answers with X-Lookout-Error), lookout's memory at start, middle and end,
its CPU per 1000 requests/s, and every drop lookout counted (observation, shadow and
sample queues) — nothing may be dropped silently, and lookout itself may fail nothing.

    python bench/soak.py                        # 10 minutes
    python bench/soak.py --quick                # 60 s smoke
    python bench/soak.py --json bench/results/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.proxy import REPO, cpu_seconds, free_port, rss_mb, start, stop, wait_port
from lookout.lookout_demo.models import model_path
from lookout.lookout_demo.scenes import generate_scene
from lookout.sidecar.dataplane.envoy_config import ERROR_HEADER
from lookout.slo import catalog

FRAMES = 64  # distinct camera frames, sent round robin
CONCURRENCY_CAP = 64  # in-flight requests; beyond it the client sheds (counted)


@dataclass
class Tally:
    statuses: Counter = field(default_factory=Counter)  # "upstream 200", "lookout 502"...
    shed: int = 0  # not sent: the client was at its concurrency cap
    client_errors: Counter = field(default_factory=Counter)  # resets, timeouts
    sent: int = 0
    latencies: list[float] = field(default_factory=list)


async def _one(session: aiohttp.ClientSession, url: str, body: bytes, tally: Tally) -> None:
    started = time.perf_counter()
    try:
        async with session.post(url, data=body,
                                headers={"Content-Type": "image/jpeg"}) as response:
            await response.read()
            origin = "lookout" if ERROR_HEADER in response.headers else "upstream"
            tally.statuses[f"{origin} {response.status}"] += 1
    except (TimeoutError, aiohttp.ClientError) as error:
        tally.client_errors[type(error).__name__] += 1
    tally.latencies.append(time.perf_counter() - started)


async def closed_loop_rate(url: str, frames: list[bytes], seconds: float,
                           clients: int = 8) -> float:
    """Requests/s the target sustains with `clients` back-to-back clients."""
    tally = Tally()
    stop_at = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        async def client(offset: int) -> None:
            index = offset
            while time.monotonic() < stop_at:
                await _one(session, url, frames[index % len(frames)], tally)
                index += clients
        await asyncio.gather(*(client(i) for i in range(clients)))
    return sum(tally.statuses.values()) / seconds


@dataclass
class Scrapes:
    """/metrics fetched every second during the load, as Prometheus would."""

    ok: int = 0
    failed: int = 0
    slowest_s: float = 0.0


async def scrape_loop(url: str, scrapes: Scrapes, stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            await _scrape(session, url, scrapes, stop)


async def _scrape(session: aiohttp.ClientSession, url: str, scrapes: Scrapes,
                  stop: asyncio.Event) -> None:
    started = time.perf_counter()
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
            await response.read()
            scrapes.ok += response.status == 200
            scrapes.failed += response.status != 200
    except (TimeoutError, aiohttp.ClientError):
        scrapes.failed += 1
    scrapes.slowest_s = max(scrapes.slowest_s, time.perf_counter() - started)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), 1.0)


async def open_loop(url: str, frames: list[bytes], rate: float, seconds: float,
                    on_tick, metrics_url: str = "", scrapes: Scrapes | None = None) -> Tally:
    """Offer `rate` requests/s for `seconds`, whatever the answers' latency, while
    /metrics is scraped every second."""
    tally = Tally()
    stop = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY_CAP)
    in_flight: set[asyncio.Task] = set()
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        scraper = (asyncio.create_task(scrape_loop(metrics_url, scrapes, stop))
                   if scrapes else None)
        started = time.monotonic()
        next_tick = started
        while (now := time.monotonic()) < started + seconds:
            due = int((now - started) * rate) - tally.sent - tally.shed
            for _ in range(max(due, 0)):
                if len(in_flight) >= CONCURRENCY_CAP:
                    tally.shed += 1
                    continue
                body = frames[(tally.sent + tally.shed) % len(frames)]
                task = asyncio.create_task(_one(session, url, body, tally))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                tally.sent += 1
            if now >= next_tick:
                on_tick(now - started)
                next_tick += 5
            await asyncio.sleep(0.002)
        await asyncio.gather(*in_flight)
        stop.set()
        if scraper:
            await scraper
    return tally


def _metric_totals(text: str) -> dict[str, dict[str, float]]:
    """sample name -> label values joined -> value, for the drop and outcome counters."""
    wanted = {catalog.QUEUE_DROPPED.sample_name, catalog.OBSERVATIONS.sample_name,
              catalog.SAMPLES_DROPPED.sample_name,
              catalog.SAMPLES_STORED.sample_name, catalog.SHADOW_EVALUATIONS.sample_name,
              catalog.COMPONENT_ERRORS.sample_name, catalog.REQUESTS.sample_name}
    totals: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                key = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items())
                               if k not in ("model", "version", "route"))
                bucket = totals.setdefault(sample.name, {})
                bucket[key] = bucket.get(key, 0.0) + sample.value
    return totals


CGROUP_CPU = Path("/sys/fs/cgroup/cpu")  # cgroup v1, as on this machine


def in_pod_cgroup(name: str, cpus: float, args: list[str]) -> list[str]:
    """`args` run in a CPU cgroup of its own with a quota of `cpus`, as a container
    with that CPU limit runs in a pod: the sidecar's processes then share only their own
    CPU (where the workers' lower priority protects the proxy), not the server's."""
    if not cpus:
        return args
    group = CGROUP_CPU / f"lookout-soak-{name}"
    group.mkdir(exist_ok=True)
    (group / "cpu.cfs_period_us").write_text("100000")
    (group / "cpu.cfs_quota_us").write_text(str(int(cpus * 100000)))
    return ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh", *args]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--quick", action="store_true", help="60 s (CI smoke)")
    parser.add_argument("--overload", type=float, default=2.0,
                        help="offered rate as a multiple of the upstream's own")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--pod-cpus", type=float, default=0.0,
                        help="run the server and lookout each in a CPU cgroup with this "
                             "quota, as containers in a pod (needs root; 0: share cores)")
    args = parser.parse_args()
    duration = 60.0 if args.quick else args.duration
    work = Path(tempfile.mkdtemp(prefix="lookout-soak-"))
    frames = [generate_scene(7_000_000 + i).jpeg() for i in range(FRAMES)]
    upstream_port, sidecar_port, admin_port, sink_port = (free_port() for _ in range(4))
    python = sys.executable
    processes = [start(in_pod_cgroup("upstream", args.pod_cpus, [
                           python, "-m", "lookout", "demo-upstream", "--port",
                           str(upstream_port)]), work / "upstream.log"),
                 start([python, str(REPO / "bench" / "otlp_sink.py"), str(sink_port)],
                       work / "sink.log")]
    try:
        wait_port(upstream_port, 60)
        wait_port(sink_port)
        upstream_url = f"http://127.0.0.1:{upstream_port}/predict"
        asyncio.run(closed_loop_rate(upstream_url, frames, 3))  # warm the server up
        capacity = asyncio.run(closed_loop_rate(upstream_url, frames, 10))
        sidecar = start(in_pod_cgroup("sidecar", args.pod_cpus, [
            python, "-m", "lookout", "serve", "--listen", f"127.0.0.1:{sidecar_port}",
            "--admin", f"127.0.0.1:{admin_port}",
            "--upstream", f"http://127.0.0.1:{upstream_port}", "--model-name", "soak",
            "--model-version", "v1", "--model-path", str(model_path("primary")),
            "--shadow-model-path", str(model_path("reference")),
            "--sample-dir", str(work / "samples")]),
            work / "sidecar.log",
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
                 "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                 "OTEL_TRACES_SAMPLER_ARG": "0.1", "OTEL_SERVICE_NAME": "soak"})
        processes.append(sidecar)
        wait_port(sidecar_port, 60)
        wait_port(admin_port, 60)
        rss: list[tuple[float, float]] = []
        cpu_start = cpu_seconds(sidecar.pid)

        def tick(elapsed: float) -> None:
            rss.append((round(elapsed, 1), round(rss_mb(sidecar.pid), 1)))

        rate = capacity * args.overload
        print(f"upstream alone: {capacity:.1f} req/s; offering {rate:.1f} req/s to lookout "
              f"for {duration:.0f} s", flush=True)
        scrapes = Scrapes()
        tally = asyncio.run(open_loop(f"http://127.0.0.1:{sidecar_port}/predict", frames, rate,
                                      duration, tick, f"http://127.0.0.1:{admin_port}/metrics",
                                      scrapes))
        cpu = cpu_seconds(sidecar.pid) - cpu_start
        tick(duration)
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics",
                                    timeout=10) as response:
            counters = _metric_totals(response.read().decode())
        answered = sum(tally.statuses.values())
        lookout_made = {k: v for k, v in tally.statuses.items() if k.startswith("lookout")}
        warm = [m for t, m in rss if t >= duration / 3]
        report = {
            "duration_s": duration, "pod_cpus": args.pod_cpus,
            "upstream_capacity_rps": round(capacity, 1),
            "offered_rps": round(rate, 1), "sent": tally.sent, "shed_by_client": tally.shed,
            "answered": answered, "answered_rps": round(answered / duration, 1),
            "by_status_and_origin": dict(tally.statuses),
            "client_errors": dict(tally.client_errors),
            "lookout_originated_failures": sum(lookout_made.values()),
            "rss_mb": {"start": rss[0][1], "middle": rss[len(rss) // 2][1], "end": rss[-1][1],
                       "samples": rss},
            "rss_growth_after_warmup": round(warm[-1] / warm[0] - 1, 3) if warm else None,
            "sidecar_cpu_s": round(cpu, 1),
            "cpu_s_per_s_per_1000_rps": round(cpu / duration / (answered / duration / 1000), 3)
            if answered else None,
            "latency_p50_s": _quantile(tally.latencies, 0.5),
            "latency_p99_s": _quantile(tally.latencies, 0.99),
            "metrics_scrapes": {"ok": scrapes.ok, "failed": scrapes.failed,
                                "slowest_s": round(scrapes.slowest_s, 3)},
            "lookout_counters": counters,
        }
    finally:
        for process in reversed(processes):
            stop(process)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    healthy = (report["lookout_originated_failures"] == 0 and not tally.client_errors
               and scrapes.failed == 0)
    return 0 if healthy else 1


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(int(q * len(ordered)), len(ordered) - 1)], 4)


if __name__ == "__main__":
    sys.exit(main())
