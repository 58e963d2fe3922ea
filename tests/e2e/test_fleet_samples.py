"""Samples that outlive the pod, end to end: real sidecars (Envoy, the tap, the analysis
workers) upload to a real S3 API server (moto, loopback); one is SIGKILLed with samples
still in its spool and restarted on the same volume (a container restart keeps the
emptyDir), the other is deleted (SIGTERM); `lookout samples list --store s3://...` then
returns every sample either wrote, once each, and `lookout samples serve` shows both
pods' samples and compares their versions in Debian's Chromium. And the bucket down for
a while: nothing lost up to the spool's bound, the rest counted, requests unchanged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from lookout.lookout_demo.models import model_path
from lookout.lookout_demo.scenes import generate_scene
from lookout.sidecar.samples.query import SampleQuery
from lookout.sidecar.samples.store import SampleStore
from lookout.slo import catalog
from tests.support.browser import chromium, screenshot
from tests.support.moto_s3 import S3Server
from tests.support.processes import REPO, SidecarProcess, request, start_sidecar, wait_until
from tests.support.shadow_stack import start_demo_upstream

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("object_store")]
EVERY_FRAME = "random share=1 per_minute=10000"
BATCH = 4  # a flush goes when 4 samples wait; the interval is long, so 2 of 6 wait on


@pytest.fixture(scope="module")
def demo_upstream():
    upstream, port = start_demo_upstream()
    yield port
    upstream.terminate()


def sidecar(upstream: int, spool: Path, url: str, pod: str, version: str,
            *extra: str, server: S3Server) -> SidecarProcess:
    """A sidecar uploading to `server` alone: its endpoint, dummy keys, no metadata."""
    options = ("--model-path", str(model_path("primary")), "--model-version", version,
               "--sample-dir", str(spool), "--sample-strategies", EVERY_FRAME,
               "--sample-url", url, "--sample-pod-name", pod,
               "--sample-upload-batch", str(BATCH), "--sample-upload-interval", "600")
    return start_sidecar(f"http://127.0.0.1:{upstream}", *options, *extra, env=server.env())


def send(upstream: int, side: SidecarProcess, seed: int) -> None:
    """A frame through the sidecar: its answer is the upstream's, byte for byte."""
    body = generate_scene(seed).jpeg()
    headers = {"Content-Type": "image/jpeg"}
    direct = request(upstream, "POST", "/predict", body=body, headers=headers)
    proxied = request(side.port, "POST", "/predict", body=body, headers=headers)
    assert (proxied.status, proxied.body) == (direct.status, direct.body) == \
        (200, direct.body)


def metric(side: SidecarProcess, spec: catalog.MetricSpec, **labels: str) -> float:
    return side.metric(spec.sample_name, **labels)


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (Envoy, the analysis workers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def spooled(spool: Path) -> dict[str, object]:
    store = SampleStore(spool, repair=False)
    try:
        return {s.id: s for s in store.iterate(SampleQuery(), 10_000)}
    finally:
        store.close()


def lookout(*args: str, server: S3Server | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lookout", "samples", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, **(server.env() if server else {})}, check=False)


def _uploaded(side: SidecarProcess, count: int) -> None:
    """Until `count` samples are uploaded; failing, says what was stored and logged."""
    try:
        wait_until(lambda: metric(side, catalog.SAMPLES_UPLOADED) == count, 60,
                   f"{count} samples uploaded")
    except AssertionError as error:
        raise AssertionError(
            f"{error}: stored {metric(side, catalog.SAMPLES_STORED)}, uploaded "
            f"{metric(side, catalog.SAMPLES_UPLOADED)}; {side.process.output[-3000:]}") from None


@pytest.fixture(scope="module")
def fleet(s3_server, demo_upstream, tmp_path_factory):
    """pod-a (v1) killed with samples unsent and restarted on its volume; pod-b (v2)
    deleted. Both volumes are read afterwards: what each sidecar wrote."""
    url = f"s3://{s3_server.create_bucket('fleet-e2e')}/team"
    spool_a, spool_b = (tmp_path_factory.mktemp(pod) / "spool" for pod in ("a", "b"))
    started = []  # stopped whatever happens: a failed wait must not leak sidecars
    try:
        pod_a = sidecar(demo_upstream, spool_a, url, "pod-a", "v1", server=s3_server)
        started.append(pod_a)
        pod_b = sidecar(demo_upstream, spool_b, url, "pod-b", "v2", server=s3_server)
        started.append(pod_b)
        for seed in range(BATCH):
            send(demo_upstream, pod_a, seed)
            send(demo_upstream, pod_b, 100 + seed)
        for side in (pod_a, pod_b):
            _uploaded(side, BATCH)
        for seed in range(BATCH, BATCH + 2):
            send(demo_upstream, pod_a, seed)
            send(demo_upstream, pod_b, 100 + seed)
        for side in (pod_a, pod_b):
            wait_until(lambda s=side: metric(s, catalog.SAMPLES_STORED) == BATCH + 2, 60,
                       "every frame stored")
        # two samples wait in each spool (the interval is 10 minutes): kill one pod now
        wait_until(lambda: metric(pod_a, catalog.SAMPLE_SPOOL_BYTES) > 0, 30, "the spool gauge")
        assert metric(pod_a, catalog.SAMPLES_UPLOADED) == BATCH
        for pid in process_tree(pod_a.process.popen.pid):
            os.kill(pid, signal.SIGKILL)
        pod_a.process.popen.wait(30)
        assert pod_b.stop() == 0  # deleted: its shutdown flushes the spool
        restarted = sidecar(demo_upstream, spool_a, url, "pod-a", "v1",  # the same emptyDir
                            server=s3_server)
        started.append(restarted)
        wait_until(lambda: metric(restarted, catalog.SAMPLES_UPLOADED) == 2, 60,
                   "the restarted pod to upload what it had left")
        assert restarted.stop() == 0
        yield {"url": url, "wrote": {"pod-a": spooled(spool_a), "pod-b": spooled(spool_b)},
               "outputs": pod_a.process.output + pod_b.process.output}
    finally:
        for side in started:
            if side.process.alive():
                side.stop()


def test_every_sample_either_pod_wrote_is_listed_once_with_its_facts(fleet) -> None:
    listed = lookout("list", "--store", fleet["url"], "--json", "--limit", "1000")
    assert listed.returncode == 0, listed.stderr
    samples = json.loads(listed.stdout)["samples"]
    ids = [s["id"] for s in samples]
    assert len(ids) == len(set(ids)) == 12
    for pod, version in (("pod-a", "v1"), ("pod-b", "v2")):
        wrote = fleet["wrote"][pod]
        theirs = {s["id"]: s for s in samples if s["pod"] == pod}
        assert set(theirs) == set(wrote) and len(wrote) == BATCH + 2
        for sample_id, sample in theirs.items():
            local = wrote[sample_id]
            assert (sample["model"], sample["version"]) == (local.model, version)
            assert sample["primary_detections"] == local.primary_detections
            assert sample["primary_detections"], "the demo scenes have objects"
    assert "lookout-test" not in fleet["outputs"]  # no credential in a log


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with chromium(tmp_path_factory.mktemp("downloads")) as driver:
        yield driver


def test_the_fleet_gallery_shows_both_pods_and_compares_their_versions(fleet, browser) -> None:
    from selenium.webdriver.common.by import By

    process = subprocess.Popen(
        [sys.executable, "-m", "lookout", "samples", "serve", "--store", fleet["url"],
         "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, cwd=REPO, env=dict(os.environ))
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        assert "/ui/samples" in lines[0], lines
        link = lines[1].split("with: ", 1)[1].strip()
        browser.get(link)
        base = urllib.parse.urlsplit(browser.current_url)
        assert base.path == "/ui/samples"
        pods = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".card dd.pod")}
        assert pods == {"pod-a", "pod-b"}
        assert len(browser.find_elements(By.CSS_SELECTOR, ".card")) == 12
        browser.get(f"{base.scheme}://{base.netloc}/ui/samples?pod=pod-b")
        assert {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".card dd.pod")} == \
            {"pod-b"}
        browser.get(f"{base.scheme}://{base.netloc}/ui/compare?baseline=v1&canary=v2")
        sides = browser.find_elements(By.CSS_SELECTOR, "section.side")
        assert [s.get_attribute("data-version") for s in sides] == ["v1", "v2"]
        for side, pod in zip(sides, ("pod-a", "pod-b"), strict=True):
            shown = {e.text for e in side.find_elements(By.CSS_SELECTOR, "dd.pod")}
            assert shown == {pod}
        wait_until(lambda: browser.execute_script(
            "return [...document.querySelectorAll('section.side .card img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"), 30,
            "every thumbnail on the compare page to load from the bucket", interval=0.2)
        screenshot(browser, "fleet-compare")
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_bucket_outage_loses_nothing_up_to_the_spools_bound(demo_upstream, tmp_path) -> None:
    server = S3Server().start()
    try:
        bucket = server.create_bucket("outage-e2e")
        url = f"s3://{bucket}/team"
        side = sidecar(demo_upstream, tmp_path / "spool", url, "pod-o", "v1",
                       "--sample-store-max-bytes", "400KB", "--sample-upload-batch", "2",
                       "--sample-upload-interval", "0.2", server=server)
        try:
            wait_until(lambda: "reachable; uploading as pod pod-o" in side.process.output, 60,
                       f"the start-up check in {side.process.log_path}")
            server.stop()
            for seed in range(40):  # every answer the upstream's while the bucket is down
                send(demo_upstream, side, 200 + seed)
            wait_until(lambda: metric(side, catalog.SAMPLES_STORED) == 40, 60, "40 stored")
            wait_until(lambda: metric(side, catalog.SAMPLE_UPLOAD_FAILURES,
                                      reason="unreachable"), 60, "failures counted")
            lost = metric(side, catalog.SAMPLES_DROPPED, reason="spool_full")
            assert lost > 0, "the spool's bound was reached"
            assert request(side.admin_port, "GET", "/readyz").status == 200
            server.start()
            server.create_bucket(bucket)
            wait_until(lambda: metric(side, catalog.SAMPLES_UPLOADED) + lost == 40, 180,
                       "the spool to drain", interval=0.5)
            wait_until(lambda: metric(side, catalog.SAMPLE_SPOOL_BYTES) == 0, 30,
                       "the spool gauge to say empty")
        finally:
            assert side.stop() == 0
        kept = spooled(tmp_path / "spool")
        listed = lookout("list", "--store", url, "--json", "--limit", "1000", server=server)
        assert listed.returncode == 0, listed.stderr
        assert {s["id"] for s in json.loads(listed.stdout)["samples"]} == set(kept)
        assert len(kept) + lost == 40
    finally:
        server.stop()


def test_a_sidecars_own_api_can_show_the_fleet(fleet, s3_server, demo_upstream,
                                               tmp_path) -> None:
    token = tmp_path / "token"
    token.write_text("fleet-gallery-token-0123")
    side = sidecar(demo_upstream, tmp_path / "spool", fleet["url"], "pod-c", "v3",
                   "--sample-gallery", "fleet", "--admin-token-file", str(token),
                   server=s3_server)
    try:
        page = request(side.admin_port, "GET", "/samples?pod=pod-b&limit=100", headers={
            "Authorization": "Bearer fleet-gallery-token-0123"})
        assert page.status == 200, page.body
        assert {s["id"] for s in page.json()["samples"]} == set(fleet["wrote"]["pod-b"])
    finally:
        assert side.stop() == 0


def test_the_same_through_azure_blob_storage(demo_upstream, tmp_path) -> None:
    """Azurite: a sidecar killed with samples in its spool and restarted, another pod
    deleted; `lookout samples list --store az://...` returns each once."""
    from tests.support.azurite import AzuriteServer

    azurite = AzuriteServer()
    try:
        url = f"az://{azurite.create_container('samples')}/team"
        env = azurite.env()
        options = ("--model-path", str(model_path("primary")), "--sample-dir",
                   str(tmp_path / "spool"), "--sample-strategies", EVERY_FRAME,
                   "--sample-url", url, "--sample-pod-name", "pod-z",
                   "--sample-upload-batch", str(BATCH), "--sample-upload-interval", "600")
        side = start_sidecar(f"http://127.0.0.1:{demo_upstream}", *options, env=env)
        for seed in range(BATCH):
            send(demo_upstream, side, 300 + seed)
        _uploaded(side, BATCH)
        for seed in range(BATCH, BATCH + 2):  # these two wait: the interval is 10 minutes
            send(demo_upstream, side, 300 + seed)
        wait_until(lambda: metric(side, catalog.SAMPLES_STORED) == BATCH + 2, 60, "stored")
        for pid in process_tree(side.process.popen.pid):
            os.kill(pid, signal.SIGKILL)
        side.process.popen.wait(30)
        side = start_sidecar(f"http://127.0.0.1:{demo_upstream}", *options, env=env)
        wait_until(lambda: metric(side, catalog.SAMPLES_UPLOADED) == 2, 60, "the rest")
        assert side.stop() == 0
        wrote = spooled(tmp_path / "spool")
        listed = subprocess.run(
            [sys.executable, "-m", "lookout", "samples", "list", "--store", url, "--json",
             "--limit", "1000"], capture_output=True, text=True, cwd=REPO, timeout=120,
            env={**os.environ, **env}, check=False)
        assert listed.returncode == 0, listed.stderr
        samples = json.loads(listed.stdout)["samples"]
        assert sorted(s["id"] for s in samples) == sorted(wrote) and len(wrote) == BATCH + 2
        assert {(s["pod"], s["version"]) for s in samples} == {("pod-z", "v1")}
        assert all(s["primary_detections"] == wrote[s["id"]].primary_detections
                   for s in samples)
    finally:
        azurite.stop()
