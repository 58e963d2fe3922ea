"""The admin token's door on a running sidecar: wrong guesses limited (429 with
Retry-After) and counted, sessions that end on sign-out, and a token file re-read when it
is rotated (in place, and by rename as the kubelet does). Real HTTP on loopback; every
wait polls for a condition."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lookout.slo import catalog
from tests.support.admin_door import accepted, bearer, gallery, sign_in
from tests.support.processes import (
    SidecarProcess,
    request,
    start_sidecar,
    start_upstream,
    wait_until,
)

LIMIT = 20
GUESSES = 200
WINDOW = 10  # seconds; the test polls for its end, never sleeps through it
REFUSED = catalog.ADMIN_TOKEN_REFUSED.sample_name


@pytest.fixture(scope="module")
def door(tmp_path_factory) -> Iterator[tuple[SidecarProcess, Path]]:
    secret = tmp_path_factory.mktemp("secret") / "token"
    secret.write_text("first-token-7b1e\n")
    upstream, port = start_upstream()
    sidecar = start_sidecar(
        f"http://127.0.0.1:{port}", "--analysis-workers", "1",
        "--sample-dir", str(tmp_path_factory.mktemp("samples") / "store"),
        "--admin-token-file", str(secret), "--admin-guess-limit", str(LIMIT),
        "--admin-guess-limit-total", "1000", "--admin-guess-window", str(WINDOW))
    yield sidecar, secret
    assert sidecar.stop() == 0
    upstream.terminate()


def test_wrong_tokens_are_limited_counted_and_the_right_one_waits_for_the_window(
        door) -> None:
    sidecar, secret = door
    token = secret.read_text().strip()
    wait_until(lambda: accepted(bearer(sidecar, token)), 60, "the sample API")
    responses = [bearer(sidecar, f"guess-{index:04d}") for index in range(GUESSES)]
    statuses = [response.status for response in responses]
    assert statuses[:LIMIT] == [403] * LIMIT
    assert set(statuses) == {403, 429} and statuses[-1] == 429
    assert all(1 <= int(r.headers["Retry-After"]) <= WINDOW
               for r in responses if r.status == 429)
    assert sidecar.metric(REFUSED, door="api", reason="wrong") == statuses.count(403)
    assert sidecar.metric(REFUSED, door="api", reason="limited") == statuses.count(429)
    right_away = bearer(sidecar, token)  # the right token waits like any guess
    assert right_away.status == 429 and "Retry-After" in right_away.headers
    wait_until(lambda: accepted(bearer(sidecar, token)), 3 * WINDOW,
               "the right token once the window has passed")
    # the form is a door too, and the tally is logged
    form = request(sidecar.admin_port, "POST", "/ui/login",
                   body=b"token=nope", headers={
                       "Content-Type": "application/x-www-form-urlencoded"})
    assert form.status == 403
    assert sidecar.metric(REFUSED, door="gallery", reason="wrong") == 1
    wait_until(lambda: "admin token guesses refused" in sidecar.process.output, 10,
               "the tally in the log")
    assert "guess-0" not in sidecar.process.output  # never a value presented


def test_a_cookie_is_refused_after_sign_out(door) -> None:
    sidecar, secret = door
    cookie = sign_in(sidecar, secret.read_text().strip())
    assert gallery(sidecar, cookie) in (200, 503)
    out = request(sidecar.admin_port, "POST", "/ui/logout", headers={"Cookie": cookie})
    assert out.status == 303
    assert gallery(sidecar, cookie) == 303  # to the login form: the session is over


@pytest.mark.parametrize("atomic", [False, True], ids=["in-place", "renamed"])
def test_a_rotated_token_file_takes_effect_without_a_restart(door, atomic: bool) -> None:
    sidecar, secret = door
    old = secret.read_text().strip()
    cookie = sign_in(sidecar, old)
    new = f"rotated-{'renamed' if atomic else 'in-place'}-{os.getpid()}"
    if atomic:
        staged = secret.with_name(".staged")
        staged.write_text(new + "\n")
        os.replace(staged, secret)
    else:
        secret.write_text(new + "\n")
    # a slow poll: each try before the reload is a wrong guess, counted against the limit
    wait_until(lambda: accepted(bearer(sidecar, new)), 30, "the new token to be accepted",
               interval=0.5)
    assert bearer(sidecar, old).status == 403
    assert gallery(sidecar, cookie) == 303  # sessions made with the old token ended
    assert gallery(sidecar, sign_in(sidecar, new)) in (200, 503)
