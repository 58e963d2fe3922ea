"""The pod annotations that configure injection, in one table: `inject` reads them,
the webhook reads them, and docs/KUBERNETES.md is checked against this table."""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "lookout.io/"
NAMESPACE_LABEL = "lookout.io/injection"  # = enabled on a namespace: inject every pod


@dataclass(frozen=True, slots=True)
class Annotation:
    key: str
    meaning: str
    default: str


ANNOTATIONS = (
    Annotation("inject", '"true" injects (where the namespace is not opted in); "false" '
               "opts the pod out everywhere", "(namespace decides)"),
    Annotation("container", "the app container whose port lookout takes over",
               "the first container"),
    Annotation("upstream-port", "the app's serving port, by name or number",
               "`http`, else the container's first port"),
    Annotation("grpc-port", "the app's gRPC (KServe V2 / Triton) port, by name or number: "
               "taken over like the HTTP port", "(none: gRPC not taken over)"),
    Annotation("model-name", "`model` label on lookout's metrics", "the workload's name"),
    Annotation("model-version", "`version` label", "the app image's tag"),
    Annotation("reference-model", "path of a reference ONNX model inside the pod: turns "
               "shadow evaluation on", "(off)"),
    Annotation("reference-model-sha256", "sha256 the reference model must have", "(unpinned)"),
    Annotation("reference-url", "a reference model served for the fleet by Triton or KServe "
               "(`http://HOST:PORT` or `grpc://HOST:PORT`), instead of a file in the pod: "
               "turns shadow evaluation on", "(off)"),
    Annotation("reference-name", "that reference's V2 model name (`:version` after it "
               "pins a version)", "(required with reference-url)"),
    Annotation("gpu-devices", "the GPUs the sidecar reads through NVML, as "
               "`NVIDIA_VISIBLE_DEVICES` takes them: the pod's GPU UUIDs, or `all` on nodes "
               "given to this workload", "(none: no GPU metrics)"),
    Annotation("sample-rate", "share of traffic the `random` sampling rule takes", "0.01"),
    Annotation("samples-size", "size limit of the samples `emptyDir`", "1Gi"),
    Annotation("samples-pvc", "a PersistentVolumeClaim for samples instead of an `emptyDir`",
               "(emptyDir)"),
    Annotation("sample-url", "the fleet's object store (`s3://BUCKET/PREFIX`, `gs://...`, "
               "`az://...`): samples are uploaded there, and the samples `emptyDir` becomes "
               "their spool", "(off: samples stay in the pod)"),
    Annotation("sample-store-secret", "a Secret whose keys become the sidecar's environment "
               "for the object store (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, "
               "`AZURE_STORAGE_ACCOUNT_KEY`, ...)", "(none: the pod's workload identity, "
               "e.g. IRSA or GKE/Azure workload identity)"),
    Annotation("sample-store-endpoint", "an S3-compatible endpoint (MinIO, Ceph, R2)",
               "(the provider's)"),
    Annotation("token-secret", "a Secret whose key `token` is the sample API's bearer token",
               "(sample API off)"),
    Annotation("analysis-workers", "analysis worker processes of the sidecar", "1"),
    Annotation("envoy-concurrency", "Envoy worker threads serving the data ports "
               "(`envoy_concurrency`), one core of requests each", "1"),
    Annotation("cpu", "CPU of the sidecar (requests = limits)",
               "one per analysis worker and per Envoy worker thread beyond the first"),
    Annotation("memory", "memory of the sidecar (requests = limits)",
               "512Mi, 256Mi per analysis worker beyond the first, 128Mi per Envoy worker "
               "thread beyond the first"),
    Annotation("image", "the lookout image", "the injector's default image"),
)
KEYS = frozenset(a.key for a in ANNOTATIONS)
# old names still read, each with a warning naming the new one (the new one wins)
RENAMED = {"request-processes": "envoy-concurrency"}


def read(annotations: dict[str, str] | None) -> dict[str, str]:
    """The lookout.io/ annotations of an object, without the prefix."""
    found = {key[len(PREFIX):]: str(value) for key, value in (annotations or {}).items()
             if key.startswith(PREFIX)}
    for old, new in RENAMED.items():
        if old in found:
            found.setdefault(new, found[old])
    return {key: value for key, value in found.items() if key in KEYS}


def deprecated(annotations: dict[str, str] | None) -> list[str]:
    """A warning for each old name an object still uses."""
    return [f"{PREFIX}{old} is deprecated: it is {PREFIX}{new} now"
            for old, new in RENAMED.items() if f"{PREFIX}{old}" in (annotations or {})]
