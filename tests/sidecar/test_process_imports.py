"""lookout's own process (the admin port, Envoy's supervision) loads only what it uses:
the analysis (numpy, scipy, Pillow, onnxruntime) lives in the worker processes. Read
from the running process's own memory map, so a lazy import that fires at start-up or
on the first request shows up too."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest

from lookout.lookout_demo.models import model_path
from lookout.sidecar.pipeline.protos import INFER_METHOD
from tests.support.processes import free_port, request, start_sidecar, wait_until

ANALYSIS_ONLY = ("numpy", "scipy", "PIL", "onnxruntime", "pandas", "evidently")


def _loaded(pid: int) -> set[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {name for name in ANALYSIS_ONLY
            if re.search(rf"site-packages/{name}[/.]", maps)}


def test_lookouts_own_process_maps_no_analysis_library(upstream_port: int,
                                                             tmp_path) -> None:
    grpc_port = free_port()  # the gRPC port too, answering (its upstream is not there)
    sidecar = start_sidecar(f"http://127.0.0.1:{upstream_port}", "--drift", "true",
                            "--shadow-model-path", str(model_path("reference")),
                            "--sample-dir", str(tmp_path / "samples"),
                            "--admin-token", "t0ken", "--grpc-listen", f"127.0.0.1:{grpc_port}",
                            "--grpc-upstream", f"127.0.0.1:{free_port()}", wait_ready=False)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel, \
                pytest.raises(grpc.RpcError) as refused:
            channel.unary_unary(INFER_METHOD)(b"\x0a\x04yolo", timeout=10)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        for _ in range(5):
            assert request(sidecar.port, "POST", "/echo", body=b"x" * 100).status == 200
        assert request(sidecar.admin_port, "GET", "/metrics").status == 200
        pid = sidecar.process.popen.pid
        assert _loaded(pid) == set()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        workers = [int(c) for c in children if "spawn_main" in
                   Path(f"/proc/{c}/cmdline").read_text(errors="replace")]
        assert workers  # and the analysis is there, where it belongs, once it has loaded
        wait_until(lambda: "numpy" in _loaded(workers[0]), 60, "the worker's imports")
    finally:
        sidecar.stop()


def test_without_a_grpc_port_grpc_is_not_loaded(sidecar) -> None:
    """grpcio and protobuf cost ~12 MB: an HTTP-only sidecar does not load them."""
    assert request(sidecar.port, "GET", "/echo").status == 200
    maps = Path(f"/proc/{sidecar.process.popen.pid}/maps").read_text()
    assert not re.search(r"site-packages/(grpc|google/_upb|hpack)[/.]", maps)
