"""The local sample store as the object-store sink's spool.

A sample is unsent until its id is in the `sent` table, which the sink fills only after
the sample's files and its manifest are in the bucket. So a sidecar killed at any point
of an upload, or a bucket that is down for an hour, leaves the sample unsent, and it goes
up on the next try (with the same object keys: no copies). A sample written before the
sink was configured is unsent too, and goes up.

The spool is bounded by the store's own limits (`sample_store_max_bytes`,
`sample_retention_hours`); retention deletes sent samples first (they are only the
pod's local gallery now) and counts every unsent sample it deletes, since that one is
lost to the fleet.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lookout.sidecar.samples.store import Sample, SampleStore, _row_to_sample

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sent (
    sample_id TEXT PRIMARY KEY REFERENCES samples (id) ON DELETE CASCADE
) WITHOUT ROWID;
"""
LOST = "spool_full"  # lookout_samples_dropped_total's reason for an unsent sample deleted
_UNSENT = "id NOT IN (SELECT sample_id FROM sent)"
_CHUNK = 500  # ids per statement, well under SQLite's variable limit


@dataclass(frozen=True, slots=True)
class Backlog:
    """What waits for the bucket: how many samples, their bytes, the oldest's time."""

    samples: int
    bytes: int
    oldest: float | None


class Spool:
    """The unsent samples of a store; thread-safe like the store itself."""

    def __init__(self, store: SampleStore, on_lost: Callable[[int], None]) -> None:
        self.store = store
        self._on_lost = on_lost
        self._lock = threading.Lock()
        connection = store._connection()
        connection.executescript(_SCHEMA)
        store.eviction_order = \
            "EXISTS (SELECT 1 FROM sent WHERE sample_id = samples.id) DESC, time, id"
        store.on_evict = self._evicting

    def _evicting(self, ids: list[str]) -> None:
        """Retention is about to delete `ids`: count the unsent among them as lost."""
        lost = 0
        connection = self.store._connection()
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            lost += connection.execute(
                f"SELECT COUNT(*) FROM samples WHERE id IN ({', '.join('?' * len(chunk))}) "
                f"AND {_UNSENT}", chunk).fetchone()[0]
        if lost:
            self._on_lost(lost)

    def unsent(self, limit: int) -> list[Sample]:
        """The oldest unsent samples, up to `limit`, with their classes."""
        connection = self.store._connection()
        rows = connection.execute(
            f"SELECT * FROM samples WHERE {_UNSENT} ORDER BY time, id LIMIT ?",
            (limit,)).fetchall()
        samples = []
        for row in rows:
            classes = tuple(name for (name,) in connection.execute(
                "SELECT class FROM sample_classes WHERE sample_id = ? ORDER BY class",
                (row["id"],)))
            samples.append(dataclasses.replace(_row_to_sample(row), classes=classes))
        return samples

    def mark_sent(self, ids: Sequence[str]) -> int:
        """Record `ids` as in the bucket; returns how many were still in the store (one
        that retention deleted meanwhile was counted as lost already)."""
        marked = 0
        with self._lock, self.store._transaction() as connection:
            for start in range(0, len(ids), _CHUNK):
                chunk = list(ids[start:start + _CHUNK])
                marked += connection.execute(
                    f"INSERT OR IGNORE INTO sent SELECT id FROM samples "
                    f"WHERE id IN ({', '.join('?' * len(chunk))})", chunk).rowcount
        return marked

    def backlog(self) -> Backlog:
        row = self.store._connection().execute(
            f"SELECT COUNT(*), COALESCE(SUM(file_bytes + COALESCE(original_bytes, 0)), 0), "
            f"MIN(time) FROM samples WHERE {_UNSENT}").fetchone()
        return Backlog(int(row[0]), int(row[1]), row[2])
