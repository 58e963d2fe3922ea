"""The store's newest audits as gauges: read from a real store (local and the fleet's),
bounded to the pod's models, versions and classes, failures counted and the last good
gauges kept, and on a real sidecar's /metrics."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lookout.sidecar.samples.audit_metrics import MAX_AUDITED_VERSIONS, AuditGauges
from lookout.sidecar.samples.audit_records import AuditRecords
from lookout.sidecar.samples.bucket import open_bucket
from lookout.sidecar.samples.fleet_store import FleetStore
from lookout.sidecar.samples.layout import parse_store_url
from lookout.sidecar.samples.store import SampleStore
from lookout.slo import catalog
from tests.support.audit_records import T0, audit
from tests.support.processes import start_sidecar


def samples(families) -> dict[tuple, float]:
    return {(s.name, *sorted(s.labels.items())): s.value
            for f in families for s in f.samples}


def value(found: dict[tuple, float], spec: catalog.MetricSpec, **labels: str) -> float | None:
    return found.get((spec.name, *sorted(labels.items())))


@pytest.fixture(params=["local", "fleet"])
def store(request, tmp_path) -> SampleStore | FleetStore:
    if request.param == "fleet":
        url = parse_store_url(f"file://{tmp_path}/bucket")
        return FleetStore(open_bucket(url), url)
    return SampleStore(tmp_path / "store")


def test_the_newest_estimated_audit_of_each_version_of_the_pods_models(store) -> None:
    records = AuditRecords(store)
    records.write(audit("old", at=T0, precision=0.5))
    records.write(audit("new", at=T0 + 100, precision=0.8))
    records.write(audit("drawn", at=T0 + 200, status="drawn", precision=0.1))
    records.write(audit("canary", version="v2", at=T0 + 50, precision=0.7))
    records.write(audit("stranger", model="not-ours", at=T0 + 300))
    gauges = AuditGauges({"m": ("car", "person")}, lambda: pytest.fail("no failure"))
    gauges.refresh_from(records.all)
    found = samples(gauges.collect())
    estimate = catalog.AUDIT_ESTIMATE
    assert value(found, estimate, model="m", version="v1", **{"class": "all"},
                 rate="precision", quantity="audited") == 0.8
    for quantity, expected in (("lower", 0.5), ("upper", 0.7), ("proxy", 0.75)):
        assert value(found, estimate, model="m", version="v1", **{"class": "car"},
                     rate="recall", quantity=quantity) == expected
    assert value(found, estimate, model="m", version="v2", **{"class": "all"},
                 rate="precision", quantity="audited") == 0.7
    assert value(found, catalog.AUDIT_TIMESTAMP, model="m", version="v1") == T0 + 100
    assert value(found, catalog.AUDIT_IMAGES, model="m", version="v2") == 40
    labels = {dict(key[1:]).get("class") for key in found}
    assert "zebra" not in labels  # not one of the model's classes
    assert {dict(key[1:]).get("model") for key in found} == {"m"}


def test_versions_and_classes_stay_bounded(tmp_path) -> None:
    many = [audit(f"b{n}", version=f"v{n}", at=T0 + n) for n in range(MAX_AUDITED_VERSIONS + 2)]
    gauges = AuditGauges({"m": ()}, lambda: None)
    gauges.refresh_from(lambda: many)
    found = samples(gauges.collect())
    versions = {dict(key[1:])["version"] for key in found}
    assert versions == {f"v{n}" for n in range(2, MAX_AUDITED_VERSIONS + 2)}  # the newest
    # without configured class names, the audit's own (bounded) names
    assert {dict(key[1:]).get("class") for key in found} == {None, "all", "car", "zebra"}


def test_a_failed_read_is_counted_and_the_last_gauges_stay() -> None:
    failures = []
    gauges = AuditGauges({"m": ()}, lambda: failures.append(1))
    gauges.refresh_from(lambda: [audit("a")])
    before = samples(gauges.collect())

    def broken() -> list[dict]:
        raise OSError("the bucket is down")

    gauges.refresh_from(broken)
    gauges.refresh_from(lambda: [{"status": "estimated", "model": "m",
                                  "estimates": {"all": "not a row"}}])
    assert failures == [1, 1]
    assert samples(gauges.collect()) == before


def test_a_sidecar_exports_its_stores_audits(upstream_port: int, tmp_path) -> None:
    directory = tmp_path / "samples"
    SampleStore(directory).close()
    AuditRecords(SampleStore(directory)).write(audit("b1", model="yolo-test"))
    sidecar = start_sidecar(f"http://127.0.0.1:{upstream_port}", "--sample-dir",
                            str(directory), "--class-names", "car,person")
    try:
        families = {f.name: f for f in text_string_to_metric_families(sidecar.metrics_text())}
        for spec in (catalog.AUDIT_ESTIMATE, catalog.AUDIT_TIMESTAMP, catalog.AUDIT_IMAGES):
            assert families[spec.name].documentation == spec.help
        assert sidecar.metric(catalog.AUDIT_ESTIMATE.name, model="yolo-test", version="v1",
                              rate="precision", quantity="upper", **{"class": "car"}) \
            == pytest.approx(0.85)
        assert sidecar.metric(catalog.AUDIT_TIMESTAMP.name, model="yolo-test") == T0
        assert sidecar.metric(catalog.COMPONENT_ERRORS.sample_name, component="audit") == 0
        assert len({(s.labels["class"]) for s in families[catalog.AUDIT_ESTIMATE.name].samples
                    }) == 2  # all, car
    finally:
        sidecar.stop()
