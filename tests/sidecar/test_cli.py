"""The command line as an operator meets it: clear errors and exit codes."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.support.processes import REPO


def _lookout(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lookout", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=60, env=env, check=False)


def test_invalid_option_exits_2_naming_the_flag() -> None:
    result = _lookout("serve", "--upstream", "localhost:8000")
    assert result.returncode == 2
    assert "--upstream" in result.stderr
    assert "http://" in result.stderr


def test_invalid_env_exits_2_naming_the_variable() -> None:
    import os

    result = _lookout("serve", env={**os.environ, "LOOKOUT_MAX_BODY_BYTES": "huge"})
    assert result.returncode == 2
    assert "LOOKOUT_MAX_BODY_BYTES" in result.stderr


def test_port_in_use_exits_1_naming_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = _lookout("serve", "--listen", f"127.0.0.1:{port}", "--admin", "127.0.0.1:0")
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_runs_unattended_and_its_sidecar_sees_the_traffic() -> None:
    import re

    from tests.support.processes import free_port

    result = _lookout("demo", "--duration", "20", "--listen", f"127.0.0.1:{free_port()}",
                      "--admin", f"127.0.0.1:{free_port()}",
                      "--upstream", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 0, result.stderr
    done = re.search(r"done: (\d+) frames sent; \S+/metrics shows (\d+) requests, (\d+) "
                     r"detections in (\d+) analysed frames, (\d+) primary boxes "
                     r"shadow-evaluated", result.stdout)
    assert done, result.stdout
    sent, seen, detections, analysed, shadowed = map(int, done.groups())
    assert shadowed > 0  # the shipped reference model checks the primary
    assert sent >= 100 and seen == sent  # 10 frames/s for 20 s, every one through lookout
    assert analysed > 0 and detections > analysed  # scenes hold 1-6 objects each
    assert "lights dimming" in result.stdout
