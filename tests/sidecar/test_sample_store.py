"""The sample store: indexing, queries and pagination, retention, repair, and what a
`kill -9`, a full disk or a read-only volume leave behind."""

from __future__ import annotations

import dataclasses
import io
import random
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from lookout.sidecar.samples.query import QueryError, SampleQuery
from lookout.sidecar.samples.store import (
    INDEX_NAME,
    SampleFile,
    SampleStore,
    StoreError,
    StoreFull,
    valid_id,
)
from tests.support.processes import REPO, read_only, small_filesystem
from tests.support.sample_writer import jpeg, sample

T0 = 1_800_000_000.0


def _add(store: SampleStore, count: int, seed: int = 0, start: float = T0, step: float = 1.0,
         **overrides):
    rng, chooser = np.random.default_rng(seed), random.Random(seed)
    added = []
    for index in range(count):
        template = dataclasses.replace(sample(rng, chooser, start + index * step), **overrides)
        added.append(store.add(template, SampleFile(jpeg(rng), "jpg")))
    return added


def _check_consistent(directory) -> int:
    """Every row names readable files of the recorded size; returns the row count.
    Reads the index directly, without the repair pass, so nothing is papered over."""
    connection = sqlite3.connect(directory / INDEX_NAME)
    rows = connection.execute(
        "SELECT file, file_bytes, original_file, original_bytes FROM samples").fetchall()
    for file, size, original, original_size in rows:
        for name, expected in ((file, size), (original, original_size)):
            if name is None:
                continue
            data = (directory / name).read_bytes()
            assert len(data) == expected, name
            Image.open(io.BytesIO(data)).load()  # decodes: not a torn write
    connection.close()
    return len(rows)


def test_samples_round_trip_with_their_detections(tmp_path) -> None:
    store = SampleStore(tmp_path)
    [added] = _add(store, 1)
    loaded = store.get(added.id)
    assert loaded is not None and loaded.primary_detections == added.primary_detections
    assert loaded.trace_id == added.trace_id and loaded.file.endswith(f"{added.id}.jpg")
    assert store.read(loaded)[:3] == b"\xff\xd8\xff"
    assert "file" not in loaded.to_json() and loaded.to_json()["thumbnail"]["bytes"] > 0


@pytest.mark.parametrize("hostile", ["../index.sqlite3", "..%2F..%2Fetc%2Fpasswd",
                                     "images/20270115/x.jpg", "A" * 32, "", "0" * 31])
def test_ids_that_are_not_ours_find_nothing(tmp_path, hostile: str) -> None:
    store = SampleStore(tmp_path)
    _add(store, 2)
    assert not valid_id(hostile)
    assert store.get(hostile) is None


def test_pages_walk_every_sample_once_newest_first(tmp_path) -> None:
    store = SampleStore(tmp_path)
    # some share a timestamp: the cursor must still neither skip nor repeat them
    added = _add(store, 25, step=0.0) + _add(store, 30, seed=1, start=T0 + 10)
    seen, cursor = [], None
    while True:
        params = {"limit": "7", **({"cursor": cursor} if cursor else {})}
        page = store.query(SampleQuery.from_params(params))
        seen += [s.id for s in page.samples]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(s.id for s in added) and len(seen) == len(set(seen))
    times = [store.get(i).time for i in seen]
    assert times == sorted(times, reverse=True)


def test_filters_select_by_time_version_strategy_trace_and_class(tmp_path) -> None:
    store = SampleStore(tmp_path)
    added = _add(store, 40)

    def ids(**params: str) -> set[str]:
        return {s.id for s in store.query(SampleQuery.from_params(
            {"limit": "1000", **params}, now=T0 + 100)).samples}

    assert ids(version="v2") == {s.id for s in added if s.version == "v2"}
    assert ids(strategy="error") == {s.id for s in added if s.strategy == "error"}
    assert ids(trace_id=added[7].trace_id) == {added[7].id}
    assert ids(**{"class": "person"}) == {s.id for s in added if "person" in s.classes}
    assert ids(since=str(T0 + 10), until=str(T0 + 20)) == {s.id for s in added
                                                           if T0 + 10 <= s.time < T0 + 20}
    assert ids(since="75s") == {s.id for s in added if s.time >= T0 + 25}  # look-back
    assert ids(since="2027-01-15T08:00:10Z") == {s.id for s in added if s.time >= T0 + 10}


@pytest.mark.parametrize(("params", "message"), [
    ({"limit": "0"}, "limit"), ({"limit": "5000"}, "limit"), ({"limit": "\u00b2"}, "limit"),
    ({"since": "last tuesday"},
                                                                "since"),
    ({"cursor": "bm90IGEgY3Vyc29y"}, "cursor"), ({"path": "/etc"}, "unknown parameter 'path'"),
])
def test_bad_query_parameters_are_named(params, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        SampleQuery.from_params(params)


def test_retention_by_age_deletes_rows_and_files(tmp_path) -> None:
    store = SampleStore(tmp_path, retention_seconds=3600)
    added = _add(store, 10, step=600)  # 0 .. 90 minutes
    removed = store.enforce_retention(now=T0 + 5400 + 1)
    kept = {s.id for s in store.query(SampleQuery(limit=100)).samples}
    assert kept == {s.id for s in added if s.time >= T0 + 1801}
    assert removed == 10 - len(kept)
    files = {p.name.split(".")[0] for p in (tmp_path / "images").rglob("*.jpg")}
    assert files == kept


def test_retention_by_bytes_deletes_oldest_first(tmp_path) -> None:
    store = SampleStore(tmp_path)
    added = _add(store, 40)
    budget = store.disk_bytes() - sum(s.bytes for s in added[:10]) // 2
    store.max_bytes = budget
    store.enforce_retention(now=T0 + 100)
    assert store.disk_bytes() <= budget
    kept = [s.id for s in store.query(SampleQuery(limit=100)).samples]
    survivors = [s.id for s in added][-len(kept):]
    assert sorted(kept) == sorted(survivors) and 0 < len(kept) < 40


def test_repair_removes_orphans_temporaries_and_rows_without_files(tmp_path) -> None:
    store = SampleStore(tmp_path)
    added = _add(store, 5)
    (tmp_path / added[0].file).unlink()  # a row without its file
    (tmp_path / added[1].file).write_bytes(b"torn")  # a row whose file is the wrong size
    day = (tmp_path / added[2].file).parent
    (day / "ffffffffffffffffffffffffffffffff.jpg").write_bytes(b"orphan")
    (day / "0123.jpg.tmp").write_bytes(b"half")
    store.close()
    reopened = SampleStore(tmp_path)
    assert {s.id for s in reopened.query(SampleQuery(limit=100)).samples} == {
        s.id for s in added[2:]}
    assert sorted(p.name for p in day.iterdir()) == sorted(
        f"{s.id}.jpg" for s in added[2:])
    assert reopened.image_bytes == sum(s.bytes for s in added[2:])


def test_kill_9_at_random_points_never_leaves_a_row_without_its_file(tmp_path) -> None:
    """A writer adding samples (30% with originals) and deleting the oldest for byte
    retention is SIGKILLed 60 times, after a random number of writes plus a random
    fraction of the next one (a write takes about 2 ms here); after each kill
    every row must name intact files, and the repair pass must leave no stray file."""
    chooser = random.Random(7)
    store_dir = tmp_path / "store"
    total_rows = 0
    for run in range(60):
        writer = subprocess.Popen([sys.executable, "-m", "tests.support.sample_writer",
                                   str(store_dir), str(run)], cwd=REPO,
                                  stdout=subprocess.PIPE, text=True)
        assert writer.stdout is not None
        for _ in range(chooser.randint(1, 25)):
            assert writer.stdout.readline().startswith("added"), "the writer died"
        # where in the next write the kill lands: a random delay is the fault's timing
        # here, not a wait for something to happen
        time.sleep(chooser.uniform(0, 0.004))
        writer.kill()
        writer.wait()
        writer.stdout.close()
        total_rows = _check_consistent(store_dir)
        store = SampleStore(store_dir)  # the repair pass
        indexed = {s.file for s in store.iterate(SampleQuery(limit=1000), 10_000)} | {
            s.original_file for s in store.iterate(SampleQuery(limit=1000), 10_000)
            if s.original_file}
        on_disk = {p.relative_to(store_dir).as_posix()
                   for p in (store_dir / "images").rglob("*") if p.is_file()}
        assert on_disk == indexed
        assert store.count() == _check_consistent(store_dir)
        store.close()
    assert total_rows > 0


def test_a_full_disk_raises_store_full_and_leaves_nothing_half_written(tmp_path) -> None:
    with small_filesystem(tmp_path / "volume", "384k") as volume:
        store = SampleStore(volume)
        added = 0
        with pytest.raises(StoreFull):
            for _ in range(1000):
                _add(store, 1, seed=added, start=T0 + added)
                added += 1
        assert 0 < added < 1000
        assert not list(volume.rglob("*.tmp"))
        assert _check_consistent(volume) == added == store.count()
        # space freed (retention): writing works again
        store.max_bytes = store.disk_bytes() // 2
        store.enforce_retention(now=T0 + added)
        _add(store, 1, seed=999, start=T0 + 5000)
        assert _check_consistent(volume) == store.count()
        store.close()


def test_a_read_only_volume_raises_store_error(tmp_path) -> None:
    with small_filesystem(tmp_path / "volume", "1m") as volume:
        store = SampleStore(volume)
        _add(store, 2)
        with read_only(volume / "images"), pytest.raises(StoreError) as raised:
            _add(store, 1, seed=3, start=T0 + 50)
        assert not isinstance(raised.value, StoreFull)
        assert _check_consistent(volume) == 2
        store.close()
