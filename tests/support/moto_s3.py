"""A real S3 API server on loopback for the tests: moto in server mode, installed by
`make test` into its own virtualenv (`.venv-moto`, tools/install_test_servers.sh) because its
dependencies are not the sidecar's. Under CI=true its absence fails the run, elsewhere
the tests that need it skip.

Nothing here may reach beyond this machine: the endpoint is 127.0.0.1, the keys are
dummies, and instance-metadata lookups are disabled (`env()`), so no credential
provider goes looking for a cloud."""

from __future__ import annotations

import os
import shutil
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support.processes import REPO, ManagedProcess, free_port, port_accepts, wait_until

MOTO_VENV = REPO / ".venv-moto"


def moto_server_path() -> str:
    for candidate in (MOTO_VENV / "bin" / "moto_server", Path(sys.prefix) / "bin" / "moto_server"):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("moto_server")
    if found:
        return found
    message = "moto_server is not installed (make test installs it into .venv-moto)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


class S3Server:
    """moto_server on a loopback port; `stop` and `start` again on the same port (its
    buckets are in memory: a restarted server has none)."""

    def __init__(self, port: int | None = None) -> None:
        self.program = moto_server_path()
        self.port = port or free_port()
        self.process: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        self.process = ManagedProcess([self.program, "-H", "127.0.0.1", "-p", str(self.port)])
        process = self.process
        wait_until(lambda: port_accepts(self.port) or not process.alive(), 30, "moto_server")
        assert process.alive(), process.output
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process = None

    def create_bucket(self, name: str) -> str:
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/{name}", method="PUT"),
                               timeout=10).close()
        return name

    def env(self) -> dict[str, str]:
        """What a sidecar or `lookout samples` needs to use this server and no other."""
        return {"AWS_ACCESS_KEY_ID": "lookout-test", "AWS_SECRET_ACCESS_KEY": "lookout-test",
                "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_ALLOW_HTTP": "true",
                "LOOKOUT_SAMPLE_STORE_ENDPOINT": self.endpoint}
