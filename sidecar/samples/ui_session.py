"""Who may see the gallery: the admin token, presented once, then a signed cookie.

The cookie never holds the token. It holds an expiry and a random nonce, signed with
HMAC-SHA256 keyed by the token, so a cookie from a sidecar with another token is
worthless. The nonce is also kept in a bounded table of live sessions here: signing out
deletes it, so the same cookie is refused afterwards, and a token rotation (a new
generation of `AdminToken`) empties the table, ending every session made with the old
token. A one-time login link (for the demo, and for `lookout samples serve`) is signed
the same way for another purpose and redeemed once: its signature is remembered until
it expires.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict

from lookout.sidecar.samples.admin_token import AdminToken

COOKIE = "lookout-session"  # a hyphen: nothing like a metric name
SESSION_SECONDS = 8 * 3600  # an on-call shift
LINK_SECONDS = 15 * 60
MAX_REDEEMED = 10_000  # links redeemed and not yet expired, remembered at most
MAX_SESSIONS = 10_000  # live sessions; beyond, the oldest ends


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
    expires, nonce, signature = _parts(value)
    if not (expires.isascii() and expires.isdigit() and len(expires) <= 12 and nonce
            and signature):
        return False
    expected = _signature(token, purpose, f"{expires}.{nonce}")
    return hmac.compare_digest(signature.encode("utf-8", "surrogateescape"),
                               expected.encode()) and now < int(expires)


def _parts(value: str) -> tuple[str, str, str]:
    expires, _, rest = value.partition(".")
    nonce, _, signature = rest.partition(".")
    return expires, nonce, signature


class Sessions:
    """Sessions and one-time links for the admin token in force."""

    def __init__(self, token: AdminToken | str) -> None:
        self._token = token if isinstance(token, AdminToken) else AdminToken(token)
        self._generation = self._token.generation
        self._live: OrderedDict[str, int] = OrderedDict()  # nonce -> expiry, oldest first
        self._redeemed: dict[str, int] = {}

    @property
    def token(self) -> str:
        """The token in force; a rotation ends every session and link."""
        token = self._token.value
        if self._token.generation != self._generation:
            self._generation = self._token.generation
            self._live.clear()
            self._redeemed.clear()
        return token

    @property
    def _key(self) -> bytes:
        return self.token.encode()

    @property
    def live(self) -> int:
        return len(self._live)

    def issue(self, now: float | None = None) -> tuple[str, int]:
        """A new session cookie's value and its lifetime in seconds."""
        now = time.time() if now is None else now
        cookie = _signed(self._key, "session", int(now) + SESSION_SECONDS)
        expires, nonce, _ = _parts(cookie)
        for old in [n for n, e in self._live.items() if e <= now]:
            del self._live[old]
        while len(self._live) >= MAX_SESSIONS:
            self._live.popitem(last=False)
        self._live[nonce] = int(expires)
        return cookie, SESSION_SECONDS

    def valid(self, cookie: str | None, now: float | None = None) -> bool:
        """A cookie this server issued for the token in force, not expired, not ended."""
        if not cookie or not _valid(self._key, "session", cookie,
                                    time.time() if now is None else now):
            return False
        return _parts(cookie)[1] in self._live

    def end(self, cookie: str | None) -> bool:
        """Signing out: the cookie's session ends here, whatever the browser keeps."""
        if not cookie or not _valid(self._key, "session", cookie, 0.0):
            return False
        return self._live.pop(_parts(cookie)[1], None) is not None

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
