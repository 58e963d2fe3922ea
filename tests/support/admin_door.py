"""Knocking on the admin token's door of a running sidecar: a bearer token on the
sample API, a sign-in on the gallery's form."""

from __future__ import annotations

import urllib.parse

from lookout.sidecar.samples.ui_session import COOKIE
from tests.support.processes import Response, SidecarProcess, request


def bearer(sidecar: SidecarProcess, token: str) -> Response:
    return request(sidecar.admin_port, "GET", "/samples",
                   headers={"Authorization": f"Bearer {token}"})


def accepted(response: Response) -> bool:
    """Past the door: the API answers (503 while the store is still being created)."""
    return response.status in (200, 503)


def sign_in(sidecar: SidecarProcess, token: str) -> str:
    """The session cookie (`name=value`) the login form sets for `token`."""
    response = request(sidecar.admin_port, "POST", "/ui/login",
                       body=urllib.parse.urlencode({"token": token}).encode(),
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 303, response.body
    cookie = response.headers["Set-Cookie"].split(";", 1)[0]
    assert cookie.startswith(f"{COOKIE}=")
    return cookie


def gallery(sidecar: SidecarProcess, cookie: str) -> int:
    """The gallery's first page's status with `cookie` (303: to the login form)."""
    return request(sidecar.admin_port, "GET", "/ui/samples", headers={"Cookie": cookie}).status
