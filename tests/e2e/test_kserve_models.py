"""lookout in front of a real V2 server nobody on the project wrote: KServe's ModelServer
serving two detectors at once (tests/support/kserve_models.py), driven with tritonclient
(JSON and binary) and plain HTTP. Each model's detections carry its own name and class
names, each has its own shadow agreement, the version the server says it served is
counted, and what clients get is what the server sent, headers included."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from prometheus_client.parser import text_string_to_metric_families

from lookout.lookout_demo.models import model_path
from lookout.lookout_demo.scenes import generate_scene
from lookout.shadow_eval.decode import DecodeSettings, decode
from lookout.shadow_eval.letterbox import letterbox_image
from lookout.sidecar.pipeline.kserve import encode_infer_body
from lookout.slo import catalog
from tests.support.kserve_catalog import INPUT_SIZES, MODELS
from tests.support.processes import (
    SidecarProcess,
    served_module,
    start_sidecar,
    wait_until,
)

# one worker builds the module's expensive fixtures once
pytestmark = pytest.mark.xdist_group("kserve_models")

CLASS_NAMES = {"primary": ("circle", "square", "triangle", "star", "ring", "cross"),
               "coarse": ("round", "angular", "pointed")}
FRAMES = 3
# hop-by-hop and framing headers a proxy may rewrite (RFC 9110 7.6.1); Date is the
# server's clock at each of two different responses
REFRAMED = {"connection", "keep-alive", "transfer-encoding", "content-length", "date"}


def _kserve(*extra: str) -> Iterator[int]:
    with served_module("tests.support.kserve_models", *extra) as port:
        yield port


@pytest.fixture(scope="module")
def kserve_port() -> Iterator[int]:
    yield from _kserve()


@pytest.fixture(scope="module")
def gzip_port() -> Iterator[int]:
    yield from _kserve("--gzip")


def _models_option(deployed_primary: str) -> list[str]:
    coarse = (f"[{{name: coarse, version: '1', model_path: {model_path('coarse')}, "
              f"shadow_model_path: {model_path('coarse_reference')}}}]")
    return ["--model-name", "primary", "--model-version", deployed_primary,
            "--model-path", str(model_path("primary")),
            "--shadow-model-path", str(model_path("reference")),
            "--shadow-sample-share", "1", "--shadow-rate", "1000", "--shadow-burst", "1000",
            "--shadow-max-busy-share", "1", "--models", coarse,
            "--ready-path", "/v2/health/ready"]


@pytest.fixture(scope="module")
def sidecar(kserve_port: int) -> Iterator[SidecarProcess]:
    process = start_sidecar(f"http://127.0.0.1:{kserve_port}", *_models_option("3"))
    yield process
    process.stop()


def _frame(seed: int, size: int) -> np.ndarray:
    canvas, _ = letterbox_image(generate_scene(seed).image, size, size)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], np.float32) / 255.0


def _infer(port: int, model: str, binary: bool, seed: int) -> np.ndarray:
    client = triton.InferenceServerClient(url=f"127.0.0.1:{port}")
    try:
        size = INPUT_SIZES[model]
        images = triton.InferInput("images", [1, 3, size, size], "FP32")
        images.set_data_from_numpy(_frame(seed, size), binary_data=binary)
        # KServe reads a JSON body only when it is declared JSON
        result = client.infer(model, [images], outputs=[
            triton.InferRequestedOutput("output0", binary_data=binary)],
            headers=None if binary else {"Content-Type": "application/json"})
        return result.as_numpy("output0")
    finally:
        client.close()


def _expected(model: str, head: np.ndarray) -> dict[str, int]:
    """What the model found, decoded here from the head the client received."""
    found = decode(head, DecodeSettings(), None, len(CLASS_NAMES[model]))
    counts: dict[str, int] = {}
    for class_id in found.classes.tolist():
        name = CLASS_NAMES[model][class_id]
        counts[name] = counts.get(name, 0) + 1
    return counts


def _detections(sidecar: SidecarProcess, model: str) -> dict[str, float]:
    return {name: sidecar.metric(catalog.DETECTIONS.sample_name, model=model,
                                 **{"class": name}) for name in CLASS_NAMES[model]}


def test_two_models_each_with_its_own_names_shadow_and_served_version(
        sidecar: SidecarProcess) -> None:
    before = {model: _detections(sidecar, model) for model in MODELS}
    expected: dict[str, dict[str, int]] = {model: {} for model in MODELS}
    for model in MODELS:
        for seed in range(FRAMES):
            head = _infer(sidecar.port, model, binary=bool(seed % 2), seed=seed)
            for name, count in _expected(model, head).items():
                expected[model][name] = expected[model].get(name, 0) + count
    requests = catalog.DETECTIONS_PER_REQUEST.count_name
    for model in MODELS:
        wait_until(lambda m=model: sidecar.metric(requests, model=m) >= FRAMES, 30,
                   f"the {model} analyses")
    for model in MODELS:
        version = MODELS[model][1]
        after = _detections(sidecar, model)
        assert {n: after[n] - before[model][n] for n in after if after[n] - before[model][n]} \
            == expected[model], model
        assert sidecar.metric(requests, model=model, version=version) == FRAMES
        assert sidecar.metric(catalog.SERVED_RESPONSES.sample_name, model=model,
                              version=version, served_version=version) == FRAMES
        assert sidecar.metric(catalog.REQUESTS.sample_name, model=model, version=version,
                              code="200") >= FRAMES
    # every model answers to its own reference model: agreement per model, once the
    # reference models have loaded (images before that pass without evaluation)
    matched = catalog.SHADOW_MATCHED_BOXES.sample_name
    for model in MODELS:
        def agreed(m: str = model) -> bool:
            _infer(sidecar.port, m, binary=True, seed=11)
            return sidecar.metric(matched, model=m) > 0

        wait_until(agreed, 60, f"the {model} shadow agreement", interval=0.5)
        # both from one scrape: evaluations go on between two
        scraped = [sample for family in text_string_to_metric_families(
            sidecar.metrics_text()) for sample in family.samples
            if sample.labels.get("model") == model]

        def total(name: str, samples: list = scraped) -> float:
            return sum(sample.value for sample in samples if sample.name == name)

        assert total(catalog.SHADOW_PRIMARY_BOXES.sample_name) >= total(matched) > 0
    counted_as_other = [sample for family in text_string_to_metric_families(
        sidecar.metrics_text()) for sample in family.samples
        if sample.labels.get("model") == "other" and sample.value]
    assert counted_as_other == []
    assert sidecar.metric(catalog.PARSE_FAILURES.sample_name) == 0


def test_a_model_the_server_does_not_have_is_other_never_a_label(
        sidecar: SidecarProcess, kserve_port: int) -> None:
    body, _ = encode_infer_body("inputs", [("images", _frame(0, 256))], False)
    response = httpx.post(f"http://127.0.0.1:{sidecar.port}/v2/models/nothere/infer",
                          content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 404
    assert sidecar.metric(catalog.REQUESTS.sample_name, model="other", code="404") >= 1
    assert "nothere" not in sidecar.metrics_text()


def _raw(port: int, path: str, body: bytes, headers: dict[str, str]
         ) -> tuple[int, list[tuple[str, str]], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("model", list(MODELS))
def test_bodies_and_headers_are_what_the_server_sent(sidecar: SidecarProcess,
                                                     kserve_port: int, model: str,
                                                     binary: bool) -> None:
    """KServe's binary responses carry no Content-Type: lookout must not add one."""
    size = INPUT_SIZES[model]
    extra = {"id": "frame-7",  # else the server makes up an id per response
             **({"parameters": {"binary_data_output": True}} if binary else {})}
    body, length = encode_infer_body("inputs", [("images", _frame(7, size))], binary, extra)
    headers = {"Content-Type": "application/json"} if not binary else {
        "Inference-Header-Content-Length": str(length)}
    path = f"/v2/models/{model}/infer"
    direct = _raw(kserve_port, path, body, headers)
    proxied = _raw(sidecar.port, path, body, headers)
    assert direct[0] == proxied[0] == 200
    assert direct[2] == proxied[2]

    def end_to_end(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(k.lower(), v) for k, v in items if k.lower() not in REFRAMED]

    assert end_to_end(proxied[1]) == end_to_end(direct[1])
    if binary:
        assert "content-type" not in {k.lower() for k, _ in proxied[1]}


@pytest.fixture(scope="module")
def gzip_sidecar(gzip_port: int) -> Iterator[SidecarProcess]:
    """Deployed as version 4 while the server still serves 3: stale weights."""
    process = start_sidecar(f"http://127.0.0.1:{gzip_port}", *_models_option("4"))
    yield process
    process.stop()


def test_gzip_responses_are_analysed_and_relayed_compressed(gzip_sidecar: SidecarProcess,
                                                            gzip_port: int) -> None:
    """httpx asks for gzip by default and the server compresses as MLServer does; the
    client still gets the compressed bytes, and lookout counts what is inside."""
    body, _ = encode_infer_body("inputs", [("images", _frame(3, 256))], False,
                                {"id": "frame-3"})
    headers = {"Content-Type": "application/json", "Accept-Encoding": "gzip"}
    direct = _raw(gzip_port, "/v2/models/primary/infer", body, headers)
    proxied = _raw(gzip_sidecar.port, "/v2/models/primary/infer", body, headers)
    assert dict((k.lower(), v) for k, v in proxied[1])["content-encoding"] == "gzip"
    assert proxied[2] == direct[2]
    heads = []
    with httpx.Client(base_url=f"http://127.0.0.1:{gzip_sidecar.port}") as client:
        for seed in range(FRAMES):
            body, _ = encode_infer_body("inputs", [("images", _frame(seed, 256))], False)
            response = client.post("/v2/models/primary/infer", content=body,
                                   headers={"Content-Type": "application/json"})
            assert response.headers["content-encoding"] == "gzip"
            heads.append(np.asarray(response.json()["outputs"][0]["data"], np.float32)
                         .reshape(1, 10, -1))
    requests = catalog.DETECTIONS_PER_REQUEST.count_name
    wait_until(lambda: gzip_sidecar.metric(requests, model="primary") >= FRAMES + 1, 30,
               "the gzip analyses")
    expected = sum(len(decode(h, DecodeSettings(), None, 6)) for h in heads)
    assert gzip_sidecar.metric(catalog.DETECTIONS_PER_REQUEST.sum_name, model="primary") \
        >= expected > 0
    assert gzip_sidecar.metric(catalog.PARSE_FAILURES.sample_name) == 0
    # the version the server says it served is not the one deployed
    assert gzip_sidecar.metric(catalog.SERVED_RESPONSES.sample_name, model="primary",
                               version="4", served_version="3") == FRAMES + 1


def test_discovery_labels_what_the_server_answers_for_with_its_metadata(
        kserve_port: int) -> None:
    """Nothing listed but the default model: `coarse` becomes a label once KServe has
    answered for it more than once, its input size read from KServe's own metadata
    endpoint. The RED counters carry the label from the first request; the analyses
    from when the lookout process has published it to the workers (within a second)."""
    sidecar = start_sidecar(f"http://127.0.0.1:{kserve_port}", "--model-name", "primary",
                            "--model-version", "3", "--discover-models", "true",
                            "--max-models", "2")
    try:
        sent = 0
        requests = catalog.DETECTIONS_PER_REQUEST.count_name

        def analysed() -> bool:
            nonlocal sent
            _infer(sidecar.port, "coarse", binary=True, seed=sent % 2)
            sent += 1
            return sidecar.metric(requests, model="coarse", version="unknown") >= 2

        wait_until(analysed, 30, "the discovered model's analyses", interval=0.2)
        assert sidecar.metric(catalog.REQUESTS.sample_name, model="coarse",
                              code="200") == sent
        assert sidecar.metric(catalog.SERVED_RESPONSES.sample_name, model="coarse",
                              served_version="1") >= 2
        assert sidecar.metric(catalog.PARSE_FAILURES.sample_name) == 0
        body, _ = encode_infer_body("inputs", [("images", _frame(0, 256))], False)
        response = httpx.post(f"http://127.0.0.1:{sidecar.port}/v2/models/nothere/infer",
                              content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 404
        assert "nothere" not in sidecar.metrics_text()
    finally:
        sidecar.stop()
    assert "analysing discovered model 'coarse' (input size 320)" in sidecar.process.output
