"""A small client of Prometheus' HTTP API: instant and range queries, nothing else.

The judge needs two endpoints and numbers back; a client library would add more than
it saves. Errors say which query failed and why, so a broken gate is diagnosed from its
output."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any


class PrometheusError(RuntimeError):
    """Prometheus could not be reached or refused a query."""


@dataclass(frozen=True, slots=True)
class Prometheus:
    url: str
    timeout: float = 30.0
    bearer_token: str = ""

    def _get(self, path: str, params: dict[str, str]) -> Any:
        address = f"{self.url.rstrip('/')}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(address)
        if self.bearer_token:
            request.add_header("Authorization", f"Bearer {self.bearer_token}")
        query = params.get("query", "")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.load(response)
        except urllib.error.HTTPError as error:
            detail = _error_text(error)
            raise PrometheusError(f"Prometheus at {self.url} refused {query!r}: "
                                  f"HTTP {error.code} {detail}") from None
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise PrometheusError(f"cannot query Prometheus at {self.url}: {reason}") from None
        if payload.get("status") != "success":
            raise PrometheusError(f"Prometheus at {self.url} refused {query!r}: "
                                  f"{payload.get('error', payload)}")
        return payload["data"]

    def scalar(self, query: str, at: float) -> float | None:
        """The value of a query that yields one series (a `sum`); None when empty."""
        data = self._get("query", {"query": query, "time": f"{at:.3f}"})
        result = data.get("result") or []
        if data.get("resultType") == "scalar":
            return _number(result[1])
        if not result:
            return None
        if len(result) > 1:
            raise PrometheusError(f"{query!r} returned {len(result)} series; expected one")
        return _number(result[0]["value"][1])

    def series(self, query: str, start: float, end: float, step: float) -> dict[float, float]:
        """Timestamp -> value of a query that yields at most one series."""
        data = self._get("query_range", {"query": query, "start": f"{start:.3f}",
                                         "end": f"{end:.3f}", "step": f"{step:g}"})
        result = data.get("result") or []
        if len(result) > 1:
            raise PrometheusError(f"{query!r} returned {len(result)} series; expected one")
        if not result:
            return {}
        return {float(t): _number(v) for t, v in result[0]["values"]}


def _number(text: str) -> float:
    value = float(text)  # Prometheus writes NaN, +Inf and -Inf as such
    return value if math.isfinite(value) else math.nan


def _error_text(error: urllib.error.HTTPError) -> str:
    try:
        return json.loads(error.read()).get("error", "")
    except (ValueError, OSError):
        return error.reason or ""
