"""The admin port's limits and the token's door, measured black box on loopback with the
default settings (SECURITY.md's figures): idle sockets, token guesses, sign-out, a token
rotation. Counts, not times, except how soon a rotation took effect.

    python -m tools.admin_door_check [--idle 15000] [--guesses 1000]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from lookout.slo import catalog
from tests.support.admin_door import accepted, bearer, gallery, sign_in
from tests.support.processes import (
    SidecarProcess,
    request,
    start_sidecar,
    start_upstream,
    wait_until,
)


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def idle_sockets(sidecar: SidecarProcess, count: int) -> list[tuple[str, object]]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", sidecar.admin_port), timeout=10)
        sock.setblocking(False)
        sockets.append(sock)
    try:
        metrics = request(sidecar.admin_port, "GET", "/metrics").status
        data = request(sidecar.port, "GET", "/echo").status
        ready = request(sidecar.admin_port, "GET", "/readyz").status
        fds = _open_fds(sidecar.process.popen.pid)
        shed = sidecar.metric(catalog.ADMIN_CONNECTIONS_CLOSED.sample_name, reason="shed_idle")
    finally:
        for sock in sockets:
            sock.close()
    return [(f"{count:,} idle sockets on the admin port", "opened"),
            ("fresh /metrics, data port, /readyz meanwhile", f"{metrics}, {data}, {ready}"),
            ("idle connections shed (the longest idle first)", f"{shed:,.0f}"),
            ("lookout's open descriptors with them all open", f"{fds:,}")]


def guesses(sidecar: SidecarProcess, token: str, count: int) -> list[tuple[str, object]]:
    started = time.monotonic()
    statuses = [bearer(sidecar, f"guess-{index}").status for index in range(count)]
    seconds = time.monotonic() - started
    right = bearer(sidecar, token)
    return [(f"{count:,} wrong bearer tokens ({count / seconds:,.0f}/s)",
             f"{statuses.count(403)} x 403, then {statuses.count(429):,} x 429"),
            ("the right token straight after",
             f"{right.status}, Retry-After {right.headers.get('Retry-After')} s"),
            ("counted (wrong, limited)", ", ".join(
                f"{sidecar.metric(catalog.ADMIN_TOKEN_REFUSED.sample_name, reason=r):,.0f}"
                for r in ("wrong", "limited")))]


def sessions_and_rotation(sidecar: SidecarProcess, secret: Path) -> list[tuple[str, object]]:
    old = secret.read_text().strip()
    cookie = sign_in(sidecar, old)
    request(sidecar.admin_port, "POST", "/ui/logout", headers={"Cookie": cookie})
    after = gallery(sidecar, cookie)
    cookie = sign_in(sidecar, old)
    secret.write_text("rotated-token\n")
    started = time.monotonic()
    wait_until(lambda: accepted(bearer(sidecar, "rotated-token")), 30,
               "the rotated token", interval=0.25)
    took = time.monotonic() - started
    session = gallery(sidecar, cookie)
    return [("the cookie after sign-out", f"{after} (to the login form)"),
            ("token file rewritten in place: new token accepted after", f"{took:.1f} s"),
            ("then the old token; a session made with it",
             f"{bearer(sidecar, old).status}; {session}")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--idle", type=int, default=15_000)
    parser.add_argument("--guesses", type=int, default=1_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lookout-door-"))
    secret = work / "token"
    secret.write_text("the-admin-token\n")
    upstream, port = start_upstream()
    sidecar = start_sidecar(f"http://127.0.0.1:{port}", "--analysis-workers", "1",
                            "--sample-dir", str(work / "store"),
                            "--admin-token-file", str(secret))
    try:
        rows = idle_sockets(sidecar, args.idle)
        rows += guesses(sidecar, "the-admin-token", args.guesses)
        wait_until(lambda: bearer(sidecar, "the-admin-token").status != 429, 120,
                   "the guess window to pass", interval=1.0)
        rows += sessions_and_rotation(sidecar, secret)
    finally:
        sidecar.stop()
        upstream.terminate()
    print("| shape | lookout |\n| --- | --- |")
    for shape, outcome in rows:
        print(f"| {shape} | {outcome} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
