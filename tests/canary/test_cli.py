"""`lookout canary judge` when it cannot judge: exit 3 with a message naming the cause,
never a verdict's exit code."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.processes import free_port

BASE = ["--baseline-version", "v1", "--canary-version", "v2"]


def _judge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lookout", "canary", "judge",
                           "--prometheus", f"http://127.0.0.1:{free_port()}", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("args", "message"), [
    ([*BASE, "--model", "m", "--metrics", "precision,nope"], "--metrics: unknown nope"),
    ([*BASE, "--model", "m", "--metrics", "precision", "--critical", "recall"],
     "--critical: recall not among the judged metrics"),
    (BASE, "--model is required without --slo"),
    (["--baseline-version", "v1", "--canary-version", "v1", "--model", "m"],
     "the baseline and canary versions are the same"),
    ([*BASE, "--model", "m", "--window", "30 minutes"], "--window: '30 minutes' is not"),
    ([*BASE, "--model", "m", "--confidence", "1.5"], "--confidence 1.5 must be in"),
    ([*BASE, "--model", "m"], "cannot query Prometheus at http://127.0.0.1:"),
])
def test_what_cannot_be_judged_exits_3_and_says_why(args: list[str], message: str) -> None:
    result = _judge(*args)
    assert result.returncode == 3, result.stdout + result.stderr
    assert message in result.stderr
    assert result.stdout == ""


def test_a_multi_model_spec_needs_the_model_being_rolled_out(tmp_path) -> None:
    from tests.alerts.test_generated import MULTI_MODEL_SPEC

    spec = tmp_path / "slo.yaml"
    spec.write_text(MULTI_MODEL_SPEC)
    result = _judge(*BASE, "--slo", str(spec))
    assert result.returncode == 3
    assert "when the spec lists several models (primary, coarse)" in result.stderr
    result = _judge(*BASE, "--slo", str(spec), "--model", "other")
    assert result.returncode == 3 and "'other' is not one of the spec's models" in result.stderr
    result = _judge(*BASE, "--slo", str(spec), "--model", "coarse")
    assert result.returncode == 3 and "cannot query Prometheus" in result.stderr


def test_the_report_links_both_versions_frames_in_the_fleets_gallery() -> None:
    import argparse
    import urllib.parse

    from lookout.canary.comparison import CanaryComparison
    from lookout.canary.report import gallery_link

    comparison = CanaryComparison(model="detector", baseline_version="v1",
                                  canary_version="v2", metrics=())
    args = argparse.Namespace(gallery_url="https://samples.team.example/", window="30m")
    link = urllib.parse.urlsplit(gallery_link(args, comparison, 1_800_000_000.0))
    assert (link.netloc, link.path) == ("samples.team.example", "/ui/compare")
    assert dict(urllib.parse.parse_qsl(link.query)) == {
        "model": "detector", "baseline": "v1", "canary": "v2",
        "since": "1799998200", "until": "1800000000"}
    assert gallery_link(argparse.Namespace(gallery_url="", window="30m"), comparison, 0) == ""
