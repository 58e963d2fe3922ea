"""The admin token's door as pure logic, on a clock the test turns: the guess limits,
sessions that end, a token file re-read when it changes."""

from __future__ import annotations

import os
from pathlib import Path

from lookout.sidecar.samples.admin_token import POLL_SECONDS, AdminToken
from lookout.sidecar.samples.door import Door, Verdict
from lookout.sidecar.samples.guesses import MAX_ADDRESSES, GuessLimiter, GuessSettings
from lookout.sidecar.samples.ui_session import MAX_SESSIONS, Sessions

NOW = 1_800_000_000.0


class Clock:
    """A clock the test turns."""

    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_over_its_limit_waits_for_the_window_and_others_do_not() -> None:
    clock = Clock()
    limiter = GuessLimiter(GuessSettings(3, 100, 60.0), clock)
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1") is None
        limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 60
    assert limiter.retry_after("10.0.0.2") is None
    clock.now += 59.5
    assert limiter.retry_after("10.0.0.1") == 1
    clock.now += 0.5
    assert limiter.retry_after("10.0.0.1") is None  # a new window


def test_the_total_limit_stops_every_address() -> None:
    clock = Clock()
    limiter = GuessLimiter(GuessSettings(3, 5, 10.0), clock)
    for index in range(5):
        limiter.failed(f"10.0.0.{index}")
    assert limiter.retry_after("10.9.9.9") == 10
    clock.now += 10
    assert limiter.retry_after("10.9.9.9") is None


def test_the_address_table_is_bounded() -> None:
    limiter = GuessLimiter(GuessSettings(3, 10**9, 10.0), Clock())
    for index in range(MAX_ADDRESSES + 10):
        limiter.failed(str(index))
    assert len(limiter._windows) == MAX_ADDRESSES


def test_a_limited_door_never_compares_and_counts_each_refusal() -> None:
    counted: list[tuple[str, str]] = []
    door = Door(AdminToken("right"), GuessLimiter(GuessSettings(2, 100, 60.0), Clock()),
                lambda *labels: counted.append(labels))
    compared = []

    def proof(token: str):
        return lambda: compared.append(token) or door.matches(token)

    assert door.check("api", "a", proof("wrong")) is Verdict.WRONG
    assert door.check("api", "a", proof("wrong")) is Verdict.WRONG
    assert door.check("api", "a", proof("right")) is Verdict.LIMITED
    assert door.check("api", "b", proof("right")) is Verdict.ACCEPTED
    assert compared == ["wrong", "wrong", "right"]
    assert counted == [("api", "wrong"), ("api", "wrong"), ("api", "limited")]


def test_signing_out_ends_the_session_here() -> None:
    sessions = Sessions("token-a")
    cookie, _ = sessions.issue(NOW)
    other, _ = sessions.issue(NOW)
    assert sessions.valid(cookie, NOW)
    assert sessions.end(cookie)
    assert not sessions.valid(cookie, NOW) and sessions.valid(other, NOW)
    assert not sessions.end(cookie) and not sessions.end("1.2.3")


def test_the_session_table_is_bounded_oldest_first() -> None:
    sessions = Sessions("token-a")
    first, _ = sessions.issue(NOW)
    for _ in range(MAX_SESSIONS):
        sessions.issue(NOW)
    assert sessions.live == MAX_SESSIONS and not sessions.valid(first, NOW)


def _rotate(path: Path, token: str, atomic: bool) -> None:
    if atomic:  # as the kubelet swaps a Secret: a new file renamed over the old
        new = path.with_name(".new")
        new.write_text(token)
        os.replace(new, path)
    else:
        path.write_text(token)


def test_a_rotated_token_file_is_read_and_ends_the_old_sessions(tmp_path: Path) -> None:
    for atomic in (False, True):
        path = tmp_path / f"token-{atomic}"
        path.write_text("old-token\n")
        clock = Clock()
        token = AdminToken("old-token", str(path), clock)
        sessions = Sessions(token)
        cookie, _ = sessions.issue(NOW)
        _rotate(path, "a-new-token-of-another-size\n", atomic)
        assert token.value == "old-token"  # not yet looked at
        clock.now += POLL_SECONDS
        assert token.value == "a-new-token-of-another-size" and token.generation == 1
        assert not sessions.valid(cookie, NOW)
        assert sessions.live == 0


def test_an_unreadable_or_empty_token_file_keeps_the_token_in_force(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("kept")
    clock = Clock()
    token = AdminToken("kept", str(path), clock)
    path.write_text("   \n")
    clock.now += POLL_SECONDS
    assert token.value == "kept"
    path.unlink()
    clock.now += POLL_SECONDS
    assert token.value == "kept" and token.generation == 0
