"""Several models in one pod: labels from the path, each model's own chain, compressed
bodies inflated before analysis."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import zlib

import numpy as np
import pytest
from PIL import Image

from lookout.lookout_demo.models import model_path
from lookout.sidecar.composition import chain_settings
from lookout.sidecar.config import ConfigError, load_config, per_model
from lookout.sidecar.model_chains import ModelChains
from lookout.sidecar.pipeline.analysis import Outcome
from lookout.sidecar.pipeline.kserve import encode_infer_body
from lookout.sidecar.pipeline.observation import Observation
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.served_models import (
    OTHER_MODEL,
    ModelLabels,
    input_size_from_metadata,
    path_model,
)
from lookout.slo import catalog

COARSE = (f"[{{name: coarse, version: '1', model_path: {model_path('coarse')}, "
          f"drift_baseline_size: 60, sample_strategies: 'slow seconds=0 per_minute=1'}}]")


def test_path_names_the_model_on_v2_and_v1_routes() -> None:
    assert path_model("/v2/models/yolo11n/infer") == "yolo11n"
    assert path_model("/v2/models/yolo11n/versions/3/infer") == "yolo11n"
    assert path_model("/v2/models/a%2Eb/ready") == "a.b"
    assert path_model("/v1/models/det:predict") == "det"
    assert path_model("/predict") is None and path_model("/v2/health/ready") is None


def test_labels_admit_only_models_the_server_answered_and_only_so_many() -> None:
    labels = ModelLabels("primary", "3", {"coarse": "1"}, discover=True, max_models=3)
    assert labels.label("/predict") == ("primary", "3")
    assert labels.label("/v2/models/coarse/infer") == ("coarse", "1")
    assert labels.label("/v2/models/new/infer") == (OTHER_MODEL, "unknown")
    assert labels.answered("new", 404) is None  # the server has no such model
    assert labels.label("/v2/models/new/infer")[0] == OTHER_MODEL
    assert labels.answered("new", 200) is None  # one answer: not yet
    assert labels.answered("new", 200) == ("new", "unknown")  # more than one
    assert labels.label("/v2/models/new/infer") == ("new", "unknown")
    assert labels.answered("fourth", 200, count=5) is None  # max_models reached
    assert labels.label("/v2/models/fourth/infer")[0] == OTHER_MODEL
    assert labels.answered("bad{name}", 200, count=2) is None


def test_idle_discovered_labels_give_their_slots_back_and_the_cap_counts_refusals() -> None:
    now = [0.0]
    refused = []
    labels = ModelLabels("primary", "3", {"coarse": "1"}, discover=True, max_models=4,
                         idle_seconds=60.0, turned_away=lambda: refused.append(1),
                         clock=lambda: now[0])
    assert labels.answered("junk-a", 200, count=2) and labels.answered("junk-b", 200, 2)
    assert labels.answered("real", 200, count=2) is None and len(refused) == 1
    now[0] = 30.0
    labels.answered("junk-b", 200)  # traffic keeps junk-b's label
    now[0] = 61.0
    assert labels.release_idle() == ["junk-a"]
    assert labels.answered("real", 200) == ("real", "unknown")  # a candidate still
    now[0] = 10_000.0
    assert sorted(labels.release_idle()) == ["junk-b", "real"]
    assert labels.label_name("coarse") == ("coarse", "1")  # configured: never released
    assert labels.label_name("primary") == ("primary", "3")


def test_a_follower_labels_by_the_published_file_only(tmp_path) -> None:
    from lookout.sidecar.processes.label_file import FollowedLabels, write_labels

    path = str(tmp_path / "labels.json")
    now = [0.0]
    follower = FollowedLabels("primary", "3", {"coarse": "1"}, True, 16, path=path,
                              clock=lambda: now[0])
    assert follower.answered("new", 200, count=9) is None  # never admits itself
    write_labels(path, {"new": "unknown", "coarse": "x"})
    now[0] = 2.0
    assert follower.label_name("new") == ("new", "unknown")
    assert follower.label_name("coarse") == ("coarse", "1")  # configured wins
    write_labels(path, {})
    now[0] = 4.0
    assert follower.label_name("new")[0] == OTHER_MODEL


def test_a_one_model_pod_labels_every_path_with_its_model() -> None:
    labels = ModelLabels("yolo", "v1", {}, discover=False, max_models=16)
    assert labels.label("/v2/models/yolo11n/infer") == ("yolo", "v1")
    assert labels.answered("yolo11n", 200) is None


def test_models_are_configured_with_their_own_values_and_bad_ones_are_named() -> None:
    config = load_config({"model_name": "primary", "models": COARSE}, env={})
    models = per_model(config)
    assert set(models) == {"primary", "coarse"}
    assert models["coarse"].model_version == "1" and models["coarse"].drift_baseline_size == 60
    assert models["primary"].drift_baseline_size == config.drift_baseline_size
    for text, message in [
        ("[{name: coarse, listen: '0.0.0.0:1'}]", "listen cannot be set per model"),
        ("[{name: a}, {name: a}]", "'a' is listed twice"),
        ("[{name: 'no/slash'}]", "must be letters, digits"),
        ("{name: a}", "expected a list of models"),
        ("[{name: a, input_size: big}]", r"models\[0\].input_size: invalid value 'big'"),
        ("[{name: a, drift_baseline_size: 10}]", "models entry 'a', drift_baseline_size"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config({"models": text}, env={})


def test_models_from_a_yaml_file_list(tmp_path) -> None:
    file = tmp_path / "lookout.yaml"
    file.write_text("model_name: primary\nmodels:\n  - name: coarse\n    version: '2'\n"
                    "    input_size: 320\n")
    models = per_model(load_config(env={}, config_file=file))
    assert models["coarse"].input_size == 320 and models["coarse"].model_version == "2"


def test_input_size_from_v2_metadata() -> None:
    assert input_size_from_metadata({"inputs": [{"shape": [-1, 3, 320, 320]}]}) == 320
    assert input_size_from_metadata({"inputs": [{"shape": [1, 640, 640, 3]}]}) == 640
    assert input_size_from_metadata({"inputs": []}) is None
    assert input_size_from_metadata({"inputs": [{"shape": [1, 3, 480, 640]}]}) is None


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _observation(model: str, version: str, seed: int, **changes) -> Observation:
    body = json.dumps([{"name": "x", "class": 0, "confidence": 0.9,
                        "box": {"x1": 1, "y1": 2, "x2": 30, "y2": 40}}]).encode()
    observation = Observation(
        started_at=0.0, method="POST", path=f"/v2/models/{model}/infer",
        route="/v2/models/{model}/infer", status=200, code="200",
        request_headers={"Content-Type": "image/jpeg"}, request_body=_jpeg(seed),
        response_headers={"Content-Type": "application/json"}, response_body=body,
        response_truncated=False, duration=0.01, upstream_duration=0.01, trace_id=None,
        span_id=None, trace_sampled=False, model=model, version=version)
    return dataclasses.replace(observation, **changes)


@pytest.fixture
def chains(tmp_path):
    config = load_config({"model_name": "primary", "model_version": "3", "models": COARSE,
                          "drift_baseline_size": "50", "drift_window": "10",
                          "sample_dir": str(tmp_path / "samples"),
                          "sample_strategies": "slow seconds=0 per_minute=3"}, env={})
    metrics = SidecarMetrics("primary", "3", process_metrics=False)
    chains = ModelChains(chain_settings(config), metrics)
    chains.start()
    yield chains, metrics
    chains.abandon()


def _value(metrics: SidecarMetrics, spec: catalog.MetricSpec, **labels: str) -> float:
    return metrics.registry.get_sample_value(spec.sample_name, labels) or 0.0


def test_each_model_has_its_own_chain_drift_and_sampling_quota(chains) -> None:
    chains, metrics = chains
    assert set(chains.chains) == {"primary", "coarse"}
    primary, coarse = chains.chains["primary"], chains.chains["coarse"]
    assert primary.drift is not coarse.drift  # a baseline each
    assert coarse.analyzer.model.class_names == ("round", "angular", "pointed")
    assert coarse.drift._config.drift_baseline_size == 60
    chains.analyse_batch([_observation("primary", "3", s) for s in range(5)]
                         + [_observation("coarse", "1", s) for s in range(5)]
                         + [_observation(OTHER_MODEL, "unknown", 9)])
    for model, version in (("primary", "3"), ("coarse", "1")):
        assert _value(metrics, catalog.OBSERVATIONS, model=model, version=version,
                      outcome=Outcome.ANALYSED) == 5
    assert _value(metrics, catalog.OBSERVATIONS, model=OTHER_MODEL, version="unknown",
                  outcome=Outcome.NOT_ANALYSED) == 1
    assert chains.samples.drain(30)
    # one store; quotas of their own: 3 a minute for primary, 1 for coarse (a rule that
    # takes every exchange: random's draw would pace itself below its quota)
    assert _value(metrics, catalog.SAMPLES_STORED, strategy="slow") == 4


def test_compressed_bodies_are_inflated_and_a_bomb_is_counted(chains) -> None:
    chains, metrics = chains
    plain = _observation("primary", "3", 1)
    gzipped = dataclasses.replace(
        plain, request_headers={"Content-Type": "image/jpeg", "Content-Encoding": "gzip"},
        request_body=gzip.compress(plain.request_body),
        response_headers={"Content-Type": "application/json", "Content-Encoding": "deflate"},
        response_body=zlib.compress(plain.response_body))
    packer = zlib.compressobj(9, wbits=31)
    bomb = packer.compress(b"[" + b" " * (64 * 1024**2)) + packer.flush()
    bombed = dataclasses.replace(
        plain, response_headers={"Content-Type": "application/json",
                                 "Content-Encoding": "gzip"}, response_body=bomb)
    [analysis] = chains.chains["primary"].analyzer.analyse_batch([gzipped])
    assert analysis.failure is None and analysis.image is not None
    assert (analysis.image.width, analysis.image.height) == (160, 120)
    assert len(analysis.detections) == 1
    [refused] = chains.chains["primary"].analyzer.analyse_batch([bombed])
    assert refused.failure is not None
    assert _value(metrics, catalog.PARSE_FAILURES, model="primary", version="3",
                  reason="decompressed_too_large") == 1
    assert _value(metrics, catalog.OBSERVATIONS, model="primary", version="3",
                  outcome=Outcome.PARSE_FAILED) == 1


def test_a_v2_response_names_the_version_served(chains) -> None:
    chains, metrics = chains
    head = np.zeros((1, 7, 1280), np.float32)
    body, _ = encode_infer_body("outputs", [("output0", head)], False,
                                {"model_name": "coarse", "model_version": "0"})
    chains.analyse_batch([_observation("coarse", "1", 2, response_body=body)])
    assert _value(metrics, catalog.SERVED_RESPONSES, model="coarse", version="1",
                  served_version="0") == 1
