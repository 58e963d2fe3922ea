"""The sample store: thumbnails on disk, indexed in SQLite, safe against `kill -9`.

Layout of the directory:

    index.sqlite3              the index (WAL journal)
    images/YYYYMMDD/<id>.jpg   thumbnails (and `<id>.orig.<ext>` when originals are kept)

Crash safety comes from ordering. Adding: each file is written to a temporary name,
fsynced, renamed into place and its directory fsynced; only then is the row committed.
Removing: the row is deleted and committed first, then the files. A crash at any point
therefore leaves at worst files without a row (or a temporary file), never a row
without its file; `repair()` (run on every open) deletes those leftovers and any row
whose file is missing or has the wrong size, say after a volume was copied badly.

Ids are random and time-ordered; they are generated here and never derived from a
request, and a lookup accepts nothing but 32 hex digits, so no client input reaches
a filesystem path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lookout.sidecar.samples.query import Cursor, QueryError, SampleQuery

log = logging.getLogger(__name__)

INDEX_NAME = "index.sqlite3"
IMAGES = "images"
TEMP_SUFFIX = ".tmp"
ID_PATTERN = re.compile(r"[0-9a-f]{32}")
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    id TEXT PRIMARY KEY,
    time REAL NOT NULL,
    trace_id TEXT,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    strategy TEXT NOT NULL,
    route TEXT NOT NULL,
    status INTEGER NOT NULL,
    latency REAL NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    thumbnail_width INTEGER NOT NULL,
    thumbnail_height INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    file TEXT NOT NULL,
    file_bytes INTEGER NOT NULL,
    original_file TEXT,
    original_bytes INTEGER,
    primary_detections TEXT,
    reference_detections TEXT,
    agreement REAL,
    features TEXT,
    inclusion_probability REAL
);
CREATE INDEX IF NOT EXISTS samples_by_time ON samples (time DESC, id DESC);
CREATE INDEX IF NOT EXISTS samples_by_trace ON samples (trace_id);
CREATE TABLE IF NOT EXISTS sample_classes (
    class TEXT NOT NULL,
    sample_id TEXT NOT NULL REFERENCES samples (id) ON DELETE CASCADE,
    PRIMARY KEY (class, sample_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sample_classes_by_sample ON sample_classes (sample_id);
"""


class StoreFull(OSError):
    """The volume (or its quota) is full: the caller pauses sampling."""


class StoreError(OSError):
    """The store cannot be written for another reason (read-only volume, I/O error)."""


def new_id(now: float) -> str:
    """Sortable by time to the millisecond, unguessable after that."""
    return f"{int(now * 1000):012x}{secrets.token_hex(10)}"


def valid_id(text: str) -> bool:
    return ID_PATTERN.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class SampleFile:
    """A file to store with a sample: the thumbnail, or the kept original."""

    data: bytes
    extension: str


@dataclass(frozen=True, slots=True)
class Sample:
    """One stored sample: the index row, with detections as JSON-ready lists."""

    id: str
    time: float
    trace_id: str | None
    model: str
    version: str
    strategy: str
    route: str
    status: int
    latency: float
    width: int  # of the original image
    height: int
    thumbnail_width: int
    thumbnail_height: int
    media_type: str
    file: str
    file_bytes: int
    original_file: str | None = None
    original_bytes: int | None = None
    primary_detections: list[dict[str, Any]] | None = None
    reference_detections: list[dict[str, Any]] | None = None
    agreement: float | None = None
    features: dict[str, Any] | None = None
    classes: tuple[str, ...] = field(default=())
    pod: str | None = None  # set by the fleet store: which pod took it
    # `random` samples: the probability the exchange had of being drawn (inclusion.py).
    # None in stores written before it was recorded: such samples cannot be weighted,
    # so audits leave them out of their estimates.
    inclusion_probability: float | None = None

    @property
    def bytes(self) -> int:
        return self.file_bytes + (self.original_bytes or 0)

    def to_json(self) -> dict[str, Any]:
        """The API's (and the CLI's) view of a sample: no file paths."""
        return {
            "id": self.id,
            "time": self.time,
            "time_utc": datetime.fromtimestamp(self.time, UTC).isoformat(timespec="milliseconds"),
            "trace_id": self.trace_id,
            "model": self.model,
            "version": self.version,
            "strategy": self.strategy,
            "route": self.route,
            "status": self.status,
            "latency_seconds": self.latency,
            "image": {"width": self.width, "height": self.height,
                      "original_kept": self.original_file is not None},
            "thumbnail": {"width": self.thumbnail_width, "height": self.thumbnail_height,
                          "media_type": self.media_type, "bytes": self.file_bytes},
            "primary_detections": self.primary_detections,
            "reference_detections": self.reference_detections,
            "agreement": self.agreement,
            "inclusion_probability": self.inclusion_probability,
            "features": self.features,
            "pod": self.pod,
        }


_JSON_COLUMNS = ("primary_detections", "reference_detections", "features")
_COLUMNS = tuple(f for f in Sample.__dataclass_fields__ if f not in ("classes", "pod"))


def _row_to_sample(row: sqlite3.Row) -> Sample:
    present = row.keys()  # a store written before a column was added lacks it
    values = {key: row[key] for key in _COLUMNS if key in present}
    for key in _JSON_COLUMNS:
        values[key] = json.loads(values[key]) if values[key] is not None else None
    return Sample(**values)


@dataclass(frozen=True, slots=True)
class Page:
    samples: list[Sample]
    next_cursor: str | None


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _classify(error: OSError | sqlite3.Error) -> OSError:
    if isinstance(error, sqlite3.OperationalError) and "full" in str(error):
        return StoreFull(errno.ENOSPC, str(error))
    if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
        return StoreFull(error.errno, error.strerror or str(error))
    return StoreError(getattr(error, "errno", None) or errno.EIO, str(error))


PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600
# columns added since the first schema: a store written before gains them (NULL)
_ADDED_COLUMNS = {"inclusion_probability": "REAL"}


def _add_missing_columns(connection: sqlite3.Connection) -> None:
    present = {row[1] for row in connection.execute("PRAGMA table_info(samples)")}
    for name, kind in _ADDED_COLUMNS.items():
        if name not in present:
            with contextlib.suppress(sqlite3.OperationalError):  # another opener added it
                connection.execute(f"ALTER TABLE samples ADD COLUMN {name} {kind}")


class SampleStore:
    """Thread-safe: each thread gets its own SQLite connection; writes are serialised."""

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int | None = None,
                 retention_seconds: float | None = None, repair: bool = True) -> None:
        self.directory = Path(directory)
        self.images = self.directory / IMAGES
        self.max_bytes = max_bytes
        self.retention_seconds = retention_seconds
        self._local = threading.local()
        self._write_lock = threading.Lock()
        # which samples retention deletes first, and who hears of them before they go:
        # the spool (spool.py) keeps unsent samples longest and counts those it loses
        self.eviction_order = "time, id"
        self.on_evict: Callable[[list[str]], None] | None = None
        try:
            # thumbnails of user traffic: the pod's user alone may read them
            self.directory.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
            self.images.mkdir(mode=PRIVATE_DIR, exist_ok=True)
            connection = self._connection()
            connection.executescript(_SCHEMA)
            if repair:  # the writer's open; a copy opened as evidence is left as it is
                _add_missing_columns(connection)
            with contextlib.suppress(PermissionError):  # a store another user opened first
                for private, mode in ((self.directory, PRIVATE_DIR),
                                      (self.directory / INDEX_NAME, PRIVATE_FILE)):
                    private.chmod(mode)  # SQLite's -wal and -shm files copy the index's
        except (OSError, sqlite3.Error) as error:
            raise StoreError(errno.EIO, f"sample store {self.directory}: cannot open "
                             f"({error})") from None
        if repair:
            self.repair()
        self.image_bytes = self._sum_bytes()

    # -- connections --------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.directory / INDEX_NAME, isolation_level=None,
                                         timeout=10.0, check_same_thread=False)
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")  # a committed row survives power loss
            connection.execute("PRAGMA foreign_keys=ON")
            # the journal is cut back after checkpoints, so byte retention sees real sizes
            connection.execute("PRAGMA journal_size_limit=1048576")
            self._local.connection = connection
        return connection

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    # -- writing ------------------------------------------------------------------------

    def _write_file(self, relative: str, data: bytes) -> None:
        path = self.directory / relative
        temporary = path.with_name(path.name + TEMP_SUFFIX)
        created = not path.parent.exists()
        path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        if created:
            _fsync_directory(path.parent.parent)
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
            with open(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
            _fsync_directory(path.parent)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise

    def add(self, sample: Sample, thumbnail: SampleFile,
            original: SampleFile | None = None) -> Sample:
        """Store the files, then index them. Raises StoreFull or StoreError; either way
        nothing half-written stays behind."""
        day = time.strftime("%Y%m%d", time.gmtime(sample.time))
        file = f"{IMAGES}/{day}/{sample.id}.{thumbnail.extension}"
        original_file = f"{IMAGES}/{day}/{sample.id}.orig.{original.extension}" \
            if original else None
        stored = dataclasses.replace(sample, file=file, file_bytes=len(thumbnail.data),
                                     original_file=original_file,
                                     original_bytes=len(original.data) if original else None)
        written: list[str] = []
        with self._write_lock:
            try:
                for relative, data in ((file, thumbnail.data),
                                       (original_file, original.data if original else b"")):
                    if relative is not None:
                        self._write_file(relative, data)
                        written.append(relative)
                self._insert(stored)
            except (OSError, sqlite3.Error) as error:
                for relative in written:
                    with contextlib.suppress(OSError):
                        (self.directory / relative).unlink()
                raise _classify(error) from None
            self.image_bytes += stored.bytes
        return stored

    def _insert(self, sample: Sample) -> None:
        values = [getattr(sample, key) for key in _COLUMNS]
        for key in _JSON_COLUMNS:
            index = _COLUMNS.index(key)
            values[index] = json.dumps(values[index]) if values[index] is not None else None
        with self._transaction() as connection:
            connection.execute(
                f"INSERT INTO samples ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_COLUMNS))})", values)
            connection.executemany("INSERT OR IGNORE INTO sample_classes VALUES (?, ?)",
                                   [(name, sample.id) for name in set(sample.classes)])

    # -- retention ----------------------------------------------------------------------

    def disk_bytes(self) -> int:
        """Images plus the index and its journal: what the volume holds for us."""
        total = self.image_bytes
        for name in (INDEX_NAME, INDEX_NAME + "-wal", INDEX_NAME + "-shm"):
            with contextlib.suppress(OSError):
                total += (self.directory / name).stat().st_size
        return total

    def enforce_retention(self, now: float | None = None, extra_bytes: int = 0) -> int:
        """Delete samples older than the retention, then the oldest until the store
        (plus `extra_bytes` about to be written) fits `max_bytes`. Returns how many."""
        now = time.time() if now is None else now
        removed = 0
        with self._write_lock:
            if self.retention_seconds is not None:
                removed += self._remove_where("time < ?", (now - self.retention_seconds,))
            while self.max_bytes is not None and \
                    self.disk_bytes() + extra_bytes > self.max_bytes:
                oldest = self._remove_where(
                    f"id IN (SELECT id FROM samples ORDER BY {self.eviction_order} LIMIT 16)",
                    ())
                if not oldest:
                    break
                removed += oldest
        return removed

    def _remove_where(self, condition: str, parameters: Sequence[Any]) -> int:
        connection = self._connection()
        rows = connection.execute(
            f"SELECT id, file, file_bytes, original_file, original_bytes FROM samples "
            f"WHERE {condition}", parameters).fetchall()
        if not rows:
            return 0
        if self.on_evict is not None:
            self.on_evict([row["id"] for row in rows])
        with self._transaction() as transaction:
            transaction.executemany("DELETE FROM samples WHERE id = ?",
                                    [(row["id"],) for row in rows])
        for row in rows:  # after the commit: a crash here leaves orphans, which repair removes
            for key in ("file", "original_file"):
                if row[key]:
                    with contextlib.suppress(FileNotFoundError):
                        (self.directory / row[key]).unlink()
            self.image_bytes -= row["file_bytes"] + (row["original_bytes"] or 0)
        self._remove_empty_days()
        return len(rows)

    def _remove_empty_days(self) -> None:
        for day in self.images.iterdir():
            if day.is_dir():
                with contextlib.suppress(OSError):
                    day.rmdir()  # only succeeds when empty

    # -- repair -------------------------------------------------------------------------

    def repair(self) -> tuple[int, int]:
        """Delete rows whose files are missing or the wrong size, and files (including
        temporary ones) that no row names. Returns (rows removed, files removed)."""
        with self._write_lock:
            connection = self._connection()
            known: set[str] = set()
            broken: list[str] = []
            for row in connection.execute(
                    "SELECT id, file, file_bytes, original_file, original_bytes FROM samples"):
                files = [(row["file"], row["file_bytes"])]
                if row["original_file"]:
                    files.append((row["original_file"], row["original_bytes"]))
                if all(self._intact(name, size) for name, size in files):
                    known.update(name for name, _ in files)
                else:
                    broken.append(row["id"])
            if broken:
                with self._transaction() as transaction:
                    transaction.executemany("DELETE FROM samples WHERE id = ?",
                                            [(sample_id,) for sample_id in broken])
            orphans = 0
            for path in self.images.rglob("*"):
                if path.is_file() and path.relative_to(self.directory).as_posix() not in known:
                    path.unlink()
                    orphans += 1
            self._remove_empty_days()
        if broken or orphans:
            log.warning("sample store %s repaired: %d rows without their file, %d files "
                        "without a row removed", self.directory, len(broken), orphans)
        return len(broken), orphans

    def _intact(self, relative: str, size: int) -> bool:
        try:
            return (self.directory / relative).stat().st_size == size
        except OSError:
            return False

    def _sum_bytes(self) -> int:
        row = self._connection().execute(
            "SELECT COALESCE(SUM(file_bytes + COALESCE(original_bytes, 0)), 0) FROM samples"
        ).fetchone()
        return int(row[0])

    # -- reading ------------------------------------------------------------------------

    def get(self, sample_id: str) -> Sample | None:
        if not valid_id(sample_id):
            return None
        connection = self._connection()
        row = connection.execute("SELECT * FROM samples WHERE id = ?", (sample_id,)).fetchone()
        return _row_to_sample(row) if row else None

    def count(self) -> int:
        return int(self._connection().execute("SELECT COUNT(*) FROM samples").fetchone()[0])

    @staticmethod
    def _where(query: SampleQuery) -> tuple[str, list[Any]]:
        """The query's filters as a WHERE clause (empty when none) and its parameters."""
        if query.pod is not None:
            raise QueryError("pod: this store holds one pod's samples; filter by pod on the "
                             "fleet's store (--store s3://..., sample_url)")
        conditions, parameters = [], []
        for column, value in (("model", query.model), ("version", query.version)):
            if value is not None:  # one value, or a comma-separated list of them
                choices = value.split(",")
                conditions.append(f"{column} IN ({', '.join('?' * len(choices))})")
                parameters += choices
        for column, value in (("strategy", query.strategy), ("trace_id", query.trace_id),
                              ("status", query.status)):
            if value is not None:
                conditions.append(f"{column} = ?")
                parameters.append(value)
        if query.since is not None:
            conditions.append("time >= ?")
            parameters.append(query.since)
        if query.until is not None:
            conditions.append("time < ?")
            parameters.append(query.until)
        if query.agreement_below is not None:  # no agreement (no reference run): not below
            conditions.append("agreement < ?")
            parameters.append(query.agreement_below)
        if query.class_name is not None:
            conditions.append("id IN (SELECT sample_id FROM sample_classes WHERE class = ?)")
            parameters.append(query.class_name)
        return (f"WHERE {' AND '.join(conditions)}" if conditions else ""), parameters

    def query(self, query: SampleQuery) -> Page:
        """Newest first; `next_cursor` continues after the last sample of this page."""
        where, parameters = self._where(query)
        if query.cursor is not None:
            where += " AND " if where else "WHERE "
            where += "(time < ? OR (time = ? AND id < ?))"
            parameters += [query.cursor.time, query.cursor.time, query.cursor.id]
        rows = self._connection().execute(
            f"SELECT * FROM samples {where} ORDER BY time DESC, id DESC LIMIT ?",
            [*parameters, query.limit + 1]).fetchall()
        samples = [_row_to_sample(row) for row in rows[:query.limit]]
        more = len(rows) > query.limit
        cursor = Cursor(samples[-1].time, samples[-1].id).encode() if more else None
        return Page(samples, cursor)

    def agreement_counts(self, query: SampleQuery, buckets: int = 10) -> tuple[list[int], int]:
        """How many of the samples the query matches (all of them, not one page) have
        an agreement in each of `buckets` equal bins of [0, 1], and how many have none."""
        where, parameters = self._where(query)
        rows = self._connection().execute(
            f"SELECT CASE WHEN agreement IS NULL THEN -1 "
            f"ELSE MIN(CAST(agreement * ? AS INTEGER), ? - 1) END AS bin, COUNT(*) "
            f"FROM samples {where} GROUP BY bin", [buckets, buckets, *parameters]).fetchall()
        counts, missing = [0] * buckets, 0
        for bin_index, count in rows:
            if bin_index < 0:
                missing = count
            else:
                counts[max(0, bin_index)] += count
        return counts, missing

    def iterate(self, query: SampleQuery, most: int) -> Iterator[Sample]:
        """Every sample the query matches, page by page, up to `most`."""
        yielded = 0
        while yielded < most:
            page = self.query(query)
            for sample in page.samples[:most - yielded]:
                yielded += 1
                yield sample
            if page.next_cursor is None:
                return
            query = dataclasses.replace(query, cursor=Cursor.decode(page.next_cursor))

    def read(self, sample: Sample, original: bool = False) -> bytes:
        """A stored file's bytes; the path comes from the index row, never a request."""
        relative = sample.original_file if original else sample.file
        if relative is None:
            raise FileNotFoundError(f"sample {sample.id} has no original image")
        return (self.directory / relative).read_bytes()
