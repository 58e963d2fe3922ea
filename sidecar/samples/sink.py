"""The object-store sink: the spool's unsent samples, uploaded in batches to the fleet's
bucket by a thread of the lead analysis worker, never by anything a request waits on.

Each flush takes up to `sample_upload_batch` of the oldest unsent samples, puts their
thumbnails (and originals) under their ids' keys, then one manifest per model-hour, and
only then marks them sent (`spool.py`). A failure leaves the batch unsent; it is
retried after a back-off that doubles from 1 s to 60 s, counted by reason and logged
once a minute. Because keys are ids, a batch retried after a crash between its images
and its manifest writes the same images again and a manifest the readers de-duplicate.

At start-up the sink says whether the bucket answers; a bucket that does not is logged
as such and the samples wait in the spool. On shutdown it flushes what it can within
`FLUSH_ON_CLOSE` seconds; the rest waits in the spool for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lookout.sidecar.runtime.backoff import RetryBackoff
from lookout.sidecar.runtime.logs import FailureLog
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.samples import manifest
from lookout.sidecar.samples.bucket import (
    REASONS,
    bucket_options,
    explain,
    failure_reason,
    first_line,
    open_bucket,
)
from lookout.sidecar.samples.layout import Partition, parse_store_url
from lookout.sidecar.samples.spool import LOST, Spool
from lookout.sidecar.samples.store import Sample, SampleStore
from lookout.sidecar.settings import SampleSettings
from lookout.slo import catalog

if TYPE_CHECKING:
    from obstore.store import ObjectStore

log = logging.getLogger(__name__)

FIRST_RETRY, LONGEST_RETRY = 1.0, 60.0
FLUSH_ON_CLOSE = 10.0
REPORT_EVERY = 1.0  # seconds between refreshes of the spool's gauges
CONCURRENCY = 16  # object PUTs in flight per flush


def pod_name(configured: str) -> str:
    return configured or os.environ.get("POD_NAME") or socket.gethostname()


class SampleSink:
    """See the module docstring. `start` after the store is open; `notify` after each
    sample is added; `close` last."""

    name = "sample_sink"

    def __init__(self, settings: SampleSettings, metrics: SidecarMetrics,
                 open_store: Callable[..., ObjectStore] = open_bucket) -> None:
        self._settings = settings
        self._url = parse_store_url(settings.sample_url)
        self._options = bucket_options(settings)
        self._open_store = open_store
        self.pod = pod_name(settings.sample_pod_name)
        self._metrics = metrics
        self._failures = FailureLog(log)
        self._retry = RetryBackoff(FIRST_RETRY, LONGEST_RETRY)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._pending = 0
        self._left_over = False
        self._thread = threading.Thread(target=self._run, name="lookout-sample-sink",
                                        daemon=True)
        self.spool: Spool | None = None
        self._uploaded = metrics[catalog.SAMPLES_UPLOADED]
        self._failed = {reason: metrics[catalog.SAMPLE_UPLOAD_FAILURES].labels(reason)
                        for reason in REASONS}
        self._lost = metrics[catalog.SAMPLES_DROPPED].labels(LOST)
        self._spool_bytes = metrics[catalog.SAMPLE_SPOOL_BYTES]
        self._oldest_age = metrics[catalog.SAMPLE_SPOOL_OLDEST_AGE]

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, store: SampleStore) -> None:
        self.spool = Spool(store, self._lost.inc)
        # what a restarted pod left unsent goes at once; a fresh spool's first samples
        # wait for a whole batch or the interval, like any later ones
        self._left_over = bool(self.spool.unsent(1))
        self._thread.start()

    def notify(self) -> None:
        """A sample was added: flush early once a whole batch waits."""
        self._pending += 1
        if self._pending >= self._settings.sample_upload_batch:
            self._wake.set()

    def close(self, timeout: float = FLUSH_ON_CLOSE) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            bucket = self._open_store(self._url, self._options)
        except Exception as error:  # a configuration the client refuses: say so, spool on
            self._metrics.component_error(self.name)
            log.error("sample_url %s: cannot open the object store (%s); samples stay in "
                      "the spool (sample_dir)", self._url, first_line(error))
            loop.close()
            return
        try:
            loop.run_until_complete(self._probe(bucket))
            deadline: float | None = None
            # the next flush by the interval (a full batch goes sooner)
            due = 0.0 if self._left_over else \
                time.monotonic() + self._settings.sample_upload_interval
            while True:
                if self._stopping.is_set() and deadline is None:
                    deadline = time.monotonic() + FLUSH_ON_CLOSE
                wanted = deadline is not None or time.monotonic() >= due or \
                    self._pending >= self._settings.sample_upload_batch
                if wanted and (deadline is not None or self._retry.allows()):
                    due = time.monotonic() + self._settings.sample_upload_interval
                    while loop.run_until_complete(self._flush(bucket)) and (
                            deadline is None or time.monotonic() < deadline):
                        pass
                self._report()
                if deadline is not None:
                    return
                self._wake.wait(min(REPORT_EVERY, self._settings.sample_upload_interval))
                self._wake.clear()
        except Exception:
            self._metrics.component_error(self.name)
            self._failures.exception("sink", "the sample sink stopped")
        finally:
            loop.close()

    async def _probe(self, bucket: ObjectStore) -> None:
        import obstore

        try:
            await obstore.list_with_delimiter_async(bucket, None)
        except Exception as error:
            reason = failure_reason(error)
            if reason == "denied":
                log.info("sample_url %s: reachable; listing is denied, which the sidecar "
                         "does not need (%s)", self._url, first_line(error))
                return
            self._metrics.component_error(self.name)
            log.error("sample_url %s: %s; samples stay in the spool (sample_dir) and are "
                      "retried", self._url, explain(error))
        else:
            log.info("sample_url %s: reachable; uploading as pod %s", self._url, self.pod)

    async def _flush(self, bucket: ObjectStore) -> bool:
        """Upload one batch; True when a full batch went (more may wait)."""
        assert self.spool is not None
        batch = self.spool.unsent(self._settings.sample_upload_batch)
        self._pending = 0
        if not batch:
            return False
        try:
            sent = await self._upload(bucket, batch)
        except Exception as error:
            reason = failure_reason(error)
            self._failed[reason].inc()
            self._metrics.component_error(self.name)
            delay = self._retry.failed()
            self._failures.warning(f"upload-{reason}", "sample_url %s: uploading %d samples "
                                   "failed (%s); retrying in %g s", self._url, len(batch),
                                   first_line(error), delay)
            return False
        if self._retry.failing:
            log.info("sample_url %s: uploading again", self._url)
        self._retry.succeeded()
        self._uploaded.inc(self.spool.mark_sent(sent))
        return len(batch) == self._settings.sample_upload_batch

    async def _upload(self, bucket: ObjectStore, batch: list[Sample]) -> list[str]:
        """Images first, then the manifests naming them; the ids that went."""
        import obstore

        assert self.spool is not None
        store = self.spool.store
        limit = asyncio.Semaphore(CONCURRENCY)

        async def put(key: str, data: bytes, attributes: dict[str, Any]) -> None:
            async with limit:
                await obstore.put_async(bucket, key, data, attributes=attributes)

        puts, partitions = [], defaultdict(list)
        storage = {"Storage-Class": self._options.storage_class} \
            if self._options.storage_class else {}
        for sample in batch:
            partition = Partition.of(sample.model, sample.version, sample.time)
            try:
                thumbnail = store.read(sample)
                original = store.read(sample, original=True) if sample.original_file else None
            except FileNotFoundError:
                continue  # retention deleted it meanwhile (counted as lost then)
            key = partition.image_key(sample.id, _extension(sample.file))
            puts.append(put(key, thumbnail, {"Content-Type": sample.media_type, **storage}))
            original_key = None
            if original is not None and sample.original_file:
                original_key = partition.image_key(sample.id, _extension(sample.original_file),
                                                   original=True)
                puts.append(put(original_key, original, {
                    "Content-Type": "application/octet-stream", **storage}))
            partitions[partition].append(_as_uploaded(sample, key, original_key, self.pod))
        await asyncio.gather(*puts)
        await asyncio.gather(*(
            put(partition.manifest_key(self.pod, samples[0].id), manifest.encode(samples),
                {"Content-Type": "application/x-ndjson"})
            for partition, samples in partitions.items()))
        return [sample.id for samples in partitions.values() for sample in samples]

    def _report(self) -> None:
        if self.spool is None:
            return
        with contextlib.suppress(Exception):  # a busy index: next time
            backlog = self.spool.backlog()
            self._spool_bytes.set(backlog.bytes)
            self._oldest_age.set(max(0.0, time.time() - backlog.oldest)
                                 if backlog.oldest is not None else 0.0)


def _extension(file: str) -> str:
    return file.rsplit(".", 1)[-1]


def _as_uploaded(sample: Sample, key: str, original_key: str | None, pod: str) -> Sample:
    import dataclasses

    return dataclasses.replace(sample, file=key, original_file=original_key, pod=pod)
