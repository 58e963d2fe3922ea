"""The request path's heap: large short-lived buffers, allocated and freed call after
call, cost no page faults once glibc is told to keep what they free."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from lookout.sidecar.runtime import heap

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                                reason="glibc's malloc alone takes these settings")

# reads of a data port and the copies made of them, as the gRPC port makes them
CHURN = """
import os, resource, sys
from lookout.sidecar.runtime.heap import keep_heap
kept = keep_heap() if sys.argv[1] == "keep" else False
data = os.urandom(200_000)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    reads = [data[:180_000 - i] for i in range(4)]
before = faults()
for _ in range(2000):
    reads = [data[:180_000 - i] for i in range(4)]
    joined = b"".join(reads[:2])
    del reads, joined
print(kept, (faults() - before) / 2000)
"""


def _churn(mode: str, **env: str) -> tuple[bool, float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")
             and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", CHURN, mode], env={**clean, **env},
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True", float(out[1])


def test_buffers_freed_and_taken_again_cost_no_page_faults() -> None:
    kept, faults = _churn("keep")
    _, faults_by_default = _churn("default")
    assert kept
    assert faults < 1 < faults_by_default  # per round of four 180 KB reads and a copy


def test_the_environments_own_malloc_settings_stand(monkeypatch) -> None:
    kept, _ = _churn("keep", MALLOC_ARENA_MAX="2")
    assert not kept
    for name in [k for k in os.environ if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES"]:
        monkeypatch.delenv(name)
    assert not heap.operator_tuned()
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1048576")
    assert heap.operator_tuned()
