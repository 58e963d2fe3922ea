"""Real-Envoy smoke check of the tap (loopback only).

    .venv/bin/python tap/smoke_envoy.py [--envoy PATH] [--build tap/build]

Makes the counters segment, two rings and their FIFOs (tapshm.py), starts
`python3 -m http.server` on 127.0.0.1 and Envoy 1.40 (--concurrency 1) with the tap in front
of the router, sends a few requests with curl (a POST with a body among them), then reads
the records (with sidecar/pipeline/channel.py's Ring when it imports, else tapshm's copy of
its take()) and the counter slots, prints them, and checks that Envoy logged
"Dynamic module ABI version v0.2.0 matched". Exit status 0 when everything held.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tapshm  # noqa: E402

ENVOY = os.path.join(os.path.dirname(HERE), ".venv/lib/python3.11/site-packages/envoy/_bin/envoy")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def bootstrap(port: int, upstream: int, config: str) -> dict:
    tap = {"name": "lookout_tap", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3."
                 "DynamicModuleFilter",
        "dynamic_module_config": {"name": "lookout_tap"}, "filter_name": "lookout_tap",
        "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                          "value": config}}}
    router = {"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                 "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "smoke", "http_filters": [tap, router],
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]}]}}
    address = {"socket_address": {"address": "127.0.0.1", "port_value": upstream}}
    return {"static_resources": {
        "listeners": [{"name": "smoke", "address": {"socket_address": {
            "address": "127.0.0.1", "port_value": port}}, "filter_chains": [{"filters": [
                {"name": "envoy.filters.network.http_connection_manager",
                 "typed_config": manager}]}]}],
        "clusters": [{"name": "upstream", "type": "STATIC", "connect_timeout": "1s",
                      "load_assignment": {"cluster_name": "upstream", "endpoints": [
                          {"lb_endpoints": [{"endpoint": {"address": address}}]}]}}]}}


def take_all(name: str) -> list[bytes]:
    """Drain a ring with channel.py's own consumer when it imports (the compatibility that
    matters), else with tapshm's copy of its take()."""
    out = []
    try:
        sys.path.insert(0, os.path.dirname(HERE))
        from multiprocessing import resource_tracker, shared_memory

        from sidecar.pipeline.channel import Ring, RingAddress
        memory = shared_memory.SharedMemory(name=name.lstrip("/"))
        resource_tracker.unregister(memory._name, "shared_memory")  # not ours to unlink
        ring = Ring(memory, RingAddress(name, memory.size - 64, 1000, None, None), owner=False)
        while (record := ring.take()) is not None:
            out.append(record)
        ring._buffer = None
        memory.close()
        print(f"  ring {name}: read with sidecar.pipeline.channel.Ring")
    except ImportError:
        reader = tapshm.RingReader(name)
        while (record := reader.take()) is not None:
            out.append(record)
        reader.close()
        print(f"  ring {name}: read with tapshm.RingReader")
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--envoy", default=ENVOY)
    parser.add_argument("--build", default=os.path.join(HERE, "build"))
    args = parser.parse_args()
    ident = f"lookout-tapsmoke-{os.getpid()}"
    counters, rings = f"/{ident}-cnt", []
    procs: list[subprocess.Popen] = []
    ok = True
    with tempfile.TemporaryDirectory(prefix="lookout-tap-smoke-") as tmp:
        try:
            tapshm.create_counters(counters, 1, 64, [10**6, 10**7, 10**8, 10**9],
                                   [100, 10**4, 10**6])
            for i in range(2):
                rings.append((f"/{ident}-r{i}", os.path.join(tmp, f"fifo{i}"), 1000))
                tapshm.create_ring(rings[-1][0], rings[-1][1], 1 << 20)
            config = tapshm.config_text(counters, rings, 2, 65536, 8 << 20,
                                        ["/v2/models/{model}/infer", "/hello.txt"])
            port, upstream = free_port(), free_port()
            root = os.path.join(tmp, "www")
            os.mkdir(root)
            with open(os.path.join(root, "hello.txt"), "w") as f:
                f.write("hello from upstream\n")
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(upstream)],
                cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            with open(os.path.join(tmp, "envoy.json"), "w") as f:
                json.dump(bootstrap(port, upstream, config), f)
            log_path = os.path.join(tmp, "envoy.log")
            env = dict(os.environ, ENVOY_DYNAMIC_MODULES_SEARCH_PATH=os.path.abspath(args.build))
            with open(log_path, "w") as log:
                procs.append(subprocess.Popen(
                    [args.envoy, "-c", os.path.join(tmp, "envoy.json"), "--concurrency", "1",
                     "--disable-hot-restart", "-l", "info"], env=env, stdout=log, stderr=log))
            wait_port(upstream, time.monotonic() + 10)
            wait_port(port, time.monotonic() + 30)
            base = f"http://127.0.0.1:{port}"
            trace = "4bf92f3577b34da6a3ce929d0e0e4736"
            requests = [
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{base}/hello.txt",
                 "-H", f"traceparent: 00-{trace}-00f067aa0ba902b7-01"],
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                 f"{base}/v2/models/resnet/infer", "-H", "content-type: application/json",
                 "--data-binary", '{"inputs": [{"name": "x", "data": [1, 2, 3]}]}'],
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{base}/nothing"],
            ]
            for request in requests:
                done = subprocess.run(request, capture_output=True, text=True, timeout=10)
                print(f"curl {request[5]} -> {done.stdout}")
            time.sleep(0.5)  # stream_complete runs as each stream is torn down
            records = [tapshm.parse_record(r) for name, _, _ in rings for r in take_all(name)]
            for record in sorted(records, key=lambda r: r["start_unix_ns"]):
                short = {k: (v[:60] if isinstance(v, bytes) else
                             len(v) if isinstance(v, list) else v) for k, v in record.items()}
                print("  record", short)
            state = tapshm.read_counters(counters)
            area = state["areas"][0]
            print("counters:", {k: v for k, v in area.items() if k != "slots"},
                  "untapped", state["untapped"], "thread_claims", state["thread_claims"])
            for slot in area["slots"]:
                print("  slot", {k: v for k, v in slot.items() if k != "duration_buckets"})
            with open(log_path) as f:
                log_text = f.read()
            matched = "Dynamic module ABI version v0.2.0 matched" in log_text
            print("envoy log: ABI v0.2.0 matched:", matched)
            post = [r for r in records if r["request_body"]]
            checks = {
                "ABI matched in Envoy's log": matched,
                "three records": len(records) == 3,
                "three exchanges counted": area["exchanges"] == 3 and area["records"] == 3,
                "the POST body copied":
                    bool(post) and b'"data": [1, 2, 3]' in post[0]["request_body"],
                "a response body copied": any(r["response_body"] == b"hello from upstream\n"
                                              for r in records),
                "the model from the path": any(s["model"] == b"resnet" for s in area["slots"]),
                "the sampled exemplar": any(s["exemplar_trace_id"] == trace for s in area["slots"]),
            }
            for what, held in checks.items():
                print(("ok   " if held else "FAIL ") + what)
            ok = all(checks.values())
            if not ok:
                print(log_text[-3000:])
        finally:
            for proc in reversed(procs):
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            tapshm.unlink(counters)
            for name, _, _ in rings:
                tapshm.unlink(name)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
