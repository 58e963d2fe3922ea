"""Azurite, Microsoft's Azure Storage emulator (npm), on loopback for the tests:
installed by `make test` into `.azurite` (tools/install_test_servers.sh). Under CI=true
its absence fails the run, elsewhere the tests that need it skip.

It runs with its well-known development account (`devstoreaccount1` and the key
Microsoft publishes for it); `create_container` signs that one request with the key
(Shared Key), since obstore, like the sidecar, never creates containers."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import os
import tempfile
import urllib.request

import pytest

from tests.support.processes import REPO, ManagedProcess, free_port, port_accepts, wait_until

ACCOUNT = "devstoreaccount1"
KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
       "KBHBeksoGMGw==")  # Azurite's published development key, not a secret
PROGRAM = REPO / ".azurite" / "node_modules" / ".bin" / "azurite-blob"


class AzuriteServer:
    def __init__(self) -> None:
        if not PROGRAM.exists():
            message = "azurite is not installed (make test installs it into .azurite)"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        self.port = free_port()
        self.location = tempfile.mkdtemp(prefix="lookout-azurite-")
        self.process = ManagedProcess([str(PROGRAM), "--blobHost", "127.0.0.1", "--blobPort",
                                       str(self.port), "--location", self.location, "--silent",
                                       "--skipApiVersionCheck",
                                       # loopback only: no telemetry to Microsoft
                                       "--disableTelemetry"])
        process = self.process
        wait_until(lambda: port_accepts(self.port) or not process.alive(), 60, "azurite")
        assert process.alive(), process.output

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    def create_container(self, name: str) -> str:
        date = email.utils.formatdate(usegmt=True)
        signed = (f"PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:2021-08-06\n"
                  f"/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container")
        signature = base64.b64encode(hmac.new(base64.b64decode(KEY), signed.encode(),
                                              hashlib.sha256).digest()).decode()
        urllib.request.urlopen(urllib.request.Request(
            f"{self.endpoint}/{name}?restype=container", method="PUT", headers={
                "x-ms-date": date, "x-ms-version": "2021-08-06", "Content-Length": "0",
                "Authorization": f"SharedKey {ACCOUNT}:{signature}"}), timeout=10).close()
        return name

    def env(self) -> dict[str, str]:
        return {"AZURE_STORAGE_ACCOUNT_NAME": ACCOUNT, "AZURE_STORAGE_ACCOUNT_KEY": KEY,
                "LOOKOUT_SAMPLE_STORE_ENDPOINT": self.endpoint}

    def stop(self) -> None:
        self.process.terminate()
