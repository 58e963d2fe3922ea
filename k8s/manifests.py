"""The webhook's own manifests, generated (`lookout webhook manifests`) so the namespace,
image and names stay consistent; `k8s/manifests/webhook.yaml` is this output for the
defaults, pinned by a golden-file test."""

from __future__ import annotations

from typing import Any

from lookout.k8s.annotations import NAMESPACE_LABEL
from lookout.k8s.inject import DEFAULT_IMAGE, RUN_AS_USER

NAME = "lookout-webhook"
CONFIGURATION = "lookout-sidecar-injector"
PORT = 8443
SECRET = "lookout-webhook-tls"


# lookout's own containers: non-root, read-only, no privileges
CONTAINER_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True, "runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER,
    "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
POD_SECURITY: dict[str, Any] = {"runAsNonRoot": True,
                                "seccompProfile": {"type": "RuntimeDefault"}}


def _labels() -> dict[str, str]:
    return {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "lookout"}


def _webhook(mode: str, namespace: str, namespace_selector: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": f"{mode}.inject.lookout.io",
        "admissionReviewVersions": ["v1"],
        "clientConfig": {"service": {"name": NAME, "namespace": namespace,
                                     "path": f"/mutate/{mode}", "port": 443}},
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                   "resources": ["pods"], "scope": "Namespaced"}],
        # never block a pod: an unreachable or broken webhook admits it without lookout
        "failurePolicy": "Ignore",
        "sideEffects": "None",
        "timeoutSeconds": 5,
        "reinvocationPolicy": "Never",
        "namespaceSelector": namespace_selector,
    }


def webhook_manifests(namespace: str = "lookout-system", image: str = DEFAULT_IMAGE,
                      replicas: int = 2) -> list[dict[str, Any]]:
    labels = _labels()
    meta = {"namespace": namespace, "labels": labels}
    excluded = {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                "values": [namespace, "kube-system", "kube-public", "kube-node-lease"]}
    probe = {"httpGet": {"path": "/healthz", "port": "https", "scheme": "HTTPS"},
             "periodSeconds": 10}
    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": namespace, "labels": labels}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME, **meta},
         "automountServiceAccountToken": False},
        # `lookout webhook certs --patch` run as this account (e.g. from a Job) may set
        # the caBundle of this one configuration, and nothing else
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": f"{NAME}-ca-bundle", "labels": labels},
         "rules": [{"apiGroups": ["admissionregistration.k8s.io"],
                    "resources": ["mutatingwebhookconfigurations"],
                    "resourceNames": [CONFIGURATION], "verbs": ["get", "patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": f"{NAME}-ca-bundle", "labels": labels},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": f"{NAME}-ca-bundle"},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}]},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": NAME, **meta},
         "spec": {
             "replicas": replicas,
             "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
             "template": {
                 "metadata": {"labels": labels,
                              "annotations": {"lookout.io/inject": "false"}},
                 "spec": {
                     "serviceAccountName": NAME,
                     "automountServiceAccountToken": False,
                     "securityContext": POD_SECURITY,
                     "containers": [{
                         "name": "webhook", "image": image,
                         "command": ["lookout"],
                         "args": ["webhook", "serve", "--listen", f"0.0.0.0:{PORT}",
                                  "--cert", "/etc/lookout-webhook/tls.crt",
                                  "--key", "/etc/lookout-webhook/tls.key",
                                  "--image", image],
                         "env": [{"name": "POD_NAMESPACE", "valueFrom": {
                             "fieldRef": {"fieldPath": "metadata.namespace"}}}],
                         "ports": [{"name": "https", "containerPort": PORT}],
                         "readinessProbe": probe, "livenessProbe": probe,
                         "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                       "limits": {"cpu": "100m", "memory": "128Mi"}},
                         "securityContext": CONTAINER_SECURITY,
                         "volumeMounts": [{"name": "tls", "mountPath": "/etc/lookout-webhook",
                                           "readOnly": True}],
                     }],
                     "volumes": [{"name": "tls", "secret": {"secretName": SECRET}}],
                 }}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": NAME, **meta},
         "spec": {"selector": {"app.kubernetes.io/name": NAME},
                  "ports": [{"name": "https", "port": 443, "targetPort": "https"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1",
         "kind": "MutatingWebhookConfiguration",
         "metadata": {"name": CONFIGURATION, "labels": labels},
         "webhooks": [
             _webhook("namespace", namespace, {"matchExpressions": [
                 {"key": NAMESPACE_LABEL, "operator": "In", "values": ["enabled"]}, excluded]}),
             _webhook("annotation", namespace, {"matchExpressions": [
                 {"key": NAMESPACE_LABEL, "operator": "NotIn", "values": ["enabled"]},
                 excluded]}),
         ]},
    ]
