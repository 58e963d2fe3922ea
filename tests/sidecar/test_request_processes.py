"""`request_processes: 2`: two processes on the data port (SO_REUSEPORT), one /metrics
and one set of analysis workers for both, a killed one replaced without its counts going
backwards, and both drained by SIGTERM."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from lookout.sidecar.config import Config
from lookout.sidecar.request_processes import read_families
from lookout.sidecar.workers import WorkerStartError, check_channel
from tests.support.processes import (
    SidecarProcess,
    free_port,
    python_data_plane,
    request,
    served_module,
    start_sidecar,
    wait_until,
)

REQUESTS = "lookout_requests_total"
METADATA = "/inference.GRPCInferenceService/ServerMetadata"


def _descendants(pid: int) -> list[int]:
    """Children of every thread: a replacement is started by the supervisor's thread."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = []
        for path in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                children += [int(c) for c in path.read_text().split()]
            except OSError:
                continue
        found += children
        frontier += children
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _listeners(root: int, port: int) -> list[int]:
    """The processes of the sidecar that hold a socket listening on `port`."""
    listening = set()
    # grpc listens on a dual-stack socket ([::ffff:127.0.0.1]): tcp6
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                listening.add(fields[9])
    return [pid for pid in [root, *_descendants(root)] if _socket_inodes(pid) & listening]


def _metrics_socket(pid: int) -> str:
    """The Unix socket a request-path child answers its metrics on."""
    mine = _socket_inodes(pid)
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[6] in mine and fields[7].endswith(".sock"):
            return fields[7]
    raise AssertionError(f"process {pid} has no metrics socket")


def _requests_of(families) -> float:
    return sum(sample.value for family in families for sample in family.samples
               if sample.name == REQUESTS)


def _start(upstream_port: int) -> tuple[SidecarProcess, int, int]:
    """The sidecar, its main process and its other request-path process, both listening."""
    sidecar = start_sidecar(f"http://127.0.0.1:{upstream_port}", "--request-processes", "2",
                            "--analysis-workers", "1", "--observe-max-bytes", "1MiB")
    pid = sidecar.process.popen.pid
    wait_until(lambda: len(_listeners(pid, sidecar.port)) == 2, 30,
               "both request-path processes to listen")
    child = next(p for p in _listeners(pid, sidecar.port) if p != pid)
    return sidecar, pid, child


def test_two_processes_serve_one_port_with_one_metrics_and_one_analysis(
        upstream_port: int) -> None:
    sidecar, _, child = _start(upstream_port)
    try:
        for _ in range(60):  # a new connection each: the kernel spreads them
            assert request(sidecar.port, "POST", "/echo", body=b"{}").status == 200
        wait_until(lambda: sidecar.metric(REQUESTS) == 60, 20, "60 requests in /metrics")
        pid_answering, families = read_families(_metrics_socket(child))
        assert pid_answering == child
        served_by_child = _requests_of(families)
        assert 0 < served_by_child < 60  # both processes took connections
        # every exchange reached the one analysis side, whichever process served it
        wait_until(lambda: sidecar.metric("lookout_observations_total") == 60, 30,
                   "60 observations analysed")
        maps = Path(f"/proc/{child}/maps").read_text()
        assert not re.search(r"site-packages/(numpy|scipy|PIL|onnxruntime|aiohttp)[/.]", maps)
    finally:
        assert sidecar.stop() == 0
    assert not Path(f"/proc/{child}").exists()  # drained and gone with the main process


def test_a_killed_request_process_is_replaced_and_its_counts_are_kept(
        upstream_port: int) -> None:
    sidecar, pid, child = _start(upstream_port)
    try:
        for _ in range(40):
            assert request(sidecar.port, "GET", "/echo").status == 200
        wait_until(lambda: sidecar.metric(REQUESTS) == 40, 20, "40 requests in /metrics")
        os.kill(child, signal.SIGKILL)
        wait_until(lambda: sidecar.metric("lookout_component_errors_total",
                                          component="request_process") == 1,
                   20, "the death to be counted")
        assert sidecar.metric(REQUESTS) == 40  # the dead process's counts stay in the sum
        wait_until(lambda: len(_listeners(pid, sidecar.port)) == 2, 30, "a new process")
        for _ in range(20):
            assert request(sidecar.port, "GET", "/echo").status == 200
        wait_until(lambda: sidecar.metric(REQUESTS) == 60, 20, "60 requests in /metrics")
    finally:
        assert sidecar.stop() == 0


def test_the_grpc_port_is_served_by_every_request_process(upstream_port: int) -> None:
    import grpc

    with served_module("tests.support.grpc_echo_upstream") as grpc_upstream:
        grpc_port = free_port()
        sidecar = start_sidecar(f"http://127.0.0.1:{upstream_port}", "--request-processes",
                                "2", "--observe-max-bytes", "1MiB",
                                "--grpc-listen", f"127.0.0.1:{grpc_port}",
                                "--grpc-upstream", f"127.0.0.1:{grpc_upstream}")
        pid = sidecar.process.popen.pid
        try:
            wait_until(lambda: len(_listeners(pid, grpc_port)) == 2, 30,
                       "both request-path processes on the gRPC port")
            child = next(p for p in _listeners(pid, grpc_port) if p != pid)
            for index in range(40):  # a new connection each: the kernel spreads them
                # grpcio shares connections between channels to one target through its
                # global subchannel pool; a local pool makes each channel connect anew
                with grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=[
                        ("grpc.use_local_subchannel_pool", 1)]) as channel:
                    assert channel.unary_unary(METADATA)(b"%d" % index, timeout=10) \
                        == b"%d" % index
            wait_until(lambda: sidecar.metric(REQUESTS, route=METADATA, code="OK") == 40, 20,
                       "40 calls in /metrics")
            _, families = read_families(_metrics_socket(child))
            assert 0 < _requests_of(families) < 40  # both processes took connections
        finally:
            assert sidecar.stop() == 0


def test_rings_for_every_request_process_must_fit() -> None:
    config = Config(request_processes=4, observe_max_bytes=8 * 1024**2,
                    observation_queue_bytes=64 * 1024**2, data_plane="python")
    with pytest.raises(WorkerStartError, match="request_processes"):
        check_channel(config, 2)  # 8 rings of 8 MiB: less than one 16 MiB record each
    check_channel(Config(request_processes=4, observe_max_bytes=1024**2,
                         observation_queue_bytes=64 * 1024**2, data_plane="python"), 2)


def test_rings_for_every_envoy_worker_must_fit() -> None:
    """With Envoy the producers are its worker threads: each has a ring to every
    analysis worker."""
    config = Config(envoy_concurrency=4, observe_max_bytes=8 * 1024**2,
                    observation_queue_bytes=64 * 1024**2)
    with pytest.raises(WorkerStartError, match="envoy_concurrency"):
        check_channel(config, 2)
    check_channel(Config(envoy_concurrency=4, observe_max_bytes=1024**2,
                         observation_queue_bytes=64 * 1024**2), 2)


@pytest.fixture(scope="module", autouse=True)
def _python_request_path() -> Iterator[None]:
    """The Python request path's own behaviour, not yet carried over to Envoy."""
    with python_data_plane():
        yield
