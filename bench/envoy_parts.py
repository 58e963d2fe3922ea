"""What each part of lookout's Envoy configuration costs on the request path.

    python bench/envoy_parts.py [--duration 4] [--rounds 3] [--size 1KB] [--connections 1]
                                [--instructions]

Envoy is started with the bootstrap `lookout serve` writes (its HTTP port, from the
default options, the tap into rings this process drains, tracing at the default 10%
parent-based sampling to an OTLP sink) and with that bootstrap less one part at a time,
and beside them Envoy alone (`bench/proxy.py`'s: the router and nothing else). Each is
loaded by wrk (POST, answered with a body of the same size) while pinned to the proxy
core, and its CPU time per request is read from /proc. The variants alternate within
each round, so a drift of the machine hits them all alike; the table gives each one's
median over rounds, as a ratio to Envoy alone, and what removing the part saves.
With --instructions each Envoy runs under valgrind's callgrind and the table counts the
instructions it executes per request over the measured run (`apt-get install valgrind`):
one round gives the same figures every time, so a part worth 1% shows, where the CPU
times of this 2-core machine move by 5-10% from run to run; what memory stalls, page
faults and the kernel cost is not in it, so the timed table stays the one that counts.
Envoy's own process only: lookout's process and its analysis workers are not started;
the ring is as large as the sidecar's by default.
Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.proxy import (
    LOAD_CORE,
    NGINX_UPSTREAM,
    PROXY_CORE,
    SIZES,
    cpu_seconds,
    envoy_binary,
    envoy_config,
    envoy_tracing,
    free_port,
    lookout_bootstrap,
    pinned,
    run_wrk,
    start,
    start_nginx,
    start_sink,
    stop,
    tracing_env,
    wait_port,
    workloads,
)
from lookout.sidecar.config import load_config
from lookout.sidecar.dataplane.data_plane import DEFAULT_MODULE, filter_config
from lookout.sidecar.dataplane.envoy_config import (
    HTTP_LISTENER,
    PRESERVE_CASE,
    TAP_NAME,
)
from lookout.sidecar.dataplane.tap_counters import TapCounters
from lookout.sidecar.dataplane.trace_settings import TraceSettings
from lookout.sidecar.pipeline.channel import Ring
from lookout.sidecar.processes.analysis_worker import POLL_SECONDS
from lookout.slo import catalog

Bootstrap = dict[str, Any]
SINK_ENV: dict[str, str] = {}  # the OTLP sink's variables, once main has started it
FLOOR_NAME = "lookout_floor"


def modules_folder(work: Path) -> Path:
    """Where Envoy looks for modules in this run: the tap as built, and the floor module
    (bench/floor_module.c) built beside it by the tap's Makefile."""
    folder = work / "modules"
    folder.mkdir()
    (folder / DEFAULT_MODULE.name).symlink_to(DEFAULT_MODULE.resolve())
    subprocess.run(["make", "-s", "-C", str(Path(__file__).parents[1] / "tap"),
                    f"BUILD={folder}", "floor"], check=True)
    return folder


def _listener(document: Bootstrap) -> dict[str, Any]:
    return next(each for each in document["static_resources"]["listeners"]
                if each["name"] == HTTP_LISTENER)


def _manager(document: Bootstrap) -> dict[str, Any]:
    return _listener(document)["filter_chains"][0]["filters"][0]["typed_config"]


def _without_filter(name: str) -> Callable[[Bootstrap], None]:
    def change(document: Bootstrap) -> None:
        manager = _manager(document)
        manager["http_filters"] = [each for each in manager["http_filters"]
                                   if each["name"] != name]
    return change


def _tap_config(document: Bootstrap) -> dict[str, Any]:
    return next(each for each in _manager(document)["http_filters"]
                if each["name"] == TAP_NAME)["typed_config"]["filter_config"]


def _no_tracing(document: Bootstrap) -> None:
    """The tap makes no trace context (OTEL_SDK_DISABLED=true)."""
    config = _tap_config(document)
    config["value"] = re.sub(r"trace_sampling_ppm=\d+\n", "", config["value"])


def _envoys_tracer(document: Bootstrap) -> None:
    """Tracing as lookout's Envoy did it before the tap made the trace context: Envoy's
    OpenTelemetry tracer, a span object per request, sampled or not."""
    _no_tracing(document)
    tracing, cluster = envoy_tracing(SINK_ENV)
    _manager(document)["tracing"] = tracing
    document["static_resources"]["clusters"].append(cluster)


def _preserve_case(document: Bootstrap) -> None:
    """`preserve_header_case` on: header names keep their spelling both ways."""
    _manager(document)["http_protocol_options"]["header_key_format"] = PRESERVE_CASE
    for cluster in document["static_resources"]["clusters"]:
        for options in cluster.get("typed_extension_protocol_options", {}).values():
            http1 = options.get("explicit_http_config", {}).get("http_protocol_options")
            if http1 is not None:
                http1["header_key_format"] = PRESERVE_CASE


def _no_forwarded_for(document: Bootstrap) -> None:
    _manager(document)["route_config"]["virtual_hosts"][0].pop("request_headers_to_add")


def _native_forwarded_for(document: Bootstrap) -> None:
    """X-Forwarded-For appended by the connection manager itself (`use_remote_address`)
    instead of a route's formatted header."""
    _no_forwarded_for(document)
    _manager(document)["use_remote_address"] = True


def _no_refusing_routes(document: Bootstrap) -> None:
    """Only the route to the upstream: no early 413, two-Host 400 or upgrade route."""
    host = _manager(document)["route_config"]["virtual_hosts"][0]
    host["routes"] = host["routes"][-1:]


def _no_inspector(document: Bootstrap) -> None:
    _listener(document)["listener_filters"] = []


def _no_local_replies(document: Bootstrap) -> None:
    del _manager(document)["local_reply_config"]


def _no_overload_manager(document: Bootstrap) -> None:
    del document["overload_manager"]


def _connection_buffers(size: int, *, downstream: bool) -> Callable[[Bootstrap], None]:
    """Every upstream connection's buffer limit (and the listener's, with `downstream`)
    at `size` instead of lookout's 256 KiB (the edge guidance says 32 KiB)."""
    def change(document: Bootstrap) -> None:
        for cluster in document["static_resources"]["clusters"]:
            if "per_connection_buffer_limit_bytes" in cluster:
                cluster["per_connection_buffer_limit_bytes"] = size
        if downstream:
            _listener(document)["per_connection_buffer_limit_bytes"] = size
    return change


def _floor_module(config: str) -> Callable[[Bootstrap], None]:
    """The tap replaced by bench/floor_module.c: with `config` "nothing" every hook returns
    at once (what loading any module costs); with "headers" it lists both header maps and
    adds a traceparent (the least an observing module asks of Envoy)."""
    def change(document: Bootstrap) -> None:
        tap = next(each for each in _manager(document)["http_filters"]
                   if each["name"] == TAP_NAME)["typed_config"]
        tap["dynamic_module_config"]["name"] = FLOOR_NAME
        tap["filter_config"]["value"] = config
    return change


def _tap_without_bodies(document: Bootstrap) -> None:
    config = _tap_config(document)
    config["value"] = re.sub(r"max_body=\d+", "max_body=0", config["value"])


UNREAD: list[Ring] = []  # made in main: a ring nobody reads, full after its first laps


def _rings_full(document: Bootstrap) -> None:
    """The tap's ring nobody reads (a stopped or saturated analysis worker): every
    exchange begins with the ring full, so the tap copies nothing and counts it dropped."""
    config = _tap_config(document)
    ring = UNREAD[0]
    config["value"] = re.sub(r"ring=[^\n]*", f"ring={ring.name},{ring.wake_path},"
                             f"{ring.max_records}", config["value"])


def _no_protections(document: Bootstrap) -> None:
    """Every part that hardens the port gone at once (each alone is within the noise):
    the buffer filter, X-Forwarded-For, the refusing routes, the inspector,
    local replies, the overload manager, the timeouts and header checks lookout adds."""
    for change in (_without_filter("envoy.filters.http.buffer"), _no_forwarded_for,
                   _no_refusing_routes, _no_inspector, _no_local_replies,
                   _no_overload_manager):
        change(document)
    manager = _manager(document)
    for key in ("request_headers_timeout", "stream_idle_timeout", "request_timeout",
                "max_request_headers_kb", "common_http_protocol_options"):
        manager.pop(key, None)
    _listener(document).pop("per_connection_buffer_limit_bytes", None)


def _dynamic_stats(document: Bootstrap) -> None:
    """The router's dynamic cluster stats on (Envoy's default; lookout turns them off:
    the tap counts every exchange itself)."""
    _manager(document)["http_filters"][-1]["typed_config"]["dynamic_stats"] = True


VARIANTS: dict[str, Callable[[Bootstrap], None]] = {
    "as shipped": lambda document: None,
    "no tracing": _no_tracing,
    "Envoy's tracer instead": _envoys_tracer,
    "no tap": _without_filter(TAP_NAME),
    "no buffer filter": _without_filter("envoy.filters.http.buffer"),
    "preserve_header_case": _preserve_case,
    "no X-Forwarded-For": _no_forwarded_for,
    "native X-Forwarded-For": _native_forwarded_for,
    "no refusing routes": _no_refusing_routes,
    "no HTTP inspector": _no_inspector,
    "no local replies": _no_local_replies,
    "no overload manager": _no_overload_manager,
    "1 MiB upstream buffers": _connection_buffers(1024**2, downstream=False),
    "1 MiB buffers": _connection_buffers(1024**2, downstream=True),
    "256 KiB buffers": _connection_buffers(256 * 1024, downstream=True),
    "128 KiB buffers": _connection_buffers(128 * 1024, downstream=True),
    "32 KiB buffers": _connection_buffers(32 * 1024, downstream=True),
    "tap copies no bodies": _tap_without_bodies,
    "rings full (nobody reading)": _rings_full,
    "no protections": _no_protections,
    "Envoy's dynamic stats": _dynamic_stats,
    "pass-through module": _floor_module("nothing"),
    "floor: headers read and traceparent added": _floor_module("headers"),
}


class Drainer:
    """Reads the tap's rings as a busy analysis worker does, without analysing: polling
    every 5 ms, never saying it sleeps, so the tap's copies succeed and it is sent no
    wake-ups (a ring nobody reads is full, and a full ring costs less)."""

    def __init__(self, rings: list[Ring]) -> None:
        self._rings = rings
        self._stopping = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping:
            for ring in self._rings:
                while ring.take(len) is not None:
                    ring.finish()
            time.sleep(POLL_SECONDS)

    def stop(self) -> None:
        self._stopping = True
        self._thread.join()


def tapped_bootstrap(port: int, upstream: int, work: Path, rings: list[Ring],
                     counters: str, env: dict[str, str]) -> Bootstrap:
    """`lookout serve`'s bootstrap, its tap writing into `rings`."""
    return lookout_bootstrap(port, upstream, str(work / f"admin-{port}.sock"),
                             lambda config: filter_config(
                                 counters, rings, 1, config.observe_max_bytes,
                                 config.observation_queue_bytes, config.routes,
                                 TraceSettings.from_env(env)))


def _start_envoy(name: str, config: Path, work: Path, *, instructions: bool
                 ) -> tuple[subprocess.Popen, Path]:
    binary = envoy_binary()
    assert binary is not None
    environment = {"ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(work / "modules")}
    slug = name.replace(" ", "-")
    command = [binary, "-c", str(config), "--concurrency", "1", "--log-level", "warning",
               "--disable-hot-restart"]
    counts = work / f"callgrind-{slug}.out"
    if instructions:  # counted from the measured run on, by callgrind_control
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   f"--callgrind-out-file={counts}", *command]
    return start(pinned(PROXY_CORE, command), work / f"{slug}.log", env=environment), counts


def _instructions_counted(counts: Path) -> int:
    """Instructions callgrind counted, over the dump files of every thread."""
    total = 0
    for dump in counts.parent.glob(counts.name + "*"):
        for line in dump.read_text().splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
    return total


def measure(name: str, config: Path, port: int, size: str, connections: int,
            duration: float, script: Path, work: Path, *, instructions: bool = False
            ) -> float:
    """Envoy's CPU microseconds per request under wrk; with `instructions`, the
    instructions per request it executes under callgrind instead (about 50x slower,
    but the same count on every run: a part's cost without the machine's noise, though
    blind to what memory and the kernel cost)."""
    process, counts = _start_envoy(name, config, work, instructions=instructions)
    try:
        wait_port(port, timeout=120 if instructions else 30)
        url = f"http://127.0.0.1:{port}/{size}"
        for _ in range(50):
            urllib.request.urlopen(url, data=b"warm", timeout=60).read()
        run_wrk(url, connections, 1, script)  # warm-up
        if instructions:
            subprocess.run(["callgrind_control", "--instr=on", str(process.pid)], check=True,
                           capture_output=True)
        before = cpu_seconds(process.pid, children=False)
        rps, _, _, errors = run_wrk(url, connections, duration, script)
        spent = cpu_seconds(process.pid, children=False) - before
        if errors:
            raise RuntimeError(f"{name}: {errors} failed requests")
        if instructions:
            subprocess.run(["callgrind_control", "--dump", str(process.pid)], check=True,
                           capture_output=True)
            return _instructions_counted(counts) / (rps * duration)
        return spent / (rps * duration) * 1e6
    finally:
        stop(process)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", default="1KB", choices=[s for s in SIZES if s != "jpeg"])
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions per request under callgrind (valgrind) "
                             "instead of timing CPU; one round is enough")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="which of lookout's bootstraps to measure, by name")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder (bootstraps, logs, callgrind's files for "
                             "callgrind_annotate) instead of removing it")
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    work = Path(tempfile.mkdtemp(prefix="lookout-envoy-parts-"))
    work.chmod(0o755)
    (work / "www").mkdir(mode=0o755)
    modules_folder(work)
    script = workloads(work)[args.size].script
    processes: list[subprocess.Popen] = []
    # sized as `lookout serve` sizes its one ring here by default (one Envoy worker, one
    # analysis worker: the whole channel): a ring that fits the caches is cheaper to fill
    defaults = load_config({"listen": "127.0.0.1:1", "upstream": "http://127.0.0.1:1"},
                           env={})
    rings = [Ring.create(defaults.observation_queue_bytes, defaults.observation_queue_size,
                         str(work / "wake-0-0"))[0]]
    counters = TapCounters(f"/lookout-bench-{os.getpid()}-counters", 1, 1024,
                           catalog.LATENCY_BUCKETS, catalog.BYTES_BUCKETS)
    UNREAD.append(Ring.create(defaults.observation_queue_bytes,
                              defaults.observation_queue_size, str(work / "wake-unread"))[0])
    drainer = Drainer(rings)
    results: dict[str, list[float]] = {}
    try:
        upstream = free_port()
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        processes.append(start_nginx(nginx, NGINX_UPSTREAM.format(dir=work, port=upstream),
                                     work, "upstream"))
        sink, sink_port = start_sink(work)
        processes.append(sink)
        SINK_ENV.update(tracing_env(sink_port))
        wait_port(upstream)
        configs: dict[str, tuple[Path, int]] = {}
        port = free_port()
        configs["Envoy alone"] = (work / "envoy-alone.yaml", port)
        configs["Envoy alone"][0].write_text(envoy_config(port, upstream))
        for name in args.variants.split(","):
            port = free_port()
            document = tapped_bootstrap(port, upstream, work, rings, counters.name,
                                        tracing_env(sink_port))
            VARIANTS[name](document)
            path = work / f"{name.replace(' ', '-')}.json"
            path.write_text(json.dumps(document, indent=1))
            configs[name] = (path, port)
        unit = "instructions/request" if args.instructions else "us/request"
        for round_number in range(args.rounds):
            for name, (path, port) in configs.items():
                cost = measure(name, path, port, args.size, args.connections, args.duration,
                               script, work, instructions=args.instructions)
                results.setdefault(name, []).append(cost)
                print(f"round {round_number + 1}: {name}: {cost:,.1f} {unit}", flush=True)
    finally:
        for process in processes:
            stop(process)
        drainer.stop()
        for ring in rings + UNREAD:
            ring.close()
        counters.close()
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(report(results, args))
    return 0


def report(results: dict[str, list[float]], args: argparse.Namespace) -> str:
    """Each variant's cost as a ratio to Envoy alone in the same round, the median over
    rounds (the machine's drift between rounds cancels)."""
    alone = results["Envoy alone"]

    def ratio(name: str) -> float:
        pairs = zip(results[name], alone, strict=True)
        return statistics.median(cost / base for cost, base in pairs)

    shipped = ratio("as shipped") if "as shipped" in results else 1.0
    what, unit = (("instructions per request (callgrind)", "instructions/request")
                  if args.instructions else ("CPU per request", "us/request"))
    lines = [f"{args.size}, {args.connections} connection(s), {args.rounds} rounds of "
             f"{args.duration:g} s: Envoy's {what}, the median of each round's "
             f"ratio to Envoy alone",
             "", f"| bootstrap | {unit} (median) | vs Envoy alone | saved vs as shipped |",
             "| --- | --- | --- | --- |"]
    for name, costs in results.items():
        saved = f"{shipped - ratio(name):+.3f}x" if name not in (
            "Envoy alone", "as shipped") else ""
        lines.append(f"| {name} | {statistics.median(costs):,.1f} | {ratio(name):.3f}x "
                     f"| {saved} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
