"""Malformed or oversized input to lookout's other doors: the sample API, the admission
webhook, the generators and `inject`, and the files the sample store writes."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

from lookout.k8s.webhook import review_bytes
from lookout.sidecar.samples.store import SampleStore
from tests.k8s.test_webhook import Webhook, _pod, _review
from tests.support.processes import REPO, request, start_sidecar, start_upstream, wait_until


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_the_sample_api_answers_malformed_requests_with_4xx(tmp_path: Path) -> None:
    upstream, port = start_upstream()
    token = tmp_path / "token"
    token.write_text("the-token")
    sidecar = start_sidecar(f"http://127.0.0.1:{port}", "--sample-dir", str(tmp_path / "s"),
                            "--admin-token-file", str(token))
    try:
        auth = {"Authorization": "Bearer the-token"}
        wait_until(lambda: request(sidecar.admin_port, "GET", "/samples", headers=auth).status
                   == 200, 30, "the sample store to open")
        with socket.create_connection(("127.0.0.1", sidecar.admin_port), timeout=10) as sock:
            sock.sendall(b"GET /samples HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                         b"Authorization: Bearer t\xf6k\xe9n-\xff\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 403 ")
        for path in ("/samples?limit=" + "9" * 5000, "/samples/export?limit=" + "9" * 5000,
                     "/samples?cursor=" + "%ff" * 20):
            answer = request(sidecar.admin_port, "GET", path, headers=auth)
            assert 400 <= answer.status < 500, (path[:40], answer.status)
    finally:
        sidecar.stop()
        upstream.terminate()


def test_deep_or_broken_reviews_are_allowed_with_a_warning_and_their_uid() -> None:
    pod = _pod()
    pod["metadata"]["annotations"] = {"deep": "x"}
    text = json.dumps(_review(pod, uid="deep-1")).replace('"x"', _deep(100_000))
    answer = review_bytes(text.encode(), "namespace", None, None)["response"]
    assert answer["allowed"] is True and answer["uid"] == "deep-1"
    assert "nested too deeply" in answer["warnings"][0] and "patch" not in answer
    broken = review_bytes(b'{"request": {"uid": "broken-2", ', "namespace", None, None)
    assert broken["response"]["uid"] == "broken-2" and broken["response"]["allowed"]


def test_a_huge_review_does_not_hold_up_a_small_one(tmp_path: Path) -> None:
    webhook = Webhook(tmp_path)
    try:
        huge = _pod()
        huge["spec"]["containers"] = [dict(huge["spec"]["containers"][0], name=f"c{i}")
                                      for i in range(10_000)]
        finished: list[str] = []

        def send_huge() -> None:
            webhook.post("/mutate/namespace", json.dumps(_review(huge, uid="huge")).encode())
            finished.append("huge")

        sender = threading.Thread(target=send_huge)
        sender.start()
        status, answer = webhook.post("/mutate/namespace",
                                      json.dumps(_review(_pod(), uid="small")).encode())
        finished.append("small")
        sender.join(60)
        assert status == 200 and answer["response"]["uid"] == "small"
        assert finished == ["small", "huge"]
    finally:
        webhook.process.terminate()


def _lookout(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lookout", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=120)


def test_generators_and_inject_refuse_endless_input(tmp_path: Path) -> None:
    generated = _lookout("generate", "--slo", "/dev/zero", "--out", str(tmp_path / "out"))
    assert generated.returncode != 0 and "larger than 4 MiB" in generated.stderr
    injected = _lookout("inject", "-f", "/dev/zero")
    assert injected.returncode == 1 and "larger than 64 MiB" in injected.stderr


def test_the_sample_store_is_private_to_its_user(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        store = SampleStore(tmp_path / "samples")
        store._write_file("images/ab/sample.jpg", b"\xff\xd8 thumbnail")
        store.close()
    finally:
        os.umask(previous)
    root = tmp_path / "samples"
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path.relative_to(tmp_path)} is {oct(mode)}"
