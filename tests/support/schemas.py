"""Schema validation of manifests: Kubernetes' own kinds with kubernetes-validate
(strict, every minor version from 1.29), custom resources against the CRDs in
tests/data/crds."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from kubernetes_validate import utils as kv_utils
from kubernetes_validate import validate

CRDS = Path(__file__).resolve().parents[1] / "data" / "crds"
KUBERNETES_VERSIONS = sorted({v for v in kv_utils.all_versions()
                              if tuple(map(int, v.split(".")[:2])) >= (1, 29)},
                             key=lambda v: tuple(map(int, v.split("."))))


def validate_kubernetes(document: dict[str, Any]) -> None:
    """Strict validation at every version; a Rollout through its pod template (a
    Deployment's), which is what lookout changes in it."""
    if document["kind"] == "Rollout":
        document = {"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": document["metadata"],
                    "spec": {"selector": document["spec"]["selector"],
                             "template": document["spec"]["template"]}}
    for version in KUBERNETES_VERSIONS:
        validate(document, version, strict=True)


def _json_schema(node: Any) -> Any:
    """OpenAPI v3 structural schema -> JSON Schema, refusing unknown fields wherever
    properties are listed (the API server's strict field validation)."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _json_schema(value) for key, value in node.items()
            if not key.startswith("x-kubernetes-") or key == "x-kubernetes-int-or-string"}
    if node.pop("x-kubernetes-int-or-string", False):
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in node and "additionalProperties" not in node:
        node["additionalProperties"] = False
    node.pop("format", None)
    return node


def crd_validator(file: str, kind: str) -> jsonschema.Validator:
    """A validator for `kind` from the CRDs in tests/data/crds/`file`."""
    for crd in yaml.safe_load_all((CRDS / file).read_text()):
        if crd["spec"]["names"]["kind"] == kind:
            [version] = crd["spec"]["versions"]
            schema = _json_schema(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
            schema["properties"]["apiVersion"]["const"] = (
                f"{crd['spec']['group']}/{version['name']}")
            schema["properties"]["kind"]["const"] = kind
            return jsonschema.Draft7Validator(schema)
    raise LookupError(f"no CRD of kind {kind} in {file}")
