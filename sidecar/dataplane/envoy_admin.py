"""Envoy's admin interface, on the Unix socket lookout's bootstrap gives it: how lookout
asks Envoy whether it is ready, tells it to drain and reads its stats."""

from __future__ import annotations

import http.client
import socket


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def admin_request(path: str, method: str, target: str, timeout: float = 2.0
                  ) -> tuple[int, str]:
    """One request to Envoy's admin interface on its Unix socket."""
    connection = _UnixConnection(path, timeout)
    try:
        connection.request(method, target)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()
