"""The soak bench's smoke run (bench/soak.py, shortened): lookout in front of the demo
server with tracing, shadow evaluation, sampling and drift on, offered twice what the
server sustains alone. Nothing lookout answers itself, nothing lost between client and
lookout's own counters, every drop counted. Figures of the full run: docs/RELIABILITY.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lookout.slo import catalog
from tests.support.processes import REPO

SECONDS = 15  # of overload: the counts below hold from the first seconds on


def test_overload_fails_nothing_and_drops_nothing_silently(tmp_path: Path) -> None:
    report_path = tmp_path / "soak.json"
    result = subprocess.run([sys.executable, str(REPO / "bench" / "soak.py"), "--duration",
                             str(SECONDS), "--json", str(report_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["sent"] > 0 and report["answered"] == report["sent"]
    assert report["lookout_originated_failures"] == 0 and report["client_errors"] == {}
    assert report["shed_by_client"] > 0  # the offer really was over capacity
    # /metrics was scraped every second throughout, as Prometheus would
    assert report["metrics_scrapes"]["failed"] == 0
    assert report["metrics_scrapes"]["ok"] >= SECONDS - 3
    counters = report["lookout_counters"]
    # lookout counted every answer the client got, by the same status
    requests = counters[catalog.REQUESTS.sample_name]
    assert sum(requests.values()) == report["answered"]
    assert requests.get("code=200") == report["by_status_and_origin"].get("upstream 200")
    # every queue's drops and every sample outcome is exported, not implied
    queues = {key.split("=")[1] for key in counters[catalog.QUEUE_DROPPED.sample_name]}
    assert queues >= {"observations", "shadow", "samples"}
    shadow = counters[catalog.SHADOW_EVALUATIONS.sample_name]
    assert shadow["outcome=ok"] > 0
    stored = sum(counters[catalog.SAMPLES_STORED.sample_name].values())
    dropped = sum(counters[catalog.SAMPLES_DROPPED.sample_name].values())
    assert stored > 0 and stored + dropped > 0
    assert sum(counters[catalog.COMPONENT_ERRORS.sample_name].values()) == 0
