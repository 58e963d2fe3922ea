"""The filters of a sample listing, parsed from query parameters.

One parser serves the admin API (`GET /samples?...`) and `lookout samples --store`, so
both accept the same parameters and reject the same mistakes with the same message.
Times are unix seconds, RFC 3339 (`2026-11-22T03:00:00Z`) or a look-back such as
`90m`, `1h` or `2d` (see `sidecar.times`). The cursor is opaque to clients: it
encodes where the previous page ended, so pages stay stable while new samples arrive.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass

from lookout.sidecar.runtime.times import parse_time

# what an export may be asked for (the API's and the command line's choices)
FORMATS = ("coco", "yolo")
SOURCES = ("primary", "reference")
EXPORT_MAX = 10_000

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
FILTERS = ("model", "version", "strategy", "trace_id", "class", "pod")
# filters that take a comma-separated list of values (a dashboard's multi-value
# variable, in Grafana's csv format), and the values that mean any
ANY_OF = ("model", "version")
ANY_VALUE = (".*", "$__all", "All")
KNOWN = ("since", "until", "limit", "cursor", "status", "agreement_below", *FILTERS)


class QueryError(ValueError):
    """A parameter that cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class Cursor:
    time: float
    id: str

    def encode(self) -> str:
        return base64.urlsafe_b64encode(json.dumps([self.time, self.id]).encode()).decode()

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            moment, sample_id = json.loads(base64.urlsafe_b64decode(text.encode("ascii")))
            if not isinstance(sample_id, str):
                raise TypeError
            return cls(float(moment), sample_id)
        except (binascii.Error, UnicodeError, ValueError, TypeError):
            raise QueryError("cursor: not a cursor this API returned") from None


@dataclass(frozen=True, slots=True)
class SampleQuery:
    since: float | None = None
    until: float | None = None
    model: str | None = None
    version: str | None = None
    strategy: str | None = None
    trace_id: str | None = None
    class_name: str | None = None
    pod: str | None = None  # the fleet's store only: which pod took the sample
    status: int | None = None  # the HTTP status (a gRPC call's HTTP equivalent)
    agreement_below: float | None = None  # samples with an agreement under this
    limit: int = DEFAULT_LIMIT
    cursor: Cursor | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, str], now: float | None = None) -> SampleQuery:
        unknown = sorted(set(params) - set(KNOWN))
        if unknown:
            raise QueryError(f"unknown parameter {unknown[0]!r}; known: {', '.join(KNOWN)}")
        values: dict[str, object] = {}
        for key in ("since", "until"):
            if params.get(key):
                try:
                    values[key] = parse_time(params[key], now)
                except ValueError as error:
                    raise QueryError(f"{key}: {error}") from None
        if params.get("limit"):
            text = params["limit"]
            if (not (text.isascii() and text.isdigit()) or len(text) > 9
                    or not 1 <= int(text) <= MAX_LIMIT):
                raise QueryError(f"limit: expected a whole number from 1 to {MAX_LIMIT}")
            values["limit"] = int(text)
        if params.get("cursor"):
            values["cursor"] = Cursor.decode(params["cursor"])
        if params.get("status"):
            text = params["status"]
            if not (text.isascii() and text.isdigit() and len(text) == 3):
                raise QueryError("status: expected an HTTP status such as 200 or 503")
            values["status"] = int(text)
        if params.get("agreement_below"):
            try:
                below = float(params["agreement_below"])
            except ValueError:
                below = float("nan")
            if not 0.0 <= below <= 1.0:  # NaN fails this too
                raise QueryError("agreement_below: expected a number from 0 to 1")
            values["agreement_below"] = below
        for key in FILTERS:
            if params.get(key):
                values["class_name" if key == "class" else key] = params[key]
        for key in ANY_OF:  # Grafana's All, as its csv format writes it: no filter
            if values.get(key) in ANY_VALUE:
                del values[key]
        return cls(**values)
