"""The admin token's door, shared by the sample API (bearer token) and the gallery
(login form and links): limits on wrong guesses first, then a constant-time compare,
and every refusal counted and tallied in the log (one line a minute, never the value
presented)."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from enum import Enum

from lookout.sidecar.runtime.logs import TallyLog
from lookout.sidecar.samples.admin_token import AdminToken
from lookout.sidecar.samples.guesses import GuessLimiter

log = logging.getLogger(__name__)

API, GALLERY = "api", "gallery"  # the `door` label
WRONG, LIMITED = "wrong", "limited"  # the `reason` label


class Verdict(Enum):
    ACCEPTED = "accepted"
    WRONG = WRONG
    LIMITED = LIMITED


class Door:
    """Checks presented tokens; `refused(door, reason)` counts each refusal."""

    def __init__(self, token: AdminToken, limiter: GuessLimiter | None = None,
                 refused: Callable[[str, str], None] | None = None) -> None:
        self.token = token
        self.limiter = limiter or GuessLimiter()
        self._refused = refused or (lambda door, reason: None)
        self._tally = TallyLog(log, "admin token guesses refused (door/reason)")

    def matches(self, presented: str) -> bool:
        """Whether `presented` is the token in force, compared in constant time."""
        token = self.token.value
        return bool(token) and hmac.compare_digest(
            presented.strip().encode("utf-8", "surrogateescape"), token.encode())

    def retry_after(self, address: str | None) -> int | None:
        return self.limiter.retry_after(address or "unknown")

    def check(self, door: str, address: str | None, proof: Callable[[], bool]) -> Verdict:
        """`proof()` (the token compared, a link code redeemed) unless the address or
        everyone is over the limit; a failed proof counts against both."""
        address = address or "unknown"
        if self.limiter.retry_after(address) is not None:
            self._refuse(door, LIMITED)
            return Verdict.LIMITED
        if proof():
            return Verdict.ACCEPTED
        self.limiter.failed(address)
        self._refuse(door, WRONG)
        return Verdict.WRONG

    def _refuse(self, door: str, reason: str) -> None:
        self._refused(door, reason)
        self._tally.add(f"{door}/{reason}")

    def flush(self) -> None:
        self._tally.flush()
