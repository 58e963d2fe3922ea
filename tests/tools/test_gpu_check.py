"""tools/gpu_check.sh is the device script: on a machine without an NVIDIA driver (this
one) it must say so and stop, not fail half-way with a traceback."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_without_a_driver_the_gpu_check_says_so_and_stops(tmp_path) -> None:
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has an NVIDIA driver: run the check itself")
    result = subprocess.run(["bash", str(REPO / "tools" / "gpu_check.sh"), str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "no NVIDIA driver" in result.stderr
    assert not (tmp_path / "gpu_check.json").exists()
