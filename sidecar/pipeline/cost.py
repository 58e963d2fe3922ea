"""What analysing one exchange will cost, known from its bodies' sizes and kinds before
any byte is parsed, so an exchange over the per-message budget is skipped (parse failure
`over_budget`) instead of holding a worker for seconds.

The rates are floors measured by `bench/analysis.py` on one 2-core build machine and
halved for slower hosts: orjson reads V2 JSON tensors at about 220 MB/s there, base64
images in JSON faster, binary tensors and encoded images cost little beyond the image
decode, which JPEG's draft mode bounds. A budget of 1 s thus admits any JSON body up to
about 100 MB, far above `observe_max_bytes`; it is there for hosts and bodies far slower
than these."""

from __future__ import annotations

from collections.abc import Mapping

JSON_BYTES_PER_SECOND = 100e6
BINARY_BYTES_PER_SECOND = 1e9
IMAGE_BYTES_PER_SECOND = 50e6  # an encoded image: decode cost grows with its size
FIXED_SECONDS = 0.001


def body_seconds(headers: Mapping[str, str], body: bytes) -> float:
    if not body:
        return 0.0
    media = headers.get("Content-Type", "").split(";")[0].strip().lower()
    if media.endswith("json") or (not media and body[:1] in (b"{", b"[")):
        rate = JSON_BYTES_PER_SECOND
        if "Inference-Header-Content-Length" in headers:  # a JSON head, binary tensors
            rate = BINARY_BYTES_PER_SECOND
    elif media.startswith(("image/", "multipart/")):
        rate = IMAGE_BYTES_PER_SECOND
    else:
        rate = BINARY_BYTES_PER_SECOND
    return FIXED_SECONDS + len(body) / rate


def exchange_seconds(request_headers: Mapping[str, str], request_body: bytes,
                     response_headers: Mapping[str, str], response_body: bytes) -> float:
    return body_seconds(request_headers, request_body) + \
        body_seconds(response_headers, response_body)
