"""Rollbacks of a failed canary, for each target kind and in dry-run, against the
Kubernetes API stand-in (tests/support/kube_api.py: no API server can run on these
machines, so the stand-in serves the API's paths and records the requests the official
`kubernetes` client makes)."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import pytest

from lookout.k8s.rollback import (
    JUDGED_AT_ANNOTATION,
    POD_TEMPLATE_HASH,
    REASON_ANNOTATION,
    REVISION_ANNOTATION,
    VERDICT_ANNOTATION,
    Rollback,
    RollbackError,
    Target,
    TargetKind,
)
from tests.support.kube_api import TOKEN, KubeApiStandIn

NAMESPACE = "shop"
APPS = f"/apis/apps/v1/namespaces/{NAMESPACE}"
ROLLOUTS = f"/apis/argoproj.io/v1alpha1/namespaces/{NAMESPACE}/rollouts"
EVENTS = f"/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events"
REASON = "critical metric(s) worse: precision"


def _template(image: str, hash_label: str | None = None) -> dict[str, Any]:
    labels = {"app": "shelf"}
    if hash_label:
        labels[POD_TEMPLATE_HASH] = hash_label
    return {"metadata": {"labels": labels},
            "spec": {"containers": [{"name": "triton", "image": image}]}}


def _deployment(name: str, image: str, replicas: int = 3, revision: int = 1) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NAMESPACE,
                         "annotations": {REVISION_ANNOTATION: str(revision)}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "shelf"}},
                     "template": _template(image)},
            "status": {"replicas": replicas}}


def _replica_set(owner: dict[str, Any], revision: int, image: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"{owner['metadata']['name']}-{revision}", "namespace": NAMESPACE,
                         "labels": {"app": "shelf", POD_TEMPLATE_HASH: f"h{revision}"},
                         "annotations": {REVISION_ANNOTATION: str(revision)},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                              "name": owner["metadata"]["name"],
                                              "uid": owner["metadata"]["uid"]}]},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "shelf"}},
                     "template": _template(image, f"h{revision}")}}


@pytest.fixture
def api() -> Iterator[KubeApiStandIn]:
    stand_in = KubeApiStandIn()
    yield stand_in
    stand_in.close()


def _event(api: KubeApiStandIn) -> dict[str, Any]:
    [event] = [r.body for r in api.requests if r.method == "POST"]
    return event


def _assert_recorded(api: KubeApiStandIn, target: Target, kind: str, api_version: str) -> None:
    event = _event(api)
    assert event["type"] == "Warning" and event["reason"] == "CanaryRolledBack"
    assert event["regarding"] == {"apiVersion": api_version, "kind": kind,
                                  "name": target.name, "namespace": NAMESPACE}
    assert REASON in event["note"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|\+00:00)", event["eventTime"])
    assert all(r.authorization == f"Bearer {TOKEN}" for r in api.requests)


def test_a_pair_s_canary_is_scaled_to_zero_and_annotated(api: KubeApiStandIn) -> None:
    stable = api.add(f"{APPS}/deployments", _deployment("shelf", "triton:v1"))
    api.add(f"{APPS}/deployments", _deployment("shelf-canary", "triton:v2", replicas=2))
    target = Target(TargetKind.DEPLOYMENT_PAIR, NAMESPACE, "shelf-canary")

    done = Rollback(api.api_client(), target).apply(REASON)

    assert done[0] == f"scale {target} from 2 to 0 replicas"
    scale = next(r for r in api.writes() if r.path.endswith("/scale"))
    assert (scale.method, scale.path) == ("PATCH", f"{APPS}/deployments/shelf-canary/scale")
    assert scale.body == {"spec": {"replicas": 0}}
    canary = api.get(f"{APPS}/deployments/shelf-canary")
    assert canary["spec"]["replicas"] == 0
    annotations = canary["metadata"]["annotations"]
    assert annotations[VERDICT_ANNOTATION] == "fail" and annotations[REASON_ANNOTATION] == REASON
    assert JUDGED_AT_ANNOTATION in annotations
    assert api.get(f"{APPS}/deployments/shelf") == stable  # the stable one is not touched
    _assert_recorded(api, target, "Deployment", "apps/v1")


def test_a_single_deployment_gets_its_previous_template_back(api: KubeApiStandIn) -> None:
    deployment = api.add(f"{APPS}/deployments", _deployment("shelf", "triton:v3", revision=3))
    for revision, image in ((1, "triton:v1"), (2, "triton:v2"), (3, "triton:v3")):
        api.add(f"{APPS}/replicasets", _replica_set(deployment, revision, image))
    # a ReplicaSet with the same labels and a higher old revision, owned by someone else
    stranger = copy.deepcopy(deployment)
    stranger["metadata"].update(name="other", uid="uid-other")
    api.add(f"{APPS}/replicasets", _replica_set(stranger, 2, "intruder:v9") | {
        "metadata": {**_replica_set(stranger, 2, "x")["metadata"], "name": "other-2b",
                     "annotations": {REVISION_ANNOTATION: "2"}}})
    target = Target(TargetKind.DEPLOYMENT, NAMESPACE, "shelf")

    done = Rollback(api.api_client(), target).apply(REASON)

    assert done[0] == f"roll {target} back from revision 3 to revision 2"
    undo = api.writes()[0]
    assert undo.content_type == "application/json-patch+json"
    assert undo.body[0] == {"op": "test", "path": "/metadata/resourceVersion",
                            "value": deployment["metadata"]["resourceVersion"]}
    restored = api.get(f"{APPS}/deployments/shelf")["spec"]["template"]
    assert restored["spec"]["containers"][0]["image"] == "triton:v2"
    assert POD_TEMPLATE_HASH not in restored["metadata"]["labels"]
    listing = next(r for r in api.requests if r.path == f"{APPS}/replicasets")
    assert listing.query["labelSelector"] == "app=shelf"
    _assert_recorded(api, target, "Deployment", "apps/v1")


def test_a_deployment_without_an_older_revision_is_left_alone(api: KubeApiStandIn) -> None:
    deployment = api.add(f"{APPS}/deployments", _deployment("shelf", "triton:v1"))
    api.add(f"{APPS}/replicasets", _replica_set(deployment, 1, "triton:v1"))
    target = Target(TargetKind.DEPLOYMENT, NAMESPACE, "shelf")
    with pytest.raises(RollbackError, match="no ReplicaSet older than revision 1"):
        Rollback(api.api_client(), target).apply(REASON)
    assert api.writes() == []


def test_an_argo_rollout_is_aborted_through_its_status(api: KubeApiStandIn) -> None:
    api.add(ROLLOUTS, {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
                       "metadata": {"name": "shelf", "namespace": NAMESPACE},
                       "spec": {"replicas": 4}, "status": {"phase": "Progressing"}})
    target = Target(TargetKind.ROLLOUT, NAMESPACE, "shelf")

    done = Rollback(api.api_client(), target).apply(REASON)

    assert done[0] == f"abort {target} (status.abort = true)"
    abort, annotate = [r for r in api.writes() if r.method == "PATCH"]
    assert (abort.path, abort.content_type) == (f"{ROLLOUTS}/shelf/status",
                                                "application/merge-patch+json")
    assert abort.body == {"status": {"abort": True}}
    assert annotate.content_type == "application/merge-patch+json"
    rollout = api.get(f"{ROLLOUTS}/shelf")
    assert rollout["status"] == {"phase": "Progressing", "abort": True}
    assert rollout["metadata"]["annotations"][VERDICT_ANNOTATION] == "fail"
    _assert_recorded(api, target, "Rollout", "argoproj.io/v1alpha1")


@pytest.mark.parametrize("kind", list(TargetKind))
def test_dry_run_reads_and_writes_nothing(api: KubeApiStandIn, kind: TargetKind) -> None:
    deployment = api.add(f"{APPS}/deployments", _deployment("shelf", "triton:v2", revision=2))
    api.add(f"{APPS}/replicasets", _replica_set(deployment, 1, "triton:v1"))
    api.add(ROLLOUTS, {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
                       "metadata": {"name": "shelf", "namespace": NAMESPACE}, "spec": {}})
    before = copy.deepcopy(api.objects)

    done = Rollback(api.api_client(), Target(kind, NAMESPACE, "shelf"), dry_run=True).apply(
        REASON)

    assert len(done) == 3 and all(step.startswith("(dry run) would ") for step in done)
    assert api.writes() == []
    assert api.objects == before


def test_a_refused_write_is_a_clear_error(api: KubeApiStandIn) -> None:
    api.add(f"{APPS}/deployments", _deployment("shelf-canary", "triton:v2"))
    api.forbidden.add(("PATCH", f"{APPS}/deployments/shelf-canary/scale"))
    target = Target(TargetKind.DEPLOYMENT_PAIR, NAMESPACE, "shelf-canary")
    with pytest.raises(RollbackError, match="HTTP 403"):
        Rollback(api.api_client(), target).apply(REASON)
    assert api.get(f"{APPS}/deployments/shelf-canary")["spec"]["replicas"] == 3
