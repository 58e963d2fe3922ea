"""Points in time as people type them on a command line or in a query string."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

_LOOKBACK = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, now: float | None = None) -> float:
    """A look-back (`90m`, `2h`, `1d`: that long ago), unix seconds, or ISO 8601 /
    RFC 3339 (`2026-11-22T03:00Z`; UTC when no offset is given) -> unix time.
    Raises ValueError saying what is accepted."""
    text = text.strip()
    lookback = _LOOKBACK.fullmatch(text)
    if lookback:
        now = time.time() if now is None else now
        return now - float(lookback.group(1)) * _UNIT_SECONDS[lookback.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a time ago (90m, 2h, 1d), unix seconds nor "
                         f"an ISO time (2026-11-22T03:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
