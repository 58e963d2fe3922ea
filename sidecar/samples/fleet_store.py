"""The fleet's samples, read from the bucket the sidecars upload to: every pod's, alive
or gone, with the same read interface as the local store (`query`, `get`,
`agreement_counts`, `iterate`, `read`), so the gallery, the API's pages and `lookout
samples` serve either.

A query costs what it asks for: the models and versions it names (or one listing to
find them), the hours between `since` and `until` (or one listing per day to find
them), and one listing of each such hour's manifests; manifests are then read newest
hour first until the page is full. Nothing lists the images. Manifests never change
once written, so each is fetched once per process. A sample in two manifests (a batch
retried after a crash) is shown once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from lookout.sidecar.samples import manifest
from lookout.sidecar.samples.layout import (
    HOUR,
    MANIFEST_SUFFIX,
    Partition,
    StoreUrl,
    day_hours,
    hours_between,
    id_time,
    model_key,
    value_of,
    version_key,
)
from lookout.sidecar.samples.query import Cursor, SampleQuery
from lookout.sidecar.samples.store import Page, Sample, valid_id

if TYPE_CHECKING:
    from obstore.store import ObjectStore

    from lookout.sidecar.settings import SampleSettings


def open_fleet(settings: SampleSettings) -> FleetStore:
    """The fleet's store a sidecar uploads to, for its own gallery (`sample_gallery:
    fleet`): the same URL and options as its sink."""
    from lookout.sidecar.samples.bucket import bucket_options, open_bucket
    from lookout.sidecar.samples.layout import parse_store_url

    url = parse_store_url(settings.sample_url)
    return FleetStore(open_bucket(url, bucket_options(settings)), url)


def matches(sample: Sample, query: SampleQuery) -> bool:
    """The local store's WHERE clause (store.py), for samples read from manifests."""
    for value, wanted in ((sample.model, query.model), (sample.version, query.version)):
        if wanted is not None and value not in wanted.split(","):
            return False
    for value, wanted in ((sample.strategy, query.strategy), (sample.trace_id, query.trace_id),
                          (sample.status, query.status), (sample.pod, query.pod)):
        if wanted is not None and value != wanted:
            return False
    if query.since is not None and sample.time < query.since:
        return False
    if query.until is not None and sample.time >= query.until:
        return False
    if query.agreement_below is not None and (
            sample.agreement is None or sample.agreement >= query.agreement_below):
        return False
    return query.class_name is None or query.class_name in sample.classes


def _newest_first(sample: Sample) -> tuple[float, str]:
    return (-sample.time, "".join(chr(255 - ord(c)) for c in sample.id))


class FleetStore:
    """See the module docstring. Thread-safe; `requests` counts what was asked of the
    bucket (listings and reads), for the bench and the tests."""

    def __init__(self, bucket: ObjectStore, url: StoreUrl) -> None:
        self._bucket = bucket
        self.url = url
        self.directory = str(url)  # what messages call it, as the local store's
        self.requests = 0
        self.unreadable_lines = 0
        self._manifests: dict[str, list[Sample]] = {}
        self._lock = threading.Lock()

    # -- the bucket -----------------------------------------------------------------------

    def _prefixes(self, prefix: str | None) -> list[str]:
        import obstore

        self.requests += 1
        return list(obstore.list_with_delimiter(self._bucket, prefix)["common_prefixes"])

    def _keys(self, prefix: str) -> list[str]:
        import obstore

        keys = []
        for chunk in obstore.list(self._bucket, prefix):
            self.requests += 1
            keys += [meta["path"] for meta in chunk]
        return keys

    def _load(self, keys: list[str]) -> None:
        """Fetch the manifests not yet cached, concurrently."""
        import obstore

        missing = [key for key in keys if key not in self._manifests]
        if not missing:
            return

        async def fetch(key: str) -> tuple[str, bytes]:
            result = await obstore.get_async(self._bucket, key)
            return key, bytes(await result.bytes_async())

        async def fetch_all() -> list[tuple[str, bytes]]:
            return await asyncio.gather(*(fetch(key) for key in missing))

        self.requests += len(missing)
        for key, data in asyncio.run(fetch_all()):
            samples, bad = manifest.decode(data)
            with self._lock:
                self._manifests[key] = samples
                self.unreadable_lines += bad

    def read(self, sample: Sample, original: bool = False) -> bytes:
        """A sample's thumbnail (or kept original) from its object key."""
        import obstore

        key = sample.original_file if original else sample.file
        if key is None:
            raise FileNotFoundError(f"sample {sample.id} has no original image")
        self.requests += 1
        return bytes(obstore.get(self._bucket, key).bytes())

    def read_object(self, key: str) -> bytes:
        """Any object under the URL's prefix (audit records); FileNotFoundError if none."""
        import obstore
        from obstore.exceptions import NotFoundError

        self.requests += 1
        try:
            return bytes(obstore.get(self._bucket, key).bytes())
        except NotFoundError:
            raise FileNotFoundError(key) from None

    def write_object(self, key: str, data: bytes) -> None:
        """An object under the URL's prefix, whole (audit records)."""
        import obstore

        self.requests += 1
        obstore.put(self._bucket, key, data)

    def object_keys(self, prefix: str) -> list[str]:
        return self._keys(prefix)

    # -- partitions -----------------------------------------------------------------------

    def _models(self, query: SampleQuery) -> list[str]:
        if query.model is not None:
            return query.model.split(",")
        return [value_of(p) for p in self._prefixes(None) if p.startswith("model=")]

    def _versions(self, model: str, query: SampleQuery) -> list[str]:
        if query.version is not None:
            return query.version.split(",")
        return [value_of(p) for p in self._prefixes(model_key(model))]

    def _hours(self, model: str, version: str, query: SampleQuery) -> list[int]:
        if query.since is not None:
            return hours_between(query.since, query.until if query.until is not None
                                 else time.time())
        hours: list[int] = []
        for day in self._prefixes(version_key(model, version)):
            hours += day_hours(day, self._prefixes(day))
        if query.until is not None:
            hours = [hour for hour in hours if hour < query.until]
        return hours

    def partitions(self, query: SampleQuery) -> list[Partition]:
        """The model-version-hours the query can match, newest hour first."""
        found = [Partition(hour, model, version) for model in self._models(query)
                 for version in self._versions(model, query)
                 for hour in self._hours(model, version, query)]
        return sorted(found, key=lambda p: (-p.hour, p.model, p.version))

    def _hour_samples(self, partitions: list[Partition]) -> list[Sample]:
        keys = [key for partition in partitions for key in self._keys(partition.manifests())
                if key.endswith(MANIFEST_SUFFIX)]
        self._load(keys)
        unique: dict[str, Sample] = {}
        for key in keys:
            for sample in self._manifests[key]:
                unique.setdefault(sample.id, sample)
        return list(unique.values())

    def matching(self, query: SampleQuery) -> Iterator[Sample]:
        """Every sample the query matches, newest first, reading an hour at a time."""
        by_hour: dict[int, list[Partition]] = {}
        for partition in self.partitions(query):
            by_hour.setdefault(partition.hour, []).append(partition)
        cursor = query.cursor
        for hour, partitions in by_hour.items():
            if cursor is not None and hour > cursor.time:
                continue
            chosen = [s for s in self._hour_samples(partitions) if matches(s, query) and (
                cursor is None or (s.time, s.id) < (cursor.time, cursor.id))]
            yield from sorted(chosen, key=_newest_first)

    # -- the local store's read interface -------------------------------------------------

    def query(self, query: SampleQuery) -> Page:
        samples = []
        for sample in self.matching(query):
            samples.append(sample)
            if len(samples) > query.limit:
                break
        page = samples[:query.limit]
        more = len(samples) > query.limit
        return Page(page, Cursor(page[-1].time, page[-1].id).encode() if more else None)

    def iterate(self, query: SampleQuery, most: int) -> Iterator[Sample]:
        for number, sample in enumerate(self.matching(replace(query, cursor=None))):
            if number >= most:
                return
            yield sample

    def agreement_counts(self, query: SampleQuery, buckets: int = 10) -> tuple[list[int], int]:
        counts, missing = [0] * buckets, 0
        for sample in self.matching(replace(query, cursor=None)):
            if sample.agreement is None:
                missing += 1
            else:
                counts[min(max(int(sample.agreement * buckets), 0), buckets - 1)] += 1
        return counts, missing

    def get(self, sample_id: str) -> Sample | None:
        """By id: its time says its hour, so one hour of each model and version is read."""
        if not valid_id(sample_id):
            return None
        moment = id_time(sample_id)
        query = SampleQuery(since=moment, until=moment + 1)
        hour = int(moment // HOUR) * HOUR
        for sample in self._hour_samples([p for p in self.partitions(query) if p.hour == hour]):
            if sample.id == sample_id:
                return sample
        return None

    def delete(self, partition: Partition) -> int:
        """Delete a partition's every object (images and manifests): `lookout samples
        prune`. Returns how many objects went."""
        import obstore

        keys = self._keys(f"{partition.key}/")
        for start in range(0, len(keys), 1000):  # S3's DeleteObjects takes 1,000 at most
            self.requests += 1
            obstore.delete(self._bucket, keys[start:start + 1000])
        return len(keys)

    def close(self) -> None:
        """Nothing to close: the interface's, for callers that close a local store."""
