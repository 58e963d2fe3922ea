"""Per-image drift features kept on disk for `lookout shadow report`.

One JSON Lines file per hour (`features-YYYYMMDDHH.jsonl`, UTC), appended by the drift
monitor and pruned by age, so a report can compare the baseline with any window of
the last days. A write error (full disk, read-only volume) is counted and the row is
dropped; the proxy never notices.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from lookout.shadow_eval.features import FeatureRow

log = logging.getLogger(__name__)

PREFIX = "features-"


def _hour_of(timestamp: float) -> str:
    return time.strftime("%Y%m%d%H", time.gmtime(timestamp))


class FeatureStore:
    name = "feature_store"  # the `component` label of its failures

    def __init__(self, directory: str | os.PathLike[str], keep_hours: int) -> None:
        self.directory = Path(directory)
        self.keep_hours = keep_hours
        self._hour = ""
        self._handle = None

    def append(self, timestamp: float, row: FeatureRow, trace_id: str | None) -> None:
        """Raises OSError when the row cannot be written."""
        hour = _hour_of(timestamp)
        if hour != self._hour:
            self.close()
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor = os.open(self.directory / f"{PREFIX}{hour}.jsonl",
                                 os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._handle = open(descriptor, "a", encoding="utf-8")  # noqa: SIM115
            self._hour = hour
            self.prune(timestamp)
        self._handle.write(json.dumps({"time": timestamp, "trace_id": trace_id, **row}) + "\n")
        self._handle.flush()

    def prune(self, now: float) -> None:
        oldest = _hour_of(now - self.keep_hours * 3600)
        for path in self.directory.glob(f"{PREFIX}*.jsonl"):
            if path.stem[len(PREFIX):] < oldest:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the current file; a row still buffered when the disk is full is lost
        (and was counted when its write failed)."""
        if self._handle is not None:
            handle, self._handle, self._hour = self._handle, None, ""
            with contextlib.suppress(OSError):
                handle.close()


def read_rows(directory: str | os.PathLike[str], since: float = 0.0,
              until: float = float("inf")) -> Iterator[dict]:
    """Stored rows with `since <= time < until`, oldest file first; lines cut short by
    a crash are skipped."""
    for path in sorted(Path(directory).glob(f"{PREFIX}*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(row, dict) and since <= row.get("time", -1) < until:
                    yield row
