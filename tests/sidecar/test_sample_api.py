"""The sample API and `lookout samples` against a running sidecar: the demo model behind
it, the reference model shadow-running, every frame sampled, real HTTP on loopback."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import urllib.parse
import zipfile
from pathlib import Path

import pytest
import yaml
from PIL import Image

from lookout.slo import catalog
from tests.support.processes import REPO, request, start_sidecar, start_upstream, wait_until
from tests.support.shadow_stack import start_shadow_stack

TOKEN = "test-token-4f1c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FRAMES = 24
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    store = tmp_path_factory.mktemp("samples") / "store"
    token_file = tmp_path_factory.mktemp("secret") / "token"
    token_file.write_text(TOKEN + "\n")
    stack = start_shadow_stack(
        "yolo-test", "--sample-dir", str(store), "--admin-token-file", str(token_file),
        "--sample-strategies", "disagreement below=0.8 per_minute=1000; "
                               "random share=1 per_minute=1000")
    stack.store = store
    stack.send_frames(range(FRAMES - 1))
    stack.send_frames(range(FRAMES - 1, FRAMES),
                      headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"})

    wait_until(lambda: stack.sidecar.metric(catalog.SAMPLES_STORED.sample_name) >= FRAMES, 60,
               "every frame to be stored")
    yield stack
    assert stack.sidecar.stop() == 0
    stack.upstream.terminate()


def get(stack, path: str, headers=AUTH):
    return request(stack.sidecar.admin_port, "GET", path, headers=headers)


def all_samples(stack, **params: str) -> list[dict]:
    samples, cursor = [], None
    while True:
        query = {"limit": "5", **params, **({"cursor": cursor} if cursor else {})}
        page = get(stack, f"/samples?{urllib.parse.urlencode(query)}").json()
        samples += page["samples"]
        cursor = page["next_cursor"]
        if cursor is None:
            return samples


def test_the_api_needs_the_bearer_token(stack) -> None:
    missing = get(stack, "/samples", headers={})
    assert missing.status == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert get(stack, "/samples", headers={"Authorization": f"Basic {TOKEN}"}).status == 401
    wrong = get(stack, "/samples", headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status == 403 and "not accepted" in wrong.json()["error"]
    assert get(stack, "/samples/export", headers={}).status == 401
    assert TOKEN not in stack.sidecar.process.output  # never logged
    assert TOKEN not in stack.sidecar.metrics_text()


def test_without_a_token_the_api_is_off_and_says_so(tmp_path) -> None:
    upstream, port = start_upstream()
    sidecar = start_sidecar(f"http://127.0.0.1:{port}", "--sample-dir", str(tmp_path / "s"))
    try:
        response = request(sidecar.admin_port, "GET", "/samples", headers=AUTH)
        assert response.status == 404 and "no admin token" in response.json()["error"]
    finally:
        sidecar.stop()
        upstream.terminate()


def test_pages_list_every_sample_once_with_detections_from_both_models(stack) -> None:
    samples = all_samples(stack)
    assert len(samples) == FRAMES and len({s["id"] for s in samples}) == FRAMES
    assert [s["time"] for s in samples] == sorted((s["time"] for s in samples), reverse=True)
    assert {s["strategy"] for s in samples} <= {"random", "disagreement"}
    first = samples[0]
    assert first["primary_detections"] and first["reference_detections"] is not None
    assert 0.0 <= first["agreement"] <= 1.0 and first["features"]["brightness"] > 0
    assert first["route"] == "/predict" and first["status"] == 200 and first["version"] == "v1"


def test_filters_and_trace_id_lookup(stack) -> None:
    samples = all_samples(stack)
    [traced] = all_samples(stack, trace_id=TRACE_ID)
    assert traced["trace_id"] == TRACE_ID
    disagreeing = all_samples(stack, strategy="disagreement")
    assert {s["id"] for s in disagreeing} == {s["id"] for s in samples
                                              if s["strategy"] == "disagreement"}
    assert all(s["agreement"] < 0.8 for s in disagreeing)
    stars = all_samples(stack, **{"class": "star"})
    assert {s["id"] for s in stars} == {s["id"] for s in samples if any(
        d["class"] == "star" for d in s["primary_detections"])} and stars
    middle = sorted(s["time"] for s in samples)[FRAMES // 2]
    assert {s["id"] for s in all_samples(stack, since=repr(middle))} == {
        s["id"] for s in samples if s["time"] >= middle}
    assert all_samples(stack, version="v0") == []


@pytest.mark.parametrize(("query", "message"), [
    ("limit=0", "limit"), ("since=yesterday", "since"), ("cursor=xyz", "cursor"),
    ("path=/etc/passwd", "unknown parameter"),
])
def test_bad_parameters_get_400_naming_them(stack, query: str, message: str) -> None:
    response = get(stack, f"/samples?{query}")
    assert response.status == 400 and message in response.json()["error"]


def test_one_sample_and_its_image_with_boxes(stack) -> None:
    sample = all_samples(stack)[0]
    shown = get(stack, f"/samples/{sample['id']}")
    assert shown.status == 200 and shown.json() == sample
    plain = get(stack, f"/samples/{sample['id']}/image")
    assert plain.status == 200 and plain.headers["Content-Type"] == "image/jpeg"
    drawn = get(stack, f"/samples/{sample['id']}/image?boxes=primary,reference")
    assert drawn.status == 200 and drawn.body != plain.body
    with Image.open(io.BytesIO(drawn.body)) as image:
        assert image.size == (sample["thumbnail"]["width"], sample["thumbnail"]["height"])
    assert get(stack, f"/samples/{sample['id']}/image?boxes=ground_truth").status == 400


@pytest.mark.parametrize("hostile", ["..%2F..%2Findex.sqlite3", "ffffffffffffffffffffffffffffffff",
                                     "..%2Fimages", "%2Fetc%2Fpasswd", "A" * 32])
def test_ids_never_reach_the_filesystem(stack, hostile: str) -> None:
    assert get(stack, f"/samples/{hostile}").status == 404
    assert get(stack, f"/samples/{hostile}/image").status == 404


def _zip(body: bytes) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(body))


def test_coco_export_is_valid_against_its_images(stack) -> None:
    response = get(stack, "/samples/export?format=coco&since=1h")
    assert response.status == 200 and response.headers["Content-Type"] == "application/zip"
    archive = _zip(response.body)
    document = json.loads(archive.read("annotations.json"))
    assert len(document["images"]) == FRAMES == int(response.headers["X-Lookout-Samples"])
    categories = {c["id"]: c["name"] for c in document["categories"]}
    images = {image["id"]: image for image in document["images"]}
    assert len(images) == FRAMES and set(categories.values()) <= {
        "circle", "square", "triangle", "star", "cross", "ring"}
    for image in images.values():
        with Image.open(io.BytesIO(archive.read(image["file_name"]))) as decoded:
            assert decoded.size == (image["width"], image["height"])
    expected = sum(len(s["primary_detections"]) for s in all_samples(stack))
    assert len(document["annotations"]) == expected
    ids = [a["id"] for a in document["annotations"]]
    assert len(set(ids)) == len(ids)
    for annotation in document["annotations"]:
        image = images[annotation["image_id"]]
        x, y, width, height = annotation["bbox"]
        assert annotation["category_id"] in categories and width > 0 and height > 0
        assert x >= 0 and x + width <= image["width"] + 1e-6
        assert y >= 0 and y + height <= image["height"] + 1e-6
        assert annotation["area"] == pytest.approx(width * height)


def test_yolo_export_has_a_label_file_per_image(stack) -> None:
    response = get(stack, "/samples/export?format=yolo&source=reference&limit=10")
    archive = _zip(response.body)
    names = yaml.safe_load(archive.read("data.yaml"))["names"]
    images = [n for n in archive.namelist() if n.startswith("images/")]
    assert len(images) == 10
    for image in images:
        sample_id = Path(image).stem
        for line in archive.read(f"labels/{sample_id}.txt").decode().splitlines():
            class_id, *box = line.split()
            assert int(class_id) in names and all(0.0 <= float(v) <= 1.0 for v in box)
    assert get(stack, "/samples/export?format=voc").status == 400


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lookout", "samples", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "250", **(env or {})})


def test_cli_lists_the_same_from_the_api_and_from_the_store(stack, tmp_path) -> None:
    url = f"http://127.0.0.1:{stack.sidecar.admin_port}"
    from_api = _cli("list", "--url", url, "--limit", "1000", "--json",
                    env={"LOOKOUT_ADMIN_TOKEN": TOKEN})
    from_store = _cli("list", "--store", str(stack.store), "--limit", "1000", "--json")
    assert from_api.returncode == 0, from_api.stderr
    assert json.loads(from_api.stdout) == json.loads(from_store.stdout)
    table = _cli("list", "--store", str(stack.store), "--strategy", "random")
    assert table.returncode == 0 and "random" in table.stdout

    denied = _cli("list", "--url", url, "--token", "wrong")
    assert denied.returncode == 1 and "403 token not accepted" in denied.stderr
    assert _cli("list", "--url", url).returncode == 1  # no token at all
    assert "not a sample store" in _cli("list", "--store", str(tmp_path)).stderr


def test_cli_show_and_export_from_both_sources(stack, tmp_path) -> None:
    url = f"http://127.0.0.1:{stack.sidecar.admin_port}"
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    sample = all_samples(stack, trace_id=TRACE_ID)[0]
    shown = _cli("show", sample["id"], "--url", url, "--token-file", str(token_file),
                 "--image", str(tmp_path / "frame.jpg"), "--boxes", "primary,reference")
    assert shown.returncode == 0, shown.stderr
    assert TRACE_ID in shown.stdout and "reference" in shown.stdout
    with Image.open(tmp_path / "frame.jpg") as image:
        assert image.size == (sample["thumbnail"]["width"], sample["thumbnail"]["height"])

    for where in (("--url", url, "--token-file", str(token_file)),
                  ("--store", str(stack.store))):
        out = tmp_path / f"export-{where[0][2:]}.zip"
        exported = _cli("export", *where, "--format", "coco", "-o", str(out))
        assert exported.returncode == 0, exported.stderr
        assert f"{FRAMES} samples written" in exported.stdout
        with zipfile.ZipFile(out) as archive:
            sample_ids = {i["sample_id"] for i in json.loads(
                archive.read("annotations.json"))["images"]}
        assert sample_ids == {s["id"] for s in all_samples(stack)}
