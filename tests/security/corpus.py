"""Request shapes a hostile or sloppy client can send to the data port: target forms,
framing, versions, header sizes, encodings. `{host}` is the proxy's own authority and
`{decoy}` a loopback port nothing may ever reach."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    name: str
    raw: str | bytes  # str: formatted with host/decoy, then latin-1 encoded
    responses: int = 1  # pipelined shapes expect more than one

    def render(self, host: str, decoy: int) -> bytes:
        if isinstance(self.raw, bytes):
            return self.raw.replace(b"{host}", host.encode()).replace(
                b"{decoy}", str(decoy).encode())
        return self.raw.format(host=host, decoy=decoy).encode("latin-1")


def _get(target: str, *headers: str, version: str = "HTTP/1.1", method: str = "GET") -> str:
    lines = [f"{method} {target} {version}", "Host: {host}", *headers]
    return "\r\n".join(lines) + "\r\n\r\n"


def _post(body: bytes, *headers: str, target: str = "/predict") -> bytes:
    head = "\r\n".join([f"POST {target} HTTP/1.1", "Host: {host}", *headers,
                        f"Content-Length: {len(body)}"])
    return head.encode() + b"\r\n\r\n" + body


def _chunked(body: bytes, *headers: str, extra: str = "") -> bytes:
    head = "\r\n".join(["POST /predict HTTP/1.1", "Host: {host}", *headers,
                        "Transfer-Encoding: chunked"])
    return (head.encode() + b"\r\n\r\n" + b"%x%s\r\n" % (len(body), extra.encode()) + body
            + b"\r\n0\r\n\r\n")


GZ = gzip.compress(b"hello world")
SHAPES: tuple[Shape, ...] = (
    # --- target forms -------------------------------------------------------------
    Shape("origin", _get("/v2/models/yolo/infer")),
    Shape("origin-query", _get("/search?q=a%20b&x=1&x=2")),
    Shape("origin-encoded-slash", _get("/a%2Fb/c")),
    Shape("origin-dot-segments", _get("/a/../b/./c")),
    Shape("origin-double-slash", _get("//127.0.0.1:{decoy}/x")),
    Shape("origin-at-sign", _get("/x@127.0.0.1:{decoy}")),
    Shape("origin-fragment", _get("/a?b#frag")),
    Shape("connect-userinfo", _get("x@127.0.0.1:{decoy}", method="CONNECT")),
    Shape("connect-authority", _get("127.0.0.1:{decoy}", method="CONNECT")),
    Shape("at-host", _get("@127.0.0.1:{decoy}/x")),
    Shape("userinfo-localhost", _get("x@localhost:{decoy}/")),
    Shape("authority-form-get", _get("127.0.0.1:{decoy}")),
    Shape("absolute-other-host", _get("http://127.0.0.1:{decoy}/x")),
    Shape("absolute-own-host", _get("http://{host}/own?x=1")),
    Shape("absolute-userinfo", _get("http://u@{host}/x")),
    Shape("absolute-ftp", _get("ftp://127.0.0.1:{decoy}/x")),
    Shape("asterisk-get", _get("*")),
    Shape("asterisk-options", _get("*", method="OPTIONS")),
    Shape("target-space", "GET /a b HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    Shape("target-nul", "GET /a\x00b HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    Shape("target-too-long", _get("/" + "p" * 9000)),
    Shape("target-non-ascii", "GET /caf\xe9 HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    # --- methods ------------------------------------------------------------------
    Shape("method-lowercase", _get("/x", method="get")),
    Shape("method-trace", _get("/x", method="TRACE")),
    Shape("method-head", _get("/x", method="HEAD")),
    Shape("method-delete", _get("/x", method="DELETE")),
    Shape("method-put", _post(b"{}").replace(b"POST", b"PUT", 1)),
    Shape("method-patch", _post(b"{}").replace(b"POST", b"PATCH", 1)),
    Shape("method-options-path", _get("/x", method="OPTIONS")),
    # --- versions -----------------------------------------------------------------
    Shape("http10", "GET /x HTTP/1.0\r\nHost: {host}\r\n\r\n"),
    Shape("http10-no-host", "GET /x HTTP/1.0\r\n\r\n"),
    Shape("http20", _get("/x", version="HTTP/2.0")),
    Shape("http30", _get("/x", version="HTTP/3.0")),
    Shape("http09", "GET /\r\n"),
    Shape("http09-explicit", "GET / HTTP/0.9\r\n\r\n"),
    Shape("http99", _get("/x", version="HTTP/9.9")),
    Shape("http-lowercase", _get("/x", version="http/1.1")),
    Shape("version-garbage", _get("/x", version="HTTP/1.x")),
    # --- framing ------------------------------------------------------------------
    Shape("cl-and-te", b"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\n"
          b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    Shape("te-and-cl", b"POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
          b"Content-Length: 4\r\n\r\n0\r\n\r\n"),
    Shape("cl-duplicate", b"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n"
          b"Content-Length: 3\r\n\r\nabc"),
    Shape("cl-conflicting", b"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n"
          b"Content-Length: 4\r\n\r\nabcd"),
    Shape("cl-list", b"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3, 3\r\n\r\nabc"),
    Shape("cl-negative", b"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: -1\r\n\r\n"),
    Shape("cl-plus", b"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: +3\r\n\r\nabc"),
    Shape("cl-hex", b"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0x3\r\n\r\nabc"),
    Shape("te-identity-chunked", _chunked(b"abc", "Transfer-Encoding: identity")),
    Shape("te-gzip-chunked", b"POST / HTTP/1.1\r\nHost: {host}\r\n"
          b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    Shape("te-gzip-only", b"POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: gzip\r\n"
          b"\r\nabc"),
    Shape("te-chunked-twice", _chunked(b"abc", "Transfer-Encoding: chunked")),
    Shape("te-xchunked", b"POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: xchunked"
          b"\r\n\r\n0\r\n\r\n"),
    Shape("te-http10", b"POST / HTTP/1.0\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
          b"\r\n3\r\nabc\r\n0\r\n\r\n"),
    Shape("te-mixed-case", _chunked(b"abc").replace(b"chunked", b"Chunked")),
    Shape("chunk-size-not-hex", b"POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: "
          b"chunked\r\n\r\nNOT-HEX\r\nabc\r\n0\r\n\r\n"),
    Shape("chunk-size-overflow", b"POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: "
          b"chunked\r\n\r\nffffffffffffffffff\r\nabc\r\n0\r\n\r\n"),
    Shape("chunk-extension", _chunked(b"abc", extra=";name=value")),
    Shape("chunk-trailer", _chunked(b"abc")[:-2] + b"X-Trailer: 1\r\n\r\n"),
    Shape("chunked-body", _chunked(b"x" * 5000)),
    # --- header syntax and sizes ----------------------------------------------------
    Shape("obs-fold", "GET /x HTTP/1.1\r\nHost: {host}\r\nX-A: a\r\n b\r\n\r\n"),
    Shape("bare-lf", "GET /x HTTP/1.1\nHost: {host}\n\n"),
    Shape("bare-cr", "GET /x HTTP/1.1\rHost: {host}\r\r"),
    Shape("header-control-byte", _get("/x", "X-A: a\x01b")),
    Shape("header-space-before-colon", _get("/x", "X-A : b")),
    Shape("header-bad-name", _get("/x", "X(A): b")),
    Shape("header-nul-name", _get("/x", "X-\x00A: b")),
    Shape("header-empty-value", _get("/x", "X-Empty:")),
    Shape("header-obs-text", _get("/x", "X-Latin: caf\xe9")),
    Shape("header-utf8-text", _get("/x", "X-Utf8: caf\xc3\xa9")),
    Shape("no-host", "GET /x HTTP/1.1\r\n\r\n"),
    Shape("two-hosts", "GET /x HTTP/1.1\r\nHost: {host}\r\nHost: other\r\n\r\n"),
    Shape("host-userinfo", "GET /x HTTP/1.1\r\nHost: evil@127.0.0.1:{decoy}\r\n\r\n"),
    Shape("host-path", "GET /x HTTP/1.1\r\nHost: a/b\r\n\r\n"),
    Shape("header-9k", _get("/x", "X-Big: " + "a" * 9000)),
    Shape("headers-140k", _get("/x", *(f"X-H{i}: " + "v" * 100 for i in range(1400)))),
    Shape("headers-many-small", _get("/x", *(f"X-H{i}: v" for i in range(60)))),
    Shape("leading-crlf", "\r\n\r\n" + _get("/x")),
    # --- expectations, encodings, bodies ----------------------------------------------
    Shape("expect-continue", _post(b"{}", "Expect: 100-continue")),
    Shape("expect-other", _post(b"{}", "Expect: teapot")),
    Shape("gzip-body", _post(GZ, "Content-Encoding: gzip")),
    Shape("deflate-body", _post(zlib.compress(b"hello"), "Content-Encoding: deflate")),
    Shape("gzip-chunked-body", _chunked(GZ, "Content-Encoding: gzip")),
    Shape("binary-body", _post(bytes(range(256)) * 40, "Content-Type: image/jpeg")),
    Shape("body-over-limit", b"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: "
          b"99999999999\r\n\r\n"),
    Shape("empty-post", b"POST /x HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n"),
    Shape("upgrade-h2c", _get("/x", "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c",
                              "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA")),
    Shape("upgrade-websocket", _get("/ws", "Connection: Upgrade", "Upgrade: websocket",
                                    "Sec-WebSocket-Version: 13",
                                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")),
    Shape("connection-listed-header", _get("/x", "Connection: X-Private", "X-Private: 1",
                                           "X-Public: 2")),
    Shape("proxy-authorization", _get("/x", "Proxy-Authorization: Basic Zm9vOmJhcg==")),
    Shape("pipelined", _get("/first") + _get("/second"), responses=2),
    Shape("pipelined-after-body", _post(b"abc", target="/one").decode() + _get("/two"),
          responses=2),
)
