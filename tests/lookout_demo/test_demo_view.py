"""`lookout demo` as a new user sees it: its live view in a real terminal (tmux at
160x45), read back with capture-pane, while the sidecar logs and drift alarms fire."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

from lookout.lookout_demo.view import BARS, sparkline
from lookout.sidecar.samples.ui_session import COOKIE
from tests.support.processes import REPO, free_port, require_tool, wait_until

TRENDS = ("requests/s", "p95 latency", "precision proxy", "recall proxy",
          "detections per frame")


def test_sparklines_scale_and_leave_gaps() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == BARS
    assert sparkline([None, 0.5, None], low=0, high=1) == f" {BARS[4]} "
    assert sparkline([]) == "" and sparkline([2.0, 2.0]) == BARS[0] * 2


def _pane(session: str) -> str:
    # -J: a line the terminal wrapped comes back whole
    return subprocess.run(["tmux", "capture-pane", "-p", "-J", "-t", session],
                          capture_output=True, text=True, check=True).stdout


def test_the_live_view_stays_whole_while_the_sidecar_logs(tmp_path) -> None:
    tmux = require_tool("tmux")
    session = f"lookout-demo-{os.getpid()}"
    admin = free_port()
    command = shlex.join([sys.executable, "-m", "lookout", "demo", "--duration", "60",
                          "--listen", f"127.0.0.1:{free_port()}",
                          "--admin", f"127.0.0.1:{admin}",
                          "--upstream", f"http://127.0.0.1:{free_port()}"])
    subprocess.run([tmux, "new-session", "-d", "-s", session, "-x", "160", "-y", "45",
                    # the pane's own size, not one this process's environment names
                    f"cd {shlex.quote(str(REPO))} && env -u COLUMNS -u LINES {command}; "
                    f"sleep 600"], check=True)
    try:
        # the drift detector is ready (it logs that) and an alarm has fired: the demo
        # has logged and the view has had rows added while it ran
        def alarm_shown() -> str | None:
            text = _pane(session)
            return text if re.search(r"alarm: \w+ .*firing since", text) else None

        screen = wait_until(alarm_shown, 90, "a drift alarm row")  # fires at ~50 s
        lines = screen.splitlines()
        assert sum("lookout demo" in line for line in lines) == 1  # one title, one table
        assert sum(line.startswith("┌") for line in lines) == 1
        assert not [line for line in lines if '"level"' in line or line.lstrip().startswith("{")]
        for trend in TRENDS:
            row = next(line for line in lines if f"trend: {trend}" in line)
            assert any(bar in row for bar in BARS), row
        log_row = next((line for line in lines if "│ logs" in line), None)
        assert log_row, screen
        log_file = log_row.split("│")[2].strip()
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
