"""`lookout canary manifests`: what `canary watch` needs to run in a namespace — a
ServiceAccount, a Role with the fewest verbs its rollbacks use, the binding, and the
Deployment of the watch itself.

The Role grants, in the canary's namespace only:
- deployments: get (read the revision and selector), patch (annotate; restore a template)
- deployments/scale: get, patch (a pair's canary to zero)
- replicasets: list (find the previous revision)
- rollouts: patch (annotate); rollouts/status: patch (abort)
- events.k8s.io events: create
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from lookout.k8s.inject import DEFAULT_IMAGE
from lookout.k8s.manifests import CONTAINER_SECURITY, POD_SECURITY

NAME = "lookout-canary-watch"

RULES: list[dict[str, Any]] = [
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"]},
    {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch"]},
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["list"]},
    {"apiGroups": ["argoproj.io"], "resources": ["rollouts"], "verbs": ["patch"]},
    {"apiGroups": ["argoproj.io"], "resources": ["rollouts/status"], "verbs": ["patch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
]


def add_manifest_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namespace", default="default", help="the canary's namespace")
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--prometheus", default="http://prometheus-operated.monitoring.svc:9090")
    parser.add_argument("--model", default="yolo")
    parser.add_argument("--baseline-version", default="v1")
    parser.add_argument("--canary-version", default="v2")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--canary-deployment", metavar="NAME")
    target.add_argument("--deployment", metavar="NAME")
    target.add_argument("--rollout", metavar="NAME")


def watch_manifests(namespace: str = "default", image: str = DEFAULT_IMAGE,
                    watch_args: list[str] | None = None) -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "lookout"}
    meta = {"name": NAME, "namespace": namespace, "labels": labels}
    args = ["canary", "watch", *(watch_args or [])]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
         "rules": RULES},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}]},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {
            "replicas": 1,  # one judge per canary: two would roll back twice
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
            "template": {
                "metadata": {"labels": labels, "annotations": {"lookout.io/inject": "false"}},
                "spec": {
                    "serviceAccountName": NAME,
                    "securityContext": POD_SECURITY,
                    "containers": [{
                        "name": "watch", "image": image, "command": ["lookout"],
                        "args": args,
                        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                                      "limits": {"cpu": "200m", "memory": "256Mi"}},
                        "securityContext": CONTAINER_SECURITY,
                    }],
                }}}},
    ]


def _watch_args(args: argparse.Namespace) -> list[str]:
    target = (["--rollout", args.rollout] if args.rollout else
              ["--deployment", args.deployment] if args.deployment else
              ["--canary-deployment", args.canary_deployment or "APP-canary"])
    return ["--prometheus", args.prometheus, "--model", args.model,
            "--baseline-version", args.baseline_version,
            "--canary-version", args.canary_version, *target,
            "--namespace", args.namespace, "--every", "1m"]


def manifests_yaml(args: argparse.Namespace) -> str:
    return yaml.safe_dump_all(watch_manifests(args.namespace, args.image, _watch_args(args)),
                              sort_keys=False)


def run_manifests(args: argparse.Namespace) -> int:
    sys.stdout.write(manifests_yaml(args))
    return 0
