"""The tap's C under AddressSanitizer and UndefinedBehaviorSanitizer: its fake Envoy
(`tap/harness.c`) drives every hook with adversarial and random streams
(`tap/fuzz_cases.py`), and the shared memory it wrote is read back and checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.processes import REPO, require_tool


def test_the_tap_survives_fuzzed_streams_under_sanitizers(tmp_path: Path) -> None:
    require_tool("gcc")
    build = subprocess.run(["make", "-s", "-C", str(REPO / "tap"), f"BUILD={tmp_path}",
                            "asan"], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([sys.executable, str(REPO / "tap" / "fuzz_cases.py"),
                          "--harness", str(tmp_path / "tap_harness"), "-n", "40",
                          "--seed", "20261206"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "cases passed" in run.stdout


def test_the_tap_builds_without_a_warning(tmp_path: Path) -> None:
    """-Wall -Wextra -Werror: a warning fails the build."""
    require_tool("gcc")
    build = subprocess.run(["make", "-s", "-C", str(REPO / "tap"), f"BUILD={tmp_path}",
                            "all"], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    assert (tmp_path / "liblookout_tap.so").is_file()
