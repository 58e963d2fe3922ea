"""A real Prometheus server (Debian's package) scraping processes on loopback."""

from __future__ import annotations

import json
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.processes import ManagedProcess, free_port, port_accepts, wait_until


class PrometheusServer:
    def __init__(self, binary: str, targets: list[str], rule_files: list[Path] = ()) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="lookout-prometheus-"))
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [{
                "job_name": "lookout",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": targets}],
            }],
        }
        config_path = self.directory / "prometheus.yml"
        config_path.write_text(json.dumps(config))  # JSON is YAML
        self.process = ManagedProcess([
            binary, f"--config.file={config_path}",
            f"--storage.tsdb.path={self.directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--enable-feature=exemplar-storage",
        ])
        wait_until(lambda: port_accepts(self.port) or not self.process.alive(), 60,
                   "Prometheus to listen")
        assert self.process.alive(), self.process.output
        wait_until(self._ready, 60, "Prometheus to be ready", interval=0.1)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            payload = json.load(response)
        assert payload["status"] == "success", payload
        return payload["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        return self.api("query", query=promql)["result"]

    def wait_for_series(self, promql: str, timeout: float = 60) -> list[dict[str, Any]]:
        return wait_until(lambda: self.query(promql), timeout, f"Prometheus to return {promql}",
                          interval=0.25)

    def stop(self) -> None:
        self.process.terminate()
