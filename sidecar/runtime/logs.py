"""JSON-lines logging, so log pipelines in the cluster can index lookout's fields."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Hashable


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log would cost a line per request on the hot path.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # the OTLP exporter says so at every retry while a collector is down
    handler.addFilter(RepeatFilter("opentelemetry"))


class _OncePer:
    """Whether a key's line may be written now (once per `interval` seconds), and how
    many were held back since the last one: a thread-safe tally."""

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self._interval, self._clock = interval, clock
        self._last: dict[Hashable, float] = {}
        self._skipped: dict[Hashable, int] = {}
        self._lock = threading.Lock()  # analysis and shadow call from worker threads

    def note(self, key: Hashable) -> str | None:
        """None to hold the line back, else what to add to it ('' or how many were)."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._skipped[key] = self._skipped.get(key, 0) + 1
                return None
            skipped = self._skipped.pop(key, 0)
            self._last[key] = now
        if not skipped or last is None:
            return ""
        return f" (and {skipped} more like it in the last {now - last:.0f} s)"


class RepeatFilter(logging.Filter):
    """Another library's recurring line (the same message template from the same
    logger) passes once per `interval` seconds, saying how many were left out."""

    def __init__(self, prefix: str, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._prefix = prefix
        self._repeats = _OncePer(interval, clock)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self._prefix):
            return True
        suffix = self._repeats.note((record.name, str(record.msg)))
        if suffix is None:
            return False
        record.msg = f"{record.msg}{suffix}"
        return True


class FailureLog:
    """Logs a recurring failure with its traceback at most once per `interval` seconds
    per key, saying how many were left out. A component failing on every request must
    be counted every time (lookout_component_errors_total) but not write a traceback
    per request: 100 requests/s of those would drown the pod's logs."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._repeats = _OncePer(interval, clock)

    def exception(self, key: str, message: str, *args: object) -> None:
        """Call from an `except` block, like `Logger.exception`."""
        self._log(key, message, args, logging.ERROR, traceback=True)

    def warning(self, key: str, message: str, *args: object) -> None:
        """An expected failure (a peer down, a timeout): one line, no traceback."""
        self._log(key, message, args, logging.WARNING, traceback=False)

    def at(self, level: int, key: str, message: str, *args: object) -> None:
        """A line at `level`, no traceback (another program's log, passed on)."""
        self._log(key, message, args, level, traceback=False)

    def _log(self, key: str, message: str, args: tuple, level: int, traceback: bool) -> None:
        suffix = self._repeats.note(key)
        if suffix is not None:
            self._logger.log(level, message + suffix, *args, exc_info=traceback)


class TallyLog:
    """Counts events by a bounded key and logs one warning line per `interval` with the
    tally, never a traceback or a value the client sent: a flood of malformed requests
    must not flood the logs, nor copy a client's headers (tokens) into them."""

    def __init__(self, logger: logging.Logger, message: str, interval: float = 60.0,
                 clock=time.monotonic) -> None:
        self._logger = logger
        self._message = message
        self._interval = interval
        self._clock = clock
        self._counts: dict[str, int] = {}
        self._since: float | None = None

    def add(self, key: str, count: int = 1) -> None:
        now = self._clock()
        self._counts[key] = self._counts.get(key, 0) + count
        if self._since is None:
            self._since = now
            self.flush(now)  # the first one is told at once
        elif now - self._since >= self._interval:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        if not self._counts:
            return
        now = self._clock() if now is None else now
        tally = ", ".join(f"{key}={count}" for key, count in sorted(self._counts.items()))
        self._logger.warning("%s: %s (in %.0f s)", self._message, tally,
                             now - (self._since or now))
        self._counts.clear()
        self._since = now
