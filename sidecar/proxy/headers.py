"""Header rewriting between client, sidecar and upstream (RFC 9110 section 7.6.1)."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

# Connection-scoped headers; never forwarded in either direction. Content-Length is
# recomputed by whichever side writes the body.
HOP_BY_HOP = frozenset(
    name.lower()
    for name in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
        "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length",
    )
)


def _connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    tokens: set[str] = set()
    for value in headers.getall("Connection", ()):
        tokens.update(token.strip().lower() for token in value.split(",") if token.strip())
    return tokens


def end_to_end(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    """Copy of `headers` without hop-by-hop ones, including those the Connection
    header names."""
    drop = HOP_BY_HOP | _connection_tokens(headers) if "Connection" in headers else HOP_BY_HOP
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in drop)


_HOP_BY_HOP_RAW = frozenset(name.encode() for name in HOP_BY_HOP)


def end_to_end_raw(raw: list[tuple[bytes, bytes]],
                   keep: frozenset[bytes] = frozenset()) -> list[tuple[bytes, bytes]]:
    """The upstream's end-to-end headers as it wrote them: names in their own case, in
    their order, repeated ones repeated (what `raw_headers` keeps and the parsed
    multidict does not). Hop-by-hop ones go, including those Connection names, but for
    those in `keep` (a relayed 101 keeps its `Connection` and `Upgrade`)."""
    drop = set(_HOP_BY_HOP_RAW)
    for name, value in raw:
        if name.lower() == b"connection":
            drop.update(t.strip().lower() for t in value.split(b",") if t.strip())
    drop -= keep
    return [(name, value) for name, value in raw if name.lower() not in drop]


def add_forwarded(
    headers: CIMultiDict[str], client_ip: str | None, scheme: str, host: str | None
) -> None:
    """X-Forwarded-* as nginx and most ingress controllers set them."""
    if client_ip:
        prior = headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{prior}, {client_ip}" if prior else client_ip
    headers.setdefault("X-Forwarded-Proto", scheme)
    if host:
        headers.setdefault("X-Forwarded-Host", host)
