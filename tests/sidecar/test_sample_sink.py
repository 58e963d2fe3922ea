"""The object-store sink against a real S3 API server (moto, on loopback): every spooled
sample uploaded once under its id, retried after an outage, what the spool's bound drops
counted, and the metrics that say so."""

from __future__ import annotations

import dataclasses
import random
import time

import numpy as np
import obstore
import pytest

from lookout.sidecar.config import ConfigError, load_config
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.samples.bucket import BucketOptions, open_bucket
from lookout.sidecar.samples.fleet_store import FleetStore
from lookout.sidecar.samples.layout import parse_store_url
from lookout.sidecar.samples.query import SampleQuery
from lookout.sidecar.samples.sink import SampleSink
from lookout.sidecar.samples.spool import Spool
from lookout.sidecar.samples.store import SampleFile, SampleStore
from lookout.sidecar.settings import SampleSettings, of
from lookout.slo import catalog
from tests.support.moto_s3 import S3Server
from tests.support.processes import wait_until
from tests.support.sample_writer import jpeg, sample

pytestmark = pytest.mark.xdist_group("object_store")


def settings(tmp_path, url: str, endpoint: str, **options) -> SampleSettings:
    cli = {"sample_dir": str(tmp_path / "spool"), "sample_url": url,
           "sample_store_endpoint": endpoint, "sample_upload_interval": "0.1",
           "sample_upload_batch": "4", "sample_pod_name": "pod-a", **options}
    return of(SampleSettings, load_config(cli=cli, env={}))


def fill(store: SampleStore, count: int, seed: int = 1, original_every: int = 0) -> list[str]:
    rng, chooser = np.random.default_rng(seed), random.Random(seed)
    ids = []
    for index in range(count):
        original = SampleFile(jpeg(rng), "jpg") \
            if original_every and index % original_every == 0 else None
        ids.append(store.add(sample(rng, chooser, time.time()), SampleFile(jpeg(rng), "jpg"),
                             original).id)
    return ids


def fleet(url: str, endpoint: str) -> FleetStore:
    parsed = parse_store_url(url)
    return FleetStore(open_bucket(parsed, BucketOptions(endpoint=endpoint)), parsed)


def value(metrics: SidecarMetrics, spec: catalog.MetricSpec, *labels: str) -> float:
    metric = metrics[spec].labels(*labels) if labels else metrics[spec]
    return metric._value.get()


def test_every_spooled_sample_goes_up_once_under_its_id_with_its_pod(tmp_path, s3_server):
    bucket = s3_server.create_bucket("sink-once")
    url = f"s3://{bucket}/fleet"
    config = settings(tmp_path, url, s3_server.endpoint, sample_store_class="STANDARD_IA")
    store = SampleStore(config.sample_dir)
    ids = fill(store, 10, original_every=3)
    metrics = SidecarMetrics("m", "v")
    sink = SampleSink(config, metrics)
    sink.start(store)
    wait_until(lambda: value(metrics, catalog.SAMPLES_UPLOADED) == 10, 30, "the uploads")
    sink.close()
    assert value(metrics, catalog.SAMPLE_SPOOL_BYTES) == 0
    assert value(metrics, catalog.SAMPLE_SPOOL_OLDEST_AGE) == 0

    reader = fleet(url, s3_server.endpoint)
    listed = list(reader.iterate(SampleQuery(), 1000))
    assert sorted(s.id for s in listed) == sorted(ids)
    assert {s.pod for s in listed} == {"pod-a"}
    for found in listed:
        local = store.get(found.id)
        assert (found.model, found.version, found.primary_detections, found.strategy) == \
            (local.model, local.version, local.primary_detections, local.strategy)
        assert found.file.startswith(f"model=m/version={local.version}/date=")
        assert found.file.endswith(f"/{found.id}.jpg")
        assert reader.read(found) == store.read(local)
        if local.original_file:
            assert reader.read(found, original=True) == store.read(local, original=True)
    # a retry after a crash between the upload and its record: same keys, no copies
    keys_before = sorted(m["path"] for chunk in obstore.list(reader._bucket) for m in chunk
                         if not m["path"].endswith(".jsonl"))
    store._connection().execute("DELETE FROM sent")
    again = SampleSink(config, SidecarMetrics("m", "v"))
    again.start(store)
    wait_until(lambda: Spool(store, lambda n: None).backlog().samples == 0, 30, "the retry")
    again.close()
    keys_after = sorted(m["path"] for chunk in obstore.list(reader._bucket) for m in chunk
                        if not m["path"].endswith(".jsonl"))
    assert keys_after == keys_before
    relisted = list(fleet(url, s3_server.endpoint).iterate(SampleQuery(), 1000))
    assert sorted(s.id for s in relisted) == sorted(ids)  # once each


def test_an_outage_loses_nothing_up_to_the_spools_bound_and_counts_the_rest(tmp_path):
    server = S3Server().start()
    try:
        bucket = server.create_bucket("outage")
        url = f"s3://{bucket}/fleet"
        config = settings(tmp_path, url, server.endpoint)
        store = SampleStore(config.sample_dir, max_bytes=200_000)
        metrics = SidecarMetrics("m", "v")
        sink = SampleSink(config, metrics)
        sink.start(store)
        server.stop()
        added: list[str] = []
        rng, chooser = np.random.default_rng(3), random.Random(3)
        for _ in range(60):  # more than the spool holds
            store.enforce_retention(extra_bytes=8000)
            added.append(store.add(sample(rng, chooser, time.time()),
                                   SampleFile(jpeg(rng), "jpg")).id)
            sink.notify()
        wait_until(lambda: value(metrics, catalog.SAMPLE_UPLOAD_FAILURES, "unreachable"), 30,
                   "an upload to fail as unreachable")
        lost = value(metrics, catalog.SAMPLES_DROPPED, "spool_full")
        assert lost > 0 and value(metrics, catalog.SAMPLES_UPLOADED) == 0
        kept = {s.id for s in store.iterate(SampleQuery(), 1000)}
        assert len(kept) + lost == len(added)
        wait_until(lambda: value(metrics, catalog.SAMPLE_SPOOL_BYTES) > 0, 30, "spool bytes")

        server.start()  # the same port, empty: the bucket is made again
        server.create_bucket(bucket)
        wait_until(lambda: value(metrics, catalog.SAMPLES_UPLOADED) == len(kept), 120,
                   "the spool to drain after the outage", interval=0.2)
        sink.close()
        listed = {s.id for s in fleet(url, server.endpoint).iterate(SampleQuery(), 1000)}
        assert listed == kept
    finally:
        server.stop()


def test_an_unreachable_bucket_is_said_at_start_and_samples_wait(tmp_path, caplog):
    config = settings(tmp_path, "s3://nowhere/fleet", "http://127.0.0.1:9")
    store = SampleStore(config.sample_dir)
    fill(store, 2)
    metrics = SidecarMetrics("m", "v")
    sink = SampleSink(config, metrics)
    with caplog.at_level("INFO"):
        sink.start(store)
        wait_until(lambda: "the bucket is unreachable" in caplog.text, 30, "the start-up check")
        wait_until(lambda: value(metrics, catalog.SAMPLE_UPLOAD_FAILURES, "unreachable"), 30,
                   "a failed upload")
    sink.close()
    assert Spool(store, lambda n: None).backlog().samples == 2
    assert "lookout-test" not in caplog.text  # no credential in the log


def test_a_missing_bucket_is_named(tmp_path, s3_server, caplog):
    config = settings(tmp_path, "s3://never-made/fleet", s3_server.endpoint)
    sink = SampleSink(config, SidecarMetrics("m", "v"))
    with caplog.at_level("INFO"):
        sink.start(SampleStore(config.sample_dir))
        wait_until(lambda: "does not exist" in caplog.text, 30, "the start-up check")
    sink.close()


@pytest.mark.parametrize(("options", "named"), [
    ({"sample_url": "s3:/bucket"}, "LOOKOUT_SAMPLE_URL"),
    ({"sample_url": "http://bucket/x"}, "LOOKOUT_SAMPLE_URL"),
    ({"sample_url": "s3://bucket/../up"}, "LOOKOUT_SAMPLE_URL"),
    ({"sample_url": "s3://bucket/x", "sample_store_encryption": "rot13"},
     "LOOKOUT_SAMPLE_STORE_ENCRYPTION"),
    ({"sample_url": "s3://bucket/x", "sample_store_endpoint": "minio:9000"},
     "LOOKOUT_SAMPLE_STORE_ENDPOINT"),
])
def test_start_up_refuses_a_malformed_store_option_naming_it(options, named):
    env = {"LOOKOUT_SAMPLE_DIR": "/tmp/spool",
           **{f"LOOKOUT_{k.upper()}": v for k, v in options.items()}}
    with pytest.raises(ConfigError, match=named):
        load_config(env=env)


def test_a_store_url_without_a_spool_is_refused():
    with pytest.raises(ConfigError, match="sample_url s3://b/p: needs sample_dir"):
        load_config(env={"LOOKOUT_SAMPLE_URL": "s3://b/p"})


def test_keys_are_partitioned_by_model_version_and_hour_and_escape_names():
    from lookout.sidecar.samples.layout import Partition, value_of

    partition = Partition.of("yolo/v8", "2024.1 rc", 1_764_000_000.5)
    assert partition.key == "model=yolo%2Fv8/version=2024.1%20rc/date=2025-11-24/hour=16"
    assert value_of("model=yolo%2Fv8/") == "yolo/v8"
    assert partition.manifest_key("pod-7", "ab" * 16).endswith(
        "/manifests/pod=pod-7/" + "ab" * 16 + ".jsonl")
    assert dataclasses.replace(partition, hour=partition.hour).hour % 3600 == 0
