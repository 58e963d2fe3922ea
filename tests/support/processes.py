"""Real processes on loopback for the tests, and ways to wait for them without sleeping
blindly: every wait polls a condition until it holds or a deadline passes."""

from __future__ import annotations

import contextlib
import http.client
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.02) -> Any:
    """Poll `condition` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def require_tool(name: str) -> str:
    """A program the test needs: under CI=true its absence fails, elsewhere skips."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (make test installs it with apt-get)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


def request(
    port: int, method: str, path: str, body: bytes | None = None,
    headers: Mapping[str, str] | None = None, *, chunked: bool = False, timeout: float = 30,
    connection: http.client.HTTPConnection | None = None,
) -> Response:
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if chunked:
            conn.request(method, path, body=iter([body or b""]), headers=dict(headers or {}),
                         encode_chunked=True)
        else:
            conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return Response(response.status, response.headers, response.read())
    finally:
        if connection is None:
            conn.close()


class ManagedProcess:
    """A child process whose output goes to a file that failures can show."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None = None,
                 cwd: Path = REPO, file_limit: int | None = None) -> None:
        """`file_limit`: the child's RLIMIT_NOFILE, soft and hard (lowered for a test)."""
        self.log_path = Path(tempfile.mkstemp(prefix="lookout-test-", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        limit = None if file_limit is None else partial(
            resource.setrlimit, resource.RLIMIT_NOFILE, (file_limit, file_limit))
        self.popen = subprocess.Popen(list(args), stdout=self._log, stderr=subprocess.STDOUT,
                                      env=full_env, cwd=cwd, preexec_fn=limit)

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self, timeout: float = 30) -> int:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()
        finally:
            self._log.close()


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def served_module(module: str, *args: str, timeout: float = 60) -> Iterator[int]:
    """A test server module run as `python -m module PORT *args` on a free port; its
    port while the block lasts."""
    port = free_port()
    process = ManagedProcess([sys.executable, "-m", module, str(port), *args])
    try:
        wait_until(lambda: port_accepts(port) or not process.alive(), timeout, module)
        assert process.alive(), process.output
        yield port
    finally:
        process.terminate()


def start_upstream() -> tuple[ManagedProcess, int]:
    port = free_port()
    process = ManagedProcess([sys.executable, "-m", "tests.support.upstream_app", str(port)])
    wait_until(lambda: port_accepts(port) or not process.alive(), 20, "the test upstream")
    assert process.alive(), process.output
    return process, port


@dataclass
class SidecarProcess:
    process: ManagedProcess
    port: int
    admin_port: int

    def metrics_text(self) -> str:
        return request(self.admin_port, "GET", "/metrics").body.decode()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the scraped samples called `name` with these label values."""
        from prometheus_client.parser import text_string_to_metric_families

        return sum(sample.value for family in text_string_to_metric_families(
            self.metrics_text()) for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))

    def stop(self) -> int:
        return self.process.terminate()


def start_sidecar(upstream: str, *extra: str, env: Mapping[str, str] | None = None,
                  wait_ready: bool = True, file_limit: int | None = None) -> SidecarProcess:
    port, admin_port = free_port(), free_port()
    args = [sys.executable, "-m", "lookout", "serve",
            "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin_port}",
            "--upstream", upstream, "--model-name", "yolo-test", "--model-version", "v1",
            "--probe-interval", "0.5", *extra]
    process = ManagedProcess(args, env={"OTEL_TRACES_EXPORTER": "none", **(env or {})},
                             file_limit=file_limit)
    sidecar = SidecarProcess(process, port, admin_port)

    def healthy() -> bool:
        if not process.alive():
            raise AssertionError(f"sidecar exited early:\n{process.output}")
        return port_accepts(admin_port) and port_accepts(port)

    wait_until(healthy, 30, "the sidecar to listen")
    if wait_ready:
        wait_until(lambda: request(admin_port, "GET", "/readyz").status == 200, 30,
                   "the sidecar to be ready")
    return sidecar


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path`: a volume that really fills up (ENOSPC).
    Needs root (CAP_SYS_ADMIN); under CI=true its absence
    fails, elsewhere skips."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        message = f"cannot mount a tmpfs for the disk-full test: {mounted.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """`path` (a directory inside a `small_filesystem`) read-only for a while, as a
    volume turned read-only under a running process: a read-only bind mount over it."""
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def children(pid: int, word: bytes) -> list[int]:
    """`pid`'s children whose command line holds `word`, whichever thread started them
    (a thread or a child may end while they are read)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                with contextlib.suppress(OSError):
                    if word in Path(f"/proc/{child}/cmdline").read_bytes():
                        found.append(int(child))
    return found
