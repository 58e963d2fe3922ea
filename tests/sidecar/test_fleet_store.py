"""Reading the fleet's bucket (moto on loopback): every pod's samples with the local
store's filters plus `pod`, stable pages, a lookup by id, a model-hour that costs its
own manifests whatever else the bucket holds, and `lookout samples list|show|export|
prune --store s3://...` over it."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import zipfile
from dataclasses import replace

import numpy as np
import pytest

from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.samples.bucket import BucketOptions, open_bucket
from lookout.sidecar.samples.fleet_store import FleetStore
from lookout.sidecar.samples.layout import HOUR, parse_store_url
from lookout.sidecar.samples.query import Cursor, SampleQuery
from lookout.sidecar.samples.sink import SampleSink
from lookout.sidecar.samples.spool import Spool
from lookout.sidecar.samples.store import SampleFile, SampleStore
from lookout.sidecar.settings import SampleSettings, of
from tests.support.processes import REPO, wait_until
from tests.support.sample_writer import jpeg, sample

pytestmark = pytest.mark.xdist_group("object_store")
NOW = time.time()
HOURS_AGO = (0, 1, 5)  # each pod's samples: these many hours back


def upload(directory, url: str, endpoint: str, pod: str, samples) -> None:
    """Samples through a real spool and sink, as a sidecar uploads them."""
    from lookout.sidecar.config import load_config

    config = of(SampleSettings, load_config(cli={
        "sample_dir": str(directory), "sample_url": url, "sample_store_endpoint": endpoint,
        "sample_upload_interval": "0.1", "sample_upload_batch": "16",
        "sample_pod_name": pod}, env={}))
    store = SampleStore(directory)
    rng = np.random.default_rng(len(pod))
    for item in samples:
        store.add(item, SampleFile(jpeg(rng), "jpg"))
    sink = SampleSink(config, SidecarMetrics("m", "v"))
    sink.start(store)
    wait_until(lambda: Spool(store, lambda n: None).backlog().samples == 0, 60, f"{pod}'s uploads")
    sink.close()


@pytest.fixture(scope="module")
def bucket(s3_server, tmp_path_factory):
    """pod-a runs v1 of model m and v1 of model other, pod-b v2 of m: 8 samples an hour
    each at three hours."""
    name = s3_server.create_bucket("fleet-read")
    url = f"s3://{name}/team"
    made = {}
    for pod, entries in (("pod-a", (("m", "v1"), ("other", "v1"))), ("pod-b", (("m", "v2"),))):
        rng, chooser = np.random.default_rng(11), random.Random(pod)
        batch = []
        for model, version in entries:
            for hours in HOURS_AGO:
                for index in range(8):
                    moment = NOW - hours * HOUR - index
                    item = replace(sample(rng, chooser, moment), model=model, version=version,
                                   agreement=index / 8)
                    batch.append(item)
        upload(tmp_path_factory.mktemp(pod), url, s3_server.endpoint, pod, batch)
        made.update({item.id: (pod, item) for item in batch})
    return {"url": url, "endpoint": s3_server.endpoint, "made": made, "env": s3_server.env()}


def reader(bucket) -> FleetStore:
    parsed = parse_store_url(bucket["url"])
    return FleetStore(open_bucket(parsed, BucketOptions(endpoint=bucket["endpoint"])), parsed)


def every(store: FleetStore, query: SampleQuery) -> list:
    found, cursor = [], None
    while True:
        page = store.query(replace(query, limit=7, cursor=cursor))
        found += page.samples
        if page.next_cursor is None:
            return found
        cursor = Cursor.decode(page.next_cursor)


def test_pages_hold_every_pods_samples_once_newest_first(bucket) -> None:
    found = every(reader(bucket), SampleQuery())
    assert sorted(s.id for s in found) == sorted(bucket["made"])
    assert [s.time for s in found] == sorted((s.time for s in found), reverse=True)
    for item in found:
        pod, made = bucket["made"][item.id]
        assert (item.pod, item.model, item.version, item.primary_detections) == \
            (pod, made.model, made.version, made.primary_detections)


@pytest.mark.parametrize("params", [
    {"pod": "pod-b"}, {"version": "v1"}, {"model": "m", "version": "v1,v2"},
    {"class": "person"}, {"strategy": "error"}, {"agreement_below": "0.3"},
    {"since": "90m"}, {"since": str(NOW - 2 * HOUR), "until": str(NOW - 0.5 * HOUR)},
])
def test_the_local_stores_filters_plus_pod(bucket, params) -> None:
    query = SampleQuery.from_params(params, now=NOW)
    found = {s.id for s in every(reader(bucket), query)}
    expected = set()
    for sample_id, (pod, made) in bucket["made"].items():
        as_read = replace(made, pod=pod)
        from lookout.sidecar.samples.fleet_store import matches

        if matches(as_read, query):
            expected.add(sample_id)
    assert found == expected and found


def test_a_model_hour_costs_its_own_manifests_not_the_buckets_size(bucket) -> None:
    hour = int((NOW - 5 * HOUR) // HOUR) * HOUR
    query = SampleQuery(model="m", version="v1", since=hour, until=hour + HOUR - 1, limit=100)
    store = reader(bucket)
    page = store.query(query)
    assert len(page.samples) == 8 and store.requests == 2  # one listing, one manifest
    store = reader(bucket)
    store.query(replace(query, version=None))  # + the listing of m's versions, + v2's hour
    assert store.requests == 5


def test_a_sample_is_found_by_id_and_its_image_read(bucket) -> None:
    store = reader(bucket)
    sample_id, (pod, made) = next(iter(bucket["made"].items()))
    found = store.get(sample_id)
    assert found is not None and found.pod == pod and found.version == made.version
    assert store.read(found)[:2] == b"\xff\xd8"
    assert store.get("0" * 32) is None and store.get("../x") is None


def lookout(bucket, *args: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "lookout", "samples", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, **bucket["env"]}, check=False)


def test_the_cli_lists_shows_and_exports_the_fleet(bucket, tmp_path) -> None:
    listed = lookout(bucket, "list", "--store", bucket["url"], "--pod", "pod-b", "--json",
                     "--limit", "1000")
    assert listed.returncode == 0, listed.stderr
    samples = json.loads(listed.stdout)["samples"]
    assert {s["pod"] for s in samples} == {"pod-b"} and len(samples) == 24
    shown = lookout(bucket, "show", "--store", bucket["url"], samples[0]["id"], "--json",
                    "--image", str(tmp_path / "frame.jpg"), "--boxes", "primary")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["version"] == "v2"
    assert (tmp_path / "frame.jpg").read_bytes()[:2] == b"\xff\xd8"
    exported = lookout(bucket, "export", "--store", bucket["url"], "--version", "v1",
                       "--format", "yolo", "-o", str(tmp_path / "v1.zip"))
    assert exported.returncode == 0, exported.stderr
    with zipfile.ZipFile(tmp_path / "v1.zip") as archive:
        assert len([n for n in archive.namelist() if n.startswith("labels/")]) == 48


def test_the_cli_names_a_bad_url_and_an_unreachable_store(bucket) -> None:
    bad = lookout(bucket, "list", "--store", "s3:/nope")
    assert bad.returncode == 1 and "--store s3:/nope" in bad.stderr
    down = lookout(bucket, "list", "--store", "s3://x/y")
    assert down.returncode == 1 and "s3://x/y" in down.stderr and "Traceback" not in down.stderr


def test_prune_deletes_the_hours_that_ended_before_the_cut_off(s3_server, tmp_path) -> None:
    name = s3_server.create_bucket("fleet-prune")
    url = f"s3://{name}/team"
    rng, chooser = np.random.default_rng(5), random.Random(5)
    old = [sample(rng, chooser, NOW - 50 * HOUR - i) for i in range(3)]
    new = [sample(rng, chooser, NOW - i) for i in range(3)]
    upload(tmp_path / "spool", url, s3_server.endpoint, "pod-p", old + new)
    store_of = {"url": url, "endpoint": s3_server.endpoint, "env": s3_server.env()}
    dry = lookout(store_of, "prune", "--store", url, "--older-than", "2d", "--dry-run")
    assert dry.returncode == 0 and "would delete" in dry.stdout, dry.stderr
    assert len(every(reader(store_of), SampleQuery())) == 6
    pruned = lookout(store_of, "prune", "--store", url, "--older-than", "2d")
    assert pruned.returncode == 0, pruned.stderr
    assert {s.id for s in every(reader(store_of), SampleQuery())} == {s.id for s in new}


def test_the_fleet_gallery_says_when_the_bucket_fails(s3_server) -> None:
    """A bucket that does not exist: the page says so (503), not a stack trace."""
    import http.cookiejar
    import os
    import urllib.error
    import urllib.request

    process = subprocess.Popen(
        [sys.executable, "-m", "lookout", "samples", "serve", "--store", "s3://never-made/x",
         "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, cwd=REPO, env={**os.environ, **s3_server.env()})
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        link = lines[1].split("with: ", 1)[1].strip()
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with pytest.raises(urllib.error.HTTPError) as failed:
            opener.open(link, timeout=60)  # signs in, then the gallery's first page
        assert failed.value.code == 503
        page = failed.value.read().decode()
        assert "does not exist" in page and "Traceback" not in page
    finally:
        process.terminate()
        process.wait(timeout=30)
