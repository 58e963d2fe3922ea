"""Which samples were audited, and the boxes their annotators drew: what the gallery
marks on its cards and draws as a third box style on a sample's page.

Read from the store's audit records (`audit_records.py`; the boxes are the compact
`annotations` that `audit_import.complete` keeps), at most once every
`MARKS_TTL_SECONDS` per gallery: a page costs no more reads with audits than without.
A record that cannot be read leaves the gallery as it was (logged), never broken.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

MARKS_TTL_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class AuditMark:
    """One audited sample: its batch, and the annotators' boxes in thumbnail pixels
    (label, x1, y1, x2, y2); empty when they found nothing, or before the import."""

    batch_id: str
    labelled: bool
    boxes: tuple[tuple[str, float, float, float, float], ...] = ()


def _box(box: Sequence[Any]) -> tuple[str, float, float, float, float]:
    label, x1, y1, x2, y2 = box
    return str(label), float(x1), float(y1), float(x2), float(y2)


def audit_marks(records: Iterable[Mapping[str, Any]]) -> dict[str, AuditMark]:
    """Sample id -> its mark; the newest record wins where batches share a sample."""
    marks: dict[str, AuditMark] = {}
    for record in sorted(records, key=lambda r: float(r.get("created", 0))):
        annotations = record.get("annotations") or {}
        for sample_id in (*record.get("random_ids", ()), *record.get("top_up_ids", ())):
            boxes = annotations.get(sample_id)
            marks[sample_id] = AuditMark(str(record["batch_id"]), boxes is not None,
                                         tuple(_box(box) for box in boxes or ()))
    return marks


class AuditMarkCache:
    """The marks of one store, read again once they are `MARKS_TTL_SECONDS` old."""

    def __init__(self, read: Callable[[], Iterable[Mapping[str, Any]]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self._clock = clock
        self._lock = threading.Lock()
        self._marks: dict[str, AuditMark] = {}
        self._read_at: float | None = None

    def marks(self) -> Mapping[str, AuditMark]:
        with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at >= MARKS_TTL_SECONDS:
                self._read_at = now
                try:
                    self._marks = audit_marks(self._read())
                except Exception as error:  # the gallery stays up without its marks
                    log.warning("gallery: cannot read the audit records: %s", error)
            return self._marks


def marks_of(cache: AuditMarkCache | None, ids: Sequence[str]) -> dict[str, AuditMark]:
    """The marks of these samples only (what a page shows)."""
    if cache is None:
        return {}
    every = cache.marks()
    return {sample_id: every[sample_id] for sample_id in ids if sample_id in every}
