"""nginx as a reverse proxy, the peer the data port's refusals are compared with."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.support.processes import (
    ManagedProcess,
    SidecarProcess,
    free_port,
    port_accepts,
    require_tool,
    start_sidecar,
    wait_until,
)

CONFIG = """
daemon off;
master_process off;
worker_processes 1;
error_log {root}/error.log warn;
pid {root}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    client_max_body_size {max_body};
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Connection "";
            proxy_request_buffering off;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                      else None)
    return found or require_tool("nginx")


class Nginx:
    def __init__(self, upstream_port: int, max_body: int) -> None:
        binary = nginx_binary()
        self.root = Path(tempfile.mkdtemp(prefix="lookout-nginx-"))
        self.port = free_port()
        config = self.root / "nginx.conf"
        config.write_text(CONFIG.format(root=self.root, port=self.port,
                                        upstream=upstream_port, max_body=max_body))
        check = subprocess.run([binary, "-t", "-p", str(self.root), "-c", str(config)],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.process = ManagedProcess([binary, "-p", str(self.root), "-c", str(config)])
        wait_until(lambda: port_accepts(self.port) or not self.process.alive(), 20, "nginx")
        assert self.process.alive(), self.process.output

    def stop(self) -> None:
        self.process.terminate()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def beside_nginx(upstream_port: int, max_body: int,
                 *sidecar_args: str) -> Iterator[tuple[Nginx, SidecarProcess]]:
    """nginx and lookout in front of the same upstream, for one comparison."""
    nginx = Nginx(upstream_port, max_body)
    sidecar = start_sidecar(f"http://127.0.0.1:{upstream_port}", "--max-body-bytes",
                            str(max_body), *sidecar_args)
    try:
        yield nginx, sidecar
    finally:
        sidecar.stop()
        nginx.stop()
