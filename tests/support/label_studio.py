"""A real Label Studio on loopback for the tests, installed by `make test` into its own
virtualenv (`.venv-labelstudio`, tools/install_test_servers.sh) because Django and its
pins are not the sidecar's. Under CI=true its absence fails the run, elsewhere the tests
that need it skip.

Each server gets a throwaway data directory (sqlite) copied from the empty database the
install step migrated once: migrating a fresh one takes about a minute and a half on
two cores, a copy starts in seconds. The user and its API token are made at start
(`--username/--password/--user-token`), with legacy `Token` keys enabled for the
organisation, as a self-hosted instance that hands out API keys has them.

Nothing here may reach beyond this machine: the server listens on 127.0.0.1, Sentry,
analytics and the PyPI version check are off, and any HTTP client inside it that still
tried would meet a closed loopback proxy."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import pytest

from lookout.sidecar.samples.audit_items import LabelledBox
from lookout.sidecar.samples.label_studio import region
from tests.support.processes import REPO, ManagedProcess, free_port, wait_until

VENV = REPO / ".venv-labelstudio"
PROGRAM = VENV / "bin" / "label-studio"
TEMPLATE = VENV / "lookout-template"  # an empty, migrated data directory
USERNAME = "auditor@lookout.test"
PASSWORD = "lookout-test-password"
TOKEN = "lookout0test0token0000000000000000000000"  # a legacy key's shape: 40 characters
SERVING = re.compile(r"Starting development server at http://127\.0\.0\.1:(\d+)/")
START_TIMEOUT = 300  # a fresh database (no template) migrates for a minute and a half

OFFLINE = {
    "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "", "COLLECT_ANALYTICS": "false",
    "LATEST_VERSION_CHECK": "false", "CONVERTER_DOWNLOAD_RESOURCES": "false",
    "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
    "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
}


def require_label_studio() -> None:
    if PROGRAM.is_file():
        return
    message = "label-studio is not installed (make test installs it into .venv-labelstudio)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


class LabelStudioServer:
    """`label-studio start` on a free loopback port with a throwaway data directory."""

    def __init__(self) -> None:
        require_label_studio()
        self.port = free_port()
        self.data_dir = tempfile.mkdtemp(prefix="lookout-labelstudio-")
        self.process: ManagedProcess | None = None
        self.start_seconds = 0.0
        self.token = TOKEN

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LabelStudioServer:
        if TEMPLATE.is_dir():
            shutil.copytree(TEMPLATE, self.data_dir, dirs_exist_ok=True)
        began = time.monotonic()
        self.process = ManagedProcess(
            [str(PROGRAM), "start", "--no-browser", "--internal-host", "127.0.0.1",
             "--port", str(self.port), "--data-dir", self.data_dir, "--username", USERNAME,
             "--password", PASSWORD, "--user-token", TOKEN, "--enable-legacy-api-token"],
            env={**OFFLINE, "LABEL_STUDIO_BASE_DATA_DIR": self.data_dir})
        process = self.process
        try:
            wait_until(lambda: self._serving() or not process.alive(), START_TIMEOUT,
                       "label-studio to answer /health", interval=0.2)
            assert process.alive(), process.output
        except AssertionError as error:  # what it said while it did not answer
            output = process.output[-4000:]
            self.stop()
            raise AssertionError(f"{error}; its output:\n{output}") from None
        self.start_seconds = time.monotonic() - began
        return self

    def _serving(self) -> bool:
        """Label Studio starts on the next port when the one it is given is taken (another
        test's server can bind it between free_port and Label Studio's own check), and
        says where: the port is read from what it printed."""
        assert self.process is not None
        found = SERVING.search(self.process.output)
        if found is None:
            return False
        self.port = int(found.group(1))
        return self.healthy()

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process = None
        shutil.rmtree(self.data_dir, ignore_errors=True)


def api(url: str, token: str, method: str, path: str, body: Any = None) -> Any:
    """One authenticated request, its JSON answer (the tests' own view of the server)."""
    request = urllib.request.Request(
        url + path, None if body is None else json.dumps(body).encode(),
        {"Authorization": f"Token {token}", "Content-Type": "application/json"}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read()
    except urllib.error.HTTPError as error:
        raise AssertionError(f"{method} {path}: {error.code} {error.read()!r}") from None
    return json.loads(text) if text else None


def annotate(url: str, token: str, task_id: int, boxes: Sequence[LabelledBox], *,
             cancelled: bool = False) -> int:
    """Submit an annotation of `boxes` (pixels) to a task as an annotator's browser does:
    percent of the image it shows, whose size the task data gives. Its id."""
    data = api(url, token, "GET", f"/api/tasks/{task_id}")["data"]
    width, height = int(data["width"]), int(data["height"])
    result = [region(box, width, height, f"a{index}") for index, box in enumerate(boxes)]
    answer = api(url, token, "POST", f"/api/tasks/{task_id}/annotations",
                 {"result": result, "was_cancelled": cancelled, "lead_time": 1.0})
    return int(answer["id"])
