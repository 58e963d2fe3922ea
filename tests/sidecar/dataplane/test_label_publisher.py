"""Discovered labels decided from the tap's counters in the lookout process: admitted
on the second 2xx, released when idle, published for the workers, and a released
name's counts never added to `other` at once."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from lookout.sidecar.config import DEFAULT_ROUTES
from lookout.sidecar.dataplane.label_publisher import LabelPublisher
from lookout.sidecar.dataplane.tap_counters import RedCollector, TapCounters
from lookout.sidecar.processes.label_file import read_labels
from lookout.sidecar.served_models import OTHER_MODEL, ModelLabels
from lookout.slo import catalog
from tests.support.tap_wire import write_slot

INFER = DEFAULT_ROUTES.index("/v2/models/{model}/infer")


def requests(collector: RedCollector) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    by_model: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == catalog.REQUESTS.sample_name:
                model = sample.labels["model"]
                by_model[model] = by_model.get(model, 0) + sample.value
    return by_model


def test_admitted_on_the_second_answer_released_when_idle_without_a_jump(
        counters: TapCounters, tmp_path: Path) -> None:
    now = [0.0]
    labels = ModelLabels("yolo", "v1", {}, discover=True, max_models=4, idle_seconds=10,
                         clock=lambda: now[0])
    path = str(tmp_path / "labels.json")
    publisher = LabelPublisher(counters, labels, path)
    collector = RedCollector(counters, DEFAULT_ROUTES, labels, publisher.readings)
    write_slot(counters, 0, 0, model=b"coarse", route=INFER, code=200, count=1)
    assert requests(collector) == {OTHER_MODEL: 1}  # one answer: not yet
    write_slot(counters, 1, 0, model=b"coarse", route=INFER, code=200, count=1)
    assert requests(collector) == {"coarse": 2}  # both threads, from the first request
    assert read_labels(path) == {"coarse": "unknown"}
    now[0] = 10.0
    publisher.refresh()
    assert read_labels(path) == {}
    assert requests(collector) == {}  # its series ends; other gets none of its past
    write_slot(counters, 0, 1, model=b"coarse", route=INFER, code=404, count=3)
    assert requests(collector) == {OTHER_MODEL: 3}  # only what came after
