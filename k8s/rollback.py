"""Rolling a failed canary back through the Kubernetes API, for teams without Argo
Rollouts or Flagger, and recording why on the object and as an Event.

Three kinds of target, each rolled back the way its owners would by hand:
- a Deployment pair (stable + canary): the canary is scaled to zero;
- one Deployment mid-rollout: the previous ReplicaSet's pod template is restored, as
  `kubectl rollout undo` does;
- an Argo Rollout: `status.abort` is set, as `kubectl argo rollouts abort` does.

Every write goes through the official `kubernetes` client, with the verbs the shipped
Role grants (canary.manifests) and no others.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

VERDICT_ANNOTATION = "lookout.io/canary-verdict"
REASON_ANNOTATION = "lookout.io/canary-reason"
JUDGED_AT_ANNOTATION = "lookout.io/canary-judged-at"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
POD_TEMPLATE_HASH = "pod-template-hash"
REPORTER = "lookout.io/canary-watch"
MERGE_PATCH = "application/merge-patch+json"
ROLLOUTS = ("argoproj.io", "v1alpha1", "rollouts")


class TargetKind(StrEnum):
    DEPLOYMENT_PAIR = "deployment-pair"
    DEPLOYMENT = "deployment"
    ROLLOUT = "rollout"


class RollbackError(RuntimeError):
    """The rollback could not be done; the message says what was missing."""


@dataclass(frozen=True, slots=True)
class Target:
    kind: TargetKind
    namespace: str
    name: str  # the canary Deployment of a pair, the Deployment, or the Rollout

    @property
    def api_version(self) -> str:
        return "argoproj.io/v1alpha1" if self.kind is TargetKind.ROLLOUT else "apps/v1"

    @property
    def object_kind(self) -> str:
        return "Rollout" if self.kind is TargetKind.ROLLOUT else "Deployment"

    def __str__(self) -> str:
        return f"{self.object_kind.lower()}/{self.name} in {self.namespace}"


def _now() -> datetime:
    return datetime.now(UTC)


class Rollback:
    """Rolls one target back. With `dry_run`, reads what it needs and writes nothing:
    `apply` returns the same descriptions of what it would do."""

    def __init__(self, api_client: Any, target: Target, dry_run: bool = False) -> None:
        from kubernetes import client

        self.target = target
        self.dry_run = dry_run
        self._client = api_client
        self._apps = client.AppsV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._events = client.EventsV1Api(api_client)

    def apply(self, reason: str) -> list[str]:
        """Roll back, annotate the target with the verdict and post a Warning Event."""
        from kubernetes.client.exceptions import ApiException

        try:
            done = [self._roll_back()]
            done.append(self._annotate(reason))
            done.append(self._event(reason, done[0]))
        except ApiException as error:
            raise RollbackError(f"rolling back {self.target} failed: HTTP {error.status} "
                                f"{error.reason}: {(error.body or '')[:300]}") from None
        return [f"(dry run) would {step}" if self.dry_run else step for step in done]

    def _roll_back(self) -> str:
        target = self.target
        if target.kind is TargetKind.DEPLOYMENT_PAIR:
            scale = self._apps.read_namespaced_deployment_scale(target.name, target.namespace)
            if not self.dry_run:
                self._apps.patch_namespaced_deployment_scale(
                    target.name, target.namespace, {"spec": {"replicas": 0}})
            return f"scale {target} from {scale.spec.replicas} to 0 replicas"
        if target.kind is TargetKind.DEPLOYMENT:
            return self._undo()
        if not self.dry_run:
            self._custom.patch_namespaced_custom_object_status(
                *ROLLOUTS[:2], target.namespace, ROLLOUTS[2], target.name,
                {"status": {"abort": True}}, _content_type=MERGE_PATCH)
        return f"abort {target} (status.abort = true)"

    def _undo(self) -> str:
        """Restore the pod template of the ReplicaSet with the highest revision below the
        current one, like `kubectl rollout undo`."""
        target = self.target
        deployment = self._apps.read_namespaced_deployment(target.name, target.namespace)
        current = int((deployment.metadata.annotations or {}).get(REVISION_ANNOTATION, 0))
        labels = deployment.spec.selector.match_labels or {}
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        replica_sets = self._apps.list_namespaced_replica_set(
            target.namespace, label_selector=selector).items
        owned = [rs for rs in replica_sets
                 if any(ref.uid == deployment.metadata.uid
                        for ref in rs.metadata.owner_references or [])]
        older = [(int((rs.metadata.annotations or {}).get(REVISION_ANNOTATION, 0)), rs)
                 for rs in owned]
        older = [(revision, rs) for revision, rs in older if 0 < revision < current]
        if not older:
            raise RollbackError(f"{target} has no ReplicaSet older than revision {current} "
                                f"to roll back to")
        revision, previous = max(older, key=lambda pair: pair[0])
        template = self._client.sanitize_for_serialization(previous.spec.template)
        template.get("metadata", {}).get("labels", {}).pop(POD_TEMPLATE_HASH, None)
        if not self.dry_run:
            self._apps.patch_namespaced_deployment(
                target.name, target.namespace,
                [{"op": "test", "path": "/metadata/resourceVersion",
                  "value": deployment.metadata.resource_version},
                 {"op": "replace", "path": "/spec/template", "value": template}])
        return f"roll {target} back from revision {current} to revision {revision}"

    def _annotate(self, reason: str) -> str:
        target = self.target
        annotations = {VERDICT_ANNOTATION: "fail", REASON_ANNOTATION: reason[:1000],
                       JUDGED_AT_ANNOTATION: _now().strftime("%Y-%m-%dT%H:%M:%SZ")}
        patch = {"metadata": {"annotations": annotations}}
        if not self.dry_run:
            if target.kind is TargetKind.ROLLOUT:
                self._custom.patch_namespaced_custom_object(
                    *ROLLOUTS[:2], target.namespace, ROLLOUTS[2], target.name, patch,
                    _content_type=MERGE_PATCH)
            else:
                self._apps.patch_namespaced_deployment(target.name, target.namespace, patch)
        return f"annotate {target} with {VERDICT_ANNOTATION}=fail and the reason"

    def _event(self, reason: str, action: str) -> str:
        target = self.target
        now = _now()
        # the API parses eventTime as RFC 3339 with exactly six fractional digits, and
        # the client drops them from a datetime whose microsecond is 0
        now = now.replace(microsecond=now.microsecond or 1)
        body = {
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"generateName": f"{target.name}.lookout-canary-",
                         "namespace": target.namespace},
            "eventTime": now,
            "type": "Warning", "reason": "CanaryRolledBack", "action": "RollBack",
            "note": f"lookout canary judge: fail ({reason}); {action}"[:1024],
            "regarding": {"apiVersion": target.api_version, "kind": target.object_kind,
                          "name": target.name, "namespace": target.namespace},
            "reportingController": REPORTER,
            "reportingInstance": f"{REPORTER}-{socket.gethostname()}"[:128],
        }
        if not self.dry_run:
            self._events.create_namespaced_event(target.namespace, body)
        return f"post a Warning Event CanaryRolledBack on {target}"

