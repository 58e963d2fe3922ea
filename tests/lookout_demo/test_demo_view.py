"""`lookout demo` as a new user sees it: its live view in a real terminal (tmux at
160x45), read back with capture-pane while the sidecar logs, the lights dim and the
drift alarm fires."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from lookout.lookout_demo.camera import DEFAULT_SCHEDULE
from lookout.lookout_demo.reading import SidecarReading
from lookout.lookout_demo.story import Measures, Story
from lookout.lookout_demo.view import BARS, sparkline
from lookout.sidecar.samples.ui_session import COOKIE
from tests.support.processes import REPO, free_port, require_tool, wait_until

# one demo (Envoy, workers, two models) at a time: it needs the CPU to keep its pace
pytestmark = pytest.mark.xdist_group("demo")

TRENDS = ("requests/s", "p95 latency", "precision proxy", "recall proxy",
          "detections per frame")
# rows that showed 0 where nothing was measured: a detected box's confidence is above
# the threshold, so a mean confidence of 0 is always made up; on clean frames a flip
# check finds most boxes again, so a consistency of 0 there is too
NEVER_ZERO = ("mean confidence",)
NEVER_ZERO_ON_CLEAN_FRAMES = ("flip consistency",)
TRUST_STATES = ("trusted", "not trusted:", "not judged yet:")


def test_sparklines_scale_and_leave_gaps() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == BARS
    assert sparkline([None, 0.5, None], low=0, high=1) == f" {BARS[4]} "
    assert sparkline([]) == "" and sparkline([2.0, 2.0]) == BARS[0] * 2


def test_the_story_line_tells_the_alarm_the_proxy_before_and_now_and_trust() -> None:
    clean, dimming = DEFAULT_SCHEDULE[0], DEFAULT_SCHEDULE[1]
    nothing = Measures.between(SidecarReading(), SidecarReading())
    assert nothing == Measures(None, None, None, None, None)
    story = Story()
    assert story.line(clean, SidecarReading(), nothing, {}, "no drift alarm") == \
        "warm-up: clean frames: no drift alarm; precision proxy —, trust not judged yet"
    warm = SidecarReading(shadow_primary=100, shadow_matched=81, trusted=True)
    story.line(clean, warm, nothing, {}, "no drift alarm")
    dim = SidecarReading(shadow_primary=120, shadow_matched=93, trusted=True)
    assert story.line(dimming, dim, Measures.between(warm, dim), {"brightness": 24.4},
                      "no drift alarm") == ("lights dimming: brightness drift alarm at 24 s; "
                                            "precision proxy 0.81 -> 0.60, trusted")
    dim.trusted, dim.distrust = False, ["reference_flip_consistency"]
    assert story.line(dimming, dim, nothing, {"brightness": 12.0}, "").endswith(
        "brightness drift alarm firing since 12 s; precision proxy 0.81 -> —, "
        "not trusted (reference_flip_consistency)")


def _pane(session: str) -> str:
    # -J: a line the terminal wrapped comes back whole
    return subprocess.run(["tmux", "capture-pane", "-p", "-J", "-t", session],
                          capture_output=True, text=True, check=True).stdout


def _row(lines: list[str], key: str) -> str | None:
    """The value of the table row named `key`, or None when the frame has no such row."""
    for line in lines:
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) >= 3 and cells[1] == key:
            return cells[2]
    return None


def _zeros_where_unmeasured(screen: str) -> list[str]:
    """Rows of this frame showing a zero that nothing measured (see NEVER_ZERO)."""
    lines = screen.splitlines()
    clean = (_row(lines, "scene") or "").startswith("warm-up")
    found = []
    for key in (*NEVER_ZERO, *(NEVER_ZERO_ON_CLEAN_FRAMES if clean else ())):
        value = _row(lines, key)
        if value is not None and re.fullmatch(r"0\.0+", value):
            found.append(f"{key}: {value}")
    return found


def test_the_demo_tells_its_story_in_a_terminal(tmp_path) -> None:
    tmux = require_tool("tmux")
    session = f"lookout-demo-{os.getpid()}"
    admin = free_port()
    command = shlex.join([sys.executable, "-m", "lookout", "demo", "--duration", "90",
                          "--listen", f"127.0.0.1:{free_port()}",
                          "--admin", f"127.0.0.1:{admin}",
                          "--upstream", f"http://127.0.0.1:{free_port()}"])
    subprocess.run([tmux, "new-session", "-d", "-s", session, "-x", "160", "-y", "45",
                    # the pane's own size, not one this process's environment names
                    f"cd {shlex.quote(str(REPO))} && env -u COLUMNS -u LINES {command}; "
                    f"sleep 600"], check=True)
    frames: list[str] = []
    try:
        # the shipped baseline has the detector ready at start: the brightness alarm
        # fires while the scene still says the lights are dimming (20 s to 40 s)
        def dimming_alarm_shown() -> str | None:
            text = _pane(session)
            frames.append(text)
            lines = text.splitlines()
            scene = _row(lines, "scene") or ""
            story = _row(lines, "what just happened") or ""
            return text if (scene.startswith("lights dimming")
                            and _row(lines, "alarm: brightness") is not None
                            and "brightness drift alarm at" in story) else None

        try:
            screen = wait_until(dimming_alarm_shown, 75, "a brightness drift alarm while "
                                "the lights dim", interval=0.5)
        except AssertionError as error:
            raise AssertionError(f"{error}; the last frame:\n{frames[-1]}") from None
        lines = screen.splitlines()
        story = _row(lines, "what just happened")
        assert story and story.startswith("lights dimming: brightness drift alarm at "), story
        assert re.search(r"precision proxy (\d\.\d\d|—) -> (\d\.\d\d|—), ", story), story
        assert "firing since" in (_row(lines, "alarm: brightness") or "")
        trust = _row(lines, "proxy trust")
        assert trust and trust.startswith(TRUST_STATES), screen
        for frame in frames:
            assert not _zeros_where_unmeasured(frame), frame
        assert sum("lookout demo" in line for line in lines) == 1  # one title, one table
        assert sum(line.startswith("┌") for line in lines) == 1
        assert not [line for line in lines if '"level"' in line or line.lstrip().startswith("{")]
        for trend in TRENDS:
            row = _row(lines, f"trend: {trend}")
            assert row and any(bar in row for bar in BARS), screen
        log_file = _row(lines, "logs")
        assert log_file, screen
        assert '"level"' in Path(log_file).read_text()  # the sidecar's logs went there
        link = next(line for line in lines if "sign in once with:" in line).split(": ", 1)[1]
        assert link.startswith(f"http://127.0.0.1:{admin}/ui/login/link?code=")

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        opener = urllib.request.build_opener(NoRedirect)
        try:
            opener.open(link.strip(), timeout=10)
        except urllib.error.HTTPError as answer:  # 303 to the gallery, with its cookie
            assert answer.code == 303 and answer.headers["Location"] == "/ui/samples"
            assert f"{COOKIE}=" in answer.headers["Set-Cookie"]
        else:
            raise AssertionError("the link did not sign in")
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], check=False)
