"""One finished exchange as the analysis side reads it: what the tap copied, decoded
from its ring record (`dataplane/tap_record.py`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

OBSERVATION_QUEUE = "observations"  # the `queue` label of records dropped on a full ring


@dataclass(slots=True, frozen=True)
class Observation:
    """One finished request, as the analysis side needs it."""

    started_at: float  # unix time the request arrived
    method: str
    path: str
    route: str
    status: int
    code: str  # the `code` label: "200", "sidecar_504", ...
    request_headers: Mapping[str, str]  # the client's headers, as received (read-only)
    request_body: bytes  # at most observe_max_bytes of it
    response_headers: Mapping[str, str]  # the upstream's (or sidecar's) headers
    response_body: bytes
    response_truncated: bool  # response larger than observe_max_bytes
    duration: float
    upstream_duration: float | None
    trace_id: str | None  # hex, also when the trace was not sampled
    span_id: str | None
    trace_sampled: bool
    model: str
    version: str
    request_truncated: bool = False  # request larger than observe_max_bytes
