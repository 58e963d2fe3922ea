"""Replay of YOLO11n V2 JSON traffic: the bodies a KServe Python server exchanges for
an ONNX export (requests: a [1, 3, 640, 640] FP32 tensor as JSON, about 23 MB;
responses: the raw [1, 84, 8400] head as JSON, about 14 MB), sent open loop at fixed
rates directly, through nginx and through lookout, in one run.

It prints, per rate and path: requests answered 200, answers lookout made itself
(502/504...), client errors, p50 and p99, and the p50 each proxy adds over direct.

    python bench/replay.py                       # 2, 5 and 20 req/s, 20 s each
    python bench/replay.py --rates 5 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.proxy import cpu_seconds, descendants, free_port, rss_mb, start, stop, wait_port
from lookout.slo import catalog
from tests.support.nginx import Nginx
from tests.support.processes import request
from tests.support.raw_head_upstream import MODEL

INFER = f"/v2/models/{MODEL}/infer"


def request_body() -> bytes:
    pixels = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    return json.dumps({"inputs": [{"name": "images", "datatype": "FP32",
                                   "shape": [1, 3, 640, 640],
                                   "data": pixels.reshape(-1).round(4).tolist()}]}).encode()


def replay(port: int, body: bytes, rate: float, seconds: float) -> dict:
    latencies: list[float] = []
    outcomes: Counter = Counter()
    lock = threading.Lock()

    def one() -> None:
        started = time.perf_counter()
        try:
            response = request(port, "POST", INFER, body,
                               {"Content-Type": "application/json"}, timeout=120)
            outcome = str(response.status) + (
                " lookout" if response.headers.get("X-Lookout-Error") else "")
        except OSError as error:
            outcome = f"client {type(error).__name__}"
        with lock:
            latencies.append(time.perf_counter() - started)
            outcomes[outcome] += 1

    threads, begun = [], time.monotonic()
    for i in range(int(rate * seconds)):
        delay = begun + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        thread = threading.Thread(target=one)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    ordered = sorted(latencies)
    return {"sent": len(threads), "outcomes": dict(outcomes),
            "p50_ms": statistics.median(ordered) * 1000,
            "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000}


def memory_by_process(pid: int) -> dict[str, float]:
    """RSS and PSS (MB) of the proxy and of each analysis worker. PSS splits the shared
    channel between the processes that map it, so PSS adds up where RSS double-counts."""
    found = {}
    for each in descendants(pid):
        try:
            command = Path(f"/proc/{each}/cmdline").read_bytes()
            rollup = Path(f"/proc/{each}/smaps_rollup").read_text()
        except OSError:
            continue
        if each != pid and b"spawn_main" not in command:
            continue  # multiprocessing's resource tracker
        values = dict(line.split(":", 1) for line in rollup.splitlines()[1:])
        name = "proxy" if each == pid else f"worker {len(found) - 1}"
        found[name] = {key.lower(): int(values[key].split()[0]) / 1024
                       for key in ("Rss", "Pss")}
    return found


def scrape_ms(admin: int, times: int = 20) -> float:
    started = time.perf_counter()
    for _ in range(times):
        assert request(admin, "GET", "/metrics").status == 200
    return (time.perf_counter() - started) / times * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="2,5,20")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lookout-replay-"))
    body = request_body()
    upstream_port, port, admin = free_port(), free_port(), free_port()
    processes = [start([sys.executable, "-m", "tests.support.raw_head_upstream",
                        str(upstream_port)], work / "upstream.log")]
    nginx = None
    try:
        wait_port(upstream_port, 60)
        nginx = Nginx(upstream_port, 64 * 1024**2)
        sidecar = start([sys.executable, "-m", "lookout", "serve",
                         "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}",
                         "--upstream", f"http://127.0.0.1:{upstream_port}",
                         "--max-body-bytes", "64MiB", "--log-level", "warning"],
                        work / "sidecar.log", env={"OTEL_TRACES_EXPORTER": "none"})
        processes.append(sidecar)
        wait_port(port, 60)
        paths = {"direct": upstream_port, "nginx": nginx.port, "lookout": port}
        request(port, "GET", "/v2/health/ready")
        time.sleep(3)  # let the workers finish importing before the idle reading
        results: dict[str, dict] = {"memory_idle": memory_by_process(sidecar.pid)}
        for target in paths.values():  # warm each path up
            request(target, "POST", INFER, body, {"Content-Type": "application/json"})
        print(f"request {len(body) / 1e6:.1f} MB; {'rate':>5} {'path':8} {'sent':>5} "
              f"{'p50 ms':>8} {'p99 ms':>8} {'added p50':>10}  outcomes", flush=True)
        cpu_before = cpu_seconds(sidecar.pid)
        for rate in (float(r) for r in args.rates.split(",")):
            for name, target in paths.items():
                result = replay(target, body, rate, args.seconds)
                results[f"{rate:g}/{name}"] = result
                direct = results[f"{rate:g}/direct"]["p50_ms"]
                added = result["p50_ms"] - direct if name != "direct" else 0.0
                print(f"{'':>22}{rate:5g} {name:8} {result['sent']:5d} "
                      f"{result['p50_ms']:8.1f} {result['p99_ms']:8.1f} {added:10.1f}  "
                      f"{result['outcomes']}", flush=True)
        results["lookout_cpu_s"] = cpu_seconds(sidecar.pid) - cpu_before
        results["lookout_rss_mb"] = rss_mb(sidecar.pid)
        results["memory_after_load"] = memory_by_process(sidecar.pid)
        results["scrape_ms"] = scrape_ms(admin)
        print(f"memory idle {results['memory_idle']}\nmemory after load "
              f"{results['memory_after_load']}\n/metrics {results['scrape_ms']:.1f} ms")
        metrics = request(admin, "GET", "/metrics").body.decode()
        results["observations"] = [line for line in metrics.splitlines()
                                   if line.startswith((catalog.OBSERVATIONS.sample_name,
                                                       catalog.QUEUE_DROPPED.sample_name,
                                                       catalog.PARSE_FAILURES.sample_name))
                                   and not line.endswith(" 0.0")]
        print("\n".join(results["observations"]))
        print(f"lookout: {results['lookout_cpu_s']:.1f} CPU-s, "
              f"RSS {results['lookout_rss_mb']:.0f} MB (proxy and workers)")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        for process in processes:
            stop(process)
        if nginx is not None:
            nginx.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
