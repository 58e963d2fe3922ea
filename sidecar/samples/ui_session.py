"""Who may see the gallery: the admin token, presented once, then a signed cookie.

The cookie never holds the token. It holds an expiry and a random nonce, signed with
HMAC-SHA256 keyed by the token, so a cookie from a sidecar with another token (or
after the token was rotated) is worthless, and nothing is kept per session. A one-time
login link (for the demo, and for `lookout samples serve`) is signed the same way for
another purpose and redeemed once: its signature is remembered until it expires.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

COOKIE = "lookout-session"  # a hyphen: nothing like a metric name
SESSION_SECONDS = 8 * 3600  # an on-call shift
LINK_SECONDS = 15 * 60
MAX_REDEEMED = 10_000  # links redeemed and not yet expired, remembered at most


def gallery_path(value: str) -> str:
    """`value` when it is a path of the gallery's (where to go after signing in, or back
    to), else the gallery's first page: never another site."""
    return value if value.startswith("/ui/") and "\\" not in value else "/ui/samples"


def _signature(token: bytes, purpose: str, payload: str) -> str:
    # 128 bits of the HMAC: beyond guessing, and a sign-in link that fits a terminal line
    return hmac.new(token, f"{purpose}:{payload}".encode(), hashlib.sha256).hexdigest()[:32]


def _signed(token: bytes, purpose: str, expires: int) -> str:
    payload = f"{expires}.{secrets.token_hex(8)}"
    return f"{payload}.{_signature(token, purpose, payload)}"


def _valid(token: bytes, purpose: str, value: str, now: float) -> bool:
    expires, _, rest = value.partition(".")
    nonce, _, signature = rest.partition(".")
    if not (expires.isascii() and expires.isdigit() and len(expires) <= 12 and nonce
            and signature):
        return False
    expected = _signature(token, purpose, f"{expires}.{nonce}")
    return hmac.compare_digest(signature.encode("utf-8", "surrogateescape"),
                               expected.encode()) and now < int(expires)


@dataclass
class Sessions:
    """Sessions and one-time links for one admin token."""

    token: str
    _redeemed: dict[str, int] = field(default_factory=dict)

    @property
    def _key(self) -> bytes:
        return self.token.encode()

    def accepts(self, presented: str) -> bool:
        """Whether `presented` is the token (in constant time)."""
        return bool(self.token) and hmac.compare_digest(
            presented.strip().encode("utf-8", "surrogateescape"), self._key)

    def issue(self, now: float | None = None) -> tuple[str, int]:
        """A new session cookie's value and its lifetime in seconds."""
        now = time.time() if now is None else now
        return _signed(self._key, "session", int(now) + SESSION_SECONDS), SESSION_SECONDS

    def valid(self, cookie: str | None, now: float | None = None) -> bool:
        return bool(cookie) and _valid(self._key, "session", cookie,
                                       time.time() if now is None else now)

    def link_code(self, now: float | None = None) -> str:
        """A login code for a one-time link, good for LINK_SECONDS."""
        now = time.time() if now is None else now
        return _signed(self._key, "link", int(now) + LINK_SECONDS)

    def redeem(self, code: str, now: float | None = None) -> bool:
        """Whether `code` is a link code not yet used; it cannot be used again."""
        now = time.time() if now is None else now
        if not _valid(self._key, "link", code, now) or code in self._redeemed:
            return False
        self._redeemed = {c: e for c, e in self._redeemed.items() if e > now}
        if len(self._redeemed) >= MAX_REDEEMED:
            return False  # a flood of codes: no more logins by link until they expire
        self._redeemed[code] = int(code.partition(".")[0])
        return True
