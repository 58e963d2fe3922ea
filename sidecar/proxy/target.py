"""Which request targets the data port forwards (RFC 9112 section 3.2).

Only an origin-form target (`/path?query`) ever reaches the upstream, and the upstream
address always comes from the configuration. The other forms are either rewritten to
origin form (absolute form naming this very host) or refused, because a target that can
name a host is how a proxy becomes a gateway to everything the pod can reach.
"""

from __future__ import annotations

from dataclasses import dataclass

import httptools

from lookout.sidecar.proxy.messages import Refusal


@dataclass(frozen=True, slots=True)
class OriginTarget:
    """`path` starts with '/'; `query` is the raw text after '?', without it."""

    path: str
    query: str
    asterisk: bool = False

    @property
    def path_and_query(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


def _split_origin(raw: str) -> OriginTarget:
    path, _, query = raw.partition("?")
    return OriginTarget(path, query)


def parse_target(method: str, raw: str, host_header: str | None) -> OriginTarget:
    """The origin-form target to forward, or `Refusal` saying why not."""
    if method == "CONNECT":
        raise Refusal(405, "method_not_allowed",
                            "CONNECT is not supported: lookout is not a forward proxy")
    if method == "TRACE":  # echoes credentials back to a script that could not read them
        raise Refusal(405, "method_not_allowed", "TRACE is not supported")
    if raw.startswith("/"):
        return _split_origin(raw)
    if raw == "*":
        if method != "OPTIONS":
            raise Refusal(400, "bad_target", "the asterisk target is only for OPTIONS")
        return OriginTarget("*", "", asterisk=True)
    lowered = raw[:8].lower()
    if lowered.startswith(("http://", "https://")):
        return _absolute(raw, host_header)
    raise Refusal(400, "bad_target",
                        "only origin-form targets (/path?query) are accepted")


def _absolute(raw: str, host_header: str | None) -> OriginTarget:
    """Absolute form is accepted only when it names the host the request was sent to
    (what the Host header says); the connection still goes to the configured upstream."""
    try:
        parts = httptools.parse_url(raw.encode("ascii"))
    except (httptools.HttpParserInvalidURLError, UnicodeEncodeError):
        raise Refusal(400, "bad_target", "the absolute-form target is not a URL") \
            from None
    if parts.userinfo:
        raise Refusal(400, "bad_target", "user information in the target is refused")
    host = (parts.host or b"").decode("ascii").lower()
    authority = f"{host}:{parts.port}" if parts.port is not None else host
    if not host_header or authority != host_header.strip().lower():
        raise Refusal(400, "bad_target",
                            "an absolute-form target must name the request's own Host")
    path = (parts.path or b"/").decode("ascii")
    query = (parts.query or b"").decode("ascii")
    return OriginTarget(path if path.startswith("/") else "/" + path, query)
