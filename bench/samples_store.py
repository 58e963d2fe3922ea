"""The fleet's sample store, measured against moto's S3 server on loopback:

1. upload throughput (samples/s) of the sink draining a spool, beside the local store's
   own write rate (the spool: files fsynced, SQLite synchronous=FULL) in the same run;
2. a flush's manifest as JSON Lines or Parquet: bytes, time to write, time to read back
   and filter;
3. the fleet query of one model-hour as the store grows from 1,000 to 100,000 samples
   over 50 pods (more hours of history), and as the query asks for more hours: its
   time and the requests it makes;
4. with `--libraries` (run with a Python that has s3fs too): obstore and s3fs putting
   the same objects, and their import times.

    .venv/bin/python bench/samples_store.py [--quick]

moto_server comes from .venv-moto (make test installs it). Everything is on 127.0.0.1
with dummy keys; results print as a table, and docs/SAMPLES.md records them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
       "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
PODS = 50
PER_POD_HOUR = 20  # samples each pod uploads an hour, in one manifest
HOUR = 3600


class Moto:
    """moto_server on a free loopback port."""

    def __init__(self) -> None:
        import socket

        program = REPO / ".venv-moto" / "bin" / "moto_server"
        if not program.exists():
            sys.exit("bench: moto_server missing; `make test-servers` installs it")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.process = subprocess.Popen([str(program), "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        sys.exit("bench: moto_server did not start")

    def bucket(self, name: str) -> str:
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/{name}", method="PUT"),
                               timeout=10).close()
        return name

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def thumbnail(rng) -> bytes:
    """A 320x240 JPEG at quality 80, as a stored thumbnail is (about 15-25 KB)."""
    import numpy as np
    from PIL import Image

    base = np.linspace(0, 255, 320, dtype=np.float32)[None, :, None]
    pixels = np.clip(base + rng.normal(0, 24, (240, 320, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def samples(count: int, start: float, pod: str = "", model: str = "detector",
            version: str = "v1"):
    import numpy as np

    from tests.support.sample_writer import sample

    rng, chooser = np.random.default_rng(count), random.Random(count)
    for index in range(count):
        yield dataclasses.replace(sample(rng, chooser, start + index * 0.01), model=model,
                                  version=version, pod=pod or None)


def upload_throughput(moto: Moto, count: int) -> list[tuple[str, str]]:
    import numpy as np

    from lookout.sidecar.config import load_config
    from lookout.sidecar.runtime.metrics import SidecarMetrics
    from lookout.sidecar.samples.sink import SampleSink
    from lookout.sidecar.samples.spool import Spool
    from lookout.sidecar.samples.store import SampleFile, SampleStore
    from lookout.sidecar.settings import SampleSettings, of

    rng = np.random.default_rng(1)
    images = [thumbnail(rng) for _ in range(16)]
    directory = Path(tempfile.mkdtemp(prefix="lookout-bench-"))
    try:
        store = SampleStore(directory / "spool")
        began = time.perf_counter()
        for index, item in enumerate(samples(count, time.time())):
            store.add(item, SampleFile(images[index % len(images)], "jpg"))
        local = count / (time.perf_counter() - began)
        config = of(SampleSettings, load_config(cli={
            "sample_dir": str(directory / "spool"),
            "sample_url": f"s3://{moto.bucket('throughput')}/bench",
            "sample_store_endpoint": moto.endpoint, "sample_upload_batch": "64",
            "sample_upload_interval": "0.05", "sample_pod_name": "bench"}, env={}))
        sink = SampleSink(config, SidecarMetrics("m", "v"))
        spool = Spool(store, lambda n: None)
        began = time.perf_counter()
        sink.start(store)
        while spool.backlog().samples:
            time.sleep(0.01)
        uploaded = count / (time.perf_counter() - began)
        sink.close()
        size = sum(len(i) for i in images) // len(images)
        return [("local store writes (fsync, SQLite FULL)", f"{local:,.0f} samples/s"),
                ("sink uploads to S3 (moto), batch 64", f"{uploaded:,.0f} samples/s"),
                ("thumbnail size", f"{size / 1000:.1f} KB")]
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def manifest_formats(rows: int, rounds: int) -> list[tuple[str, str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lookout.sidecar.samples import manifest

    batch = list(samples(rows, time.time(), pod="pod-1"))
    began = time.perf_counter()
    for _ in range(rounds):
        jsonl = manifest.encode(batch)
    jsonl_write = (time.perf_counter() - began) / rounds
    began = time.perf_counter()
    for _ in range(rounds):
        found = [s for s in manifest.decode(jsonl)[0] if s.strategy == "error"]
    jsonl_read = (time.perf_counter() - began) / rounds

    def table():
        columns = {name: [getattr(s, name) for s in batch] for name in (
            "id", "time", "trace_id", "model", "version", "strategy", "route", "status",
            "latency", "width", "height", "thumbnail_width", "thumbnail_height",
            "media_type", "file", "file_bytes", "agreement", "pod")}
        columns["classes"] = [list(s.classes) for s in batch]
        columns["primary_detections"] = [repr(s.primary_detections) for s in batch]
        return pa.table(columns)

    began = time.perf_counter()
    for _ in range(rounds):
        sink = io.BytesIO()
        pq.write_table(table(), sink)
    parquet = sink.getvalue()
    parquet_write = (time.perf_counter() - began) / rounds
    began = time.perf_counter()
    for _ in range(rounds):
        read = pq.read_table(io.BytesIO(parquet))
        chosen = [i for i, v in enumerate(read.column("strategy").to_pylist()) if v == "error"]
    parquet_read = (time.perf_counter() - began) / rounds
    assert len(chosen) == len(found)
    return [(f"JSON Lines, {rows} samples", f"{len(jsonl) / 1000:.1f} KB, write "
             f"{jsonl_write * 1e3:.2f} ms, read+filter {jsonl_read * 1e3:.2f} ms"),
            (f"Parquet, {rows} samples", f"{len(parquet) / 1000:.1f} KB, write "
             f"{parquet_write * 1e3:.2f} ms, read+filter {parquet_read * 1e3:.2f} ms")]


def fill_fleet(moto: Moto, name: str, first: int, last: int, now: float) -> None:
    """50 pods' manifests for the hours `first` to `last` (exclusive) before now's, and
    no images: a query never lists them."""
    import obstore

    from lookout.sidecar.samples import manifest
    from lookout.sidecar.samples.bucket import BucketOptions, open_bucket
    from lookout.sidecar.samples.layout import Partition, parse_store_url

    bucket = open_bucket(parse_store_url(f"s3://{name}/fleet"),
                         BucketOptions(endpoint=moto.endpoint))
    puts = []
    for hour in range(first, last):
        start = (int(now // HOUR) - hour) * HOUR
        for pod in range(PODS):
            batch = list(samples(PER_POD_HOUR, start + pod, pod=f"pod-{pod}"))
            partition = Partition.of("detector", "v1", start)
            puts.append((partition.manifest_key(f"pod-{pod}", batch[0].id),
                         manifest.encode(batch)))

    async def put_all() -> None:
        limit = asyncio.Semaphore(32)

        async def put(key: str, data: bytes) -> None:
            async with limit:
                await obstore.put_async(bucket, key, data)

        await asyncio.gather(*(put(key, data) for key, data in puts))

    asyncio.run(put_all())


def fleet_query(moto: Moto, sizes: list[int]) -> list[tuple[str, str]]:
    from lookout.sidecar.samples.bucket import BucketOptions, open_bucket
    from lookout.sidecar.samples.fleet_store import FleetStore
    from lookout.sidecar.samples.layout import parse_store_url
    from lookout.sidecar.samples.query import SampleQuery

    now = time.time()
    hour = int(now // HOUR) * HOUR  # the newest hour of the history
    name, made, results = moto.bucket("fleet-query"), 0, []
    for size in sizes:
        hours = size // (PODS * PER_POD_HOUR)
        fill_fleet(moto, name, made, hours, now)  # older hours added; the asked-for stays
        made = hours
        for asked in (1, 4):
            url = parse_store_url(f"s3://{name}/fleet")
            store = FleetStore(open_bucket(url, BucketOptions(endpoint=moto.endpoint)), url)
            query = SampleQuery(model="detector", version="v1", since=hour - (asked - 1) * HOUR,
                                until=hour + HOUR - 1, limit=1000)
            began = time.perf_counter()
            found = list(store.iterate(query, 100_000))
            took = time.perf_counter() - began
            if asked <= hours:
                results.append((f"{size:>7,} samples, {asked} model-hour(s)",
                                f"{took * 1000:.0f} ms, {store.requests} requests, "
                                f"{len(found)} samples"))
    return results


def libraries(moto: Moto, count: int) -> list[tuple[str, str]]:
    import numpy as np

    rng = np.random.default_rng(2)
    images = [thumbnail(rng) for _ in range(16)]
    results = []
    for module in ("obstore", "s3fs"):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
        results.append((f"import {module} (a fresh interpreter)",
                        f"{(time.perf_counter() - began) * 1000:.0f} ms"))
    import obstore
    from obstore.store import S3Store

    name = moto.bucket("libraries")
    store = S3Store(name, endpoint=moto.endpoint, client_options={"allow_http": True})

    async def with_obstore() -> None:
        limit = asyncio.Semaphore(16)

        async def put(index: int) -> None:
            async with limit:
                await obstore.put_async(store, f"o/{index}.jpg", images[index % 16])

        await asyncio.gather(*(put(i) for i in range(count)))

    began, cpu = time.perf_counter(), time.process_time()
    asyncio.run(with_obstore())
    results.append(("obstore put_async, 16 in flight", _rate(count, began, cpu)))
    import s3fs

    fs = s3fs.S3FileSystem(key="bench", secret="bench", endpoint_url=moto.endpoint)
    began, cpu = time.perf_counter(), time.process_time()
    fs.pipe({f"{name}/s/{i}.jpg": images[i % 16] for i in range(count)}, batch_size=16)
    results.append(("s3fs pipe, batch 16", _rate(count, began, cpu)))
    return results


def _rate(count: int, began: float, cpu: float) -> str:
    """Objects a second (moto bounds it), and this process's CPU per object (what the
    sidecar's analysis worker pays: signing, hashing, HTTP)."""
    rate = count / (time.perf_counter() - began)
    return f"{rate:,.0f} objects/s, {(time.process_time() - cpu) / count * 1000:.2f} ms CPU each"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--libraries", action="store_true",
                        help="only obstore against s3fs (needs s3fs importable)")
    args = parser.parse_args()
    os.environ.update(ENV)
    moto = Moto()
    try:
        if args.libraries:
            rows = libraries(moto, 200 if args.quick else 1000)
        else:
            rows = upload_throughput(moto, 100 if args.quick else 500)
            rows += manifest_formats(64, 50 if args.quick else 300)
            rows += fleet_query(moto, [1_000, 10_000] if args.quick
                                else [1_000, 10_000, 100_000])
    finally:
        moto.stop()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
