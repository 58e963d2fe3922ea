"""One typed configuration, from defaults < YAML file < LOOKOUT_* env < command line.

Every value is validated at start-up; a bad one stops the process with a message that
names the key, where it came from, the value and what would be accepted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from lookout.sidecar.preflight import PreflightError, preflight
from lookout.sidecar.samples.bucket import ENCRYPTIONS
from lookout.sidecar.samples.layout import parse_store_url
from lookout.sidecar.samples.policy import DEFAULT_POLICY, parse_policy
from lookout.sidecar.served_models import ModelEntry, format_models, parse_models
from lookout.slo.catalog import ADMIN_CONNECTIONS_CLOSED, MODEL_INFO, MODEL_LABELS_REFUSED

ENV_PREFIX = "LOOKOUT_"


class ConfigError(ValueError):
    """Invalid configuration; the message is meant for the operator as-is."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError("expected a byte count such as 1048576, 512KiB or 64MiB")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def parse_address(text: str) -> Address:
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ValueError("expected HOST:PORT such as 0.0.0.0:8080")
    host = host.strip("[]") or "0.0.0.0"
    return Address(host, int(port))


def parse_optional_address(text: str) -> Address | None:
    """An address, or None (off) for an empty value."""
    return parse_address(text) if text.strip() else None


def parse_grpc_upstream(text: str) -> str:
    """HOST:PORT of a plaintext gRPC server (grpc:// accepted and dropped)."""
    target = text.strip().removeprefix("grpc://").rstrip("/")
    try:
        address = parse_address(target)
    except ValueError:
        raise ValueError("expected HOST:PORT such as 127.0.0.1:8001") from None
    if address.port == 0 or not target.rpartition(":")[0].strip("[]"):
        raise ValueError("expected HOST:PORT with a host and a port, such as 127.0.0.1:8001")
    return str(address)


def parse_upstream(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL such as http://127.0.0.1:8000")
    if parts.query or parts.fragment:
        raise ValueError("the upstream URL takes no query or fragment")
    return text.rstrip("/")


def parse_trace_url_template(text: str) -> str:
    """A trace viewer's URL with `{trace_id}` where the id goes (Grafana Explore over
    Tempo, Jaeger's /trace/{trace_id}); checked now, not when someone clicks it."""
    if not text:
        return ""
    parts = urlsplit(text.replace("{trace_id}", "0"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL")
    if "{trace_id}" not in text:
        raise ValueError("expected {trace_id} where the trace id goes, e.g. "
                         "https://jaeger.example/trace/{trace_id}")
    if "{" in text.replace("{trace_id}", "") or "}" in text.replace("{trace_id}", ""):
        raise ValueError("{trace_id} is the only placeholder it takes")
    return text


REFERENCE_SCHEMES = ("http", "https", "grpc")


def parse_reference_url(text: str) -> str:
    """Where a shared reference model is served; the model is named separately."""
    text = text.strip().rstrip("/")
    if not text:
        return ""
    parts = urlsplit(text)
    if parts.scheme not in REFERENCE_SCHEMES or not parts.hostname:
        raise ValueError("expected http://HOST:PORT, https://HOST:PORT or grpc://HOST:PORT")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ValueError("the port must be a number from 0 to 65535") from None
    if parts.query or parts.fragment or parts.username or \
            (parts.scheme == "grpc" and parts.path):
        raise ValueError("expected only a scheme, a host, a port (and for http(s) a path "
                         "prefix)")
    return text


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def parse_workers(text: str) -> int:
    if text.strip().lower() == "auto":
        return 0
    if not (text.strip().isascii() and text.strip().isdigit()):
        raise ValueError("expected a number of processes, or 0 (auto)")
    return int(text)


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def parse_routes(text: str) -> tuple[str, ...]:
    routes = parse_list(text)
    for route in routes:
        if not route.startswith("/"):
            raise ValueError(f"route template {route!r} must start with '/'")
    return routes


def parse_sha256(text: str) -> str:
    text = text.strip().lower()
    if text and not re.fullmatch(r"[0-9a-f]{64}", text):
        raise ValueError("expected 64 hex digits (sha256sum's output) or nothing")
    return text


def parse_providers(text: str) -> tuple[str, ...]:
    providers = parse_list(text)
    known = ("tensorrt", "cuda", "cpu")
    unknown = [p for p in providers if p not in known]
    if unknown or not providers:
        raise ValueError(f"expected a list of {', '.join(known)}")
    return providers


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise ValueError("expected a value greater than 0")
        return value

    return parse


def parse_ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError("expected a number between 0 and 1")
    return value


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return text

    return parse


def _opt(default: Any, parse: Callable[[str], Any], help: str, *, secret: bool = False,
         separator: str = ",") -> Any:
    """An option; a `secret` one never appears in repr (logs, tracebacks); a list given
    in the YAML file is joined with `separator` before parsing."""
    return field(default=default, repr=not secret,
                 metadata={"parse": parse, "help": help, "separator": separator})


def parse_sample_url(text: str) -> str:
    return str(parse_store_url(text)) if text.strip() else ""


def parse_endpoint(text: str) -> str:
    """An object store's endpoint URL, checked now rather than at the first upload."""
    if not text.strip():
        return ""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL such as http://minio:9000")
    return text.strip().rstrip("/")


def parse_quality(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100:
        raise ValueError("expected a whole number from 1 to 100")
    return value


def parse_sample_strategies(text: str) -> str:
    parse_policy(text)  # raises PolicyError (a ValueError) naming the rule and key
    return text.strip()


DEFAULT_ROUTES = (
    "/v2/models/{model}/infer",
    "/v2/models/{model}/versions/{version}/infer",
    "/v2/models/{model}/ready",
    "/v2/models/{model}",
    "/v2/health/ready",
    "/v2/health/live",
    "/v1/models/{model}:predict",
    "/predict",
    "/detect",
    "/infer",
    "/health",
)


@dataclass(frozen=True, slots=True)
class Config:
    listen: Address = _opt(Address("0.0.0.0", 8080), parse_address,
                           "data port: user traffic, forwarded to the upstream")
    admin: Address = _opt(Address("0.0.0.0", 9090), parse_address,
                          "admin port: /metrics /healthz /readyz")
    upstream: str = _opt("http://127.0.0.1:8000", parse_upstream,
                         "the inference server in the same pod")
    grpc_listen: Address | None = _opt(None, parse_optional_address,
                                       "gRPC data port: every method of the upstream's "
                                       "gRPC server (KServe V2, Triton, health), "
                                       "relayed as bytes to grpc_upstream "
                                       "(docs/GRPC.md); empty: off")
    grpc_upstream: str = _opt("127.0.0.1:8001", parse_grpc_upstream, "the inference "
                              "server's gRPC port in the same pod (HOST:PORT)")
    model_name: str = _opt("yolo", str,
                           "`model` label of the default model: every request in a "
                           "one-model pod; in a multi-model pod, its own V2 name and "
                           "every non-V2 route")
    model_version: str = _opt("unknown", str,
                              "`version` label (the deployed version; compared with "
                              "what V2 responses say they served)")
    model_sha256: str = _opt("", str, "sha256 of the primary model file, for "
                                f"{MODEL_INFO.name}")
    models: tuple[ModelEntry, ...] = _opt((), parse_models,
                                          "the other models the server serves: a YAML "
                                          "list of `name`, `version` and per-model "
                                          "options (see docs/MODELS.md)")
    discover_models: bool = _opt(False, parse_bool, "label models the server answers for "
                                 "that are not configured by their own name (V2 paths); "
                                 "with neither this nor models, every request is "
                                 "model_name's")
    max_models: int = _opt(16, _positive(int),
                           "most model names used as labels, configured and discovered;"
                           " others are `other`; a discovered name needs more than one "
                           "2xx answer, and what the cap turns away is counted "
                           f"(`{MODEL_LABELS_REFUSED.sample_name}`)")
    model_label_idle_seconds: float = _opt(3600.0, _positive(float), "seconds without "
                                           "traffic after which a discovered model gives "
                                           "its label slot back (configured models keep "
                                           "theirs)")
    max_body_bytes: int = _opt(64 * 1024**2, _positive(parse_size),
                               "largest request body accepted; larger gets 413")
    connect_timeout: float = _opt(2.0, _positive(float),
                                  "seconds to connect to the upstream before 502")
    read_timeout: float = _opt(60.0, _positive(float),
                               "seconds to wait for upstream response data before 504")
    upstream_pool_size: int = _opt(256, _positive(int),
                                   "most concurrent keep-alive connections to the upstream")
    upstream_keepalive: float = _opt(60.0, _positive(float),
                                     "seconds an idle upstream connection is kept open")
    preserve_header_case: bool = _opt(False, parse_bool,
                                      "HTTP/1.1 header names reach each side spelled as "
                                      "the other sent them, not lower-cased (names are "
                                      "case-insensitive, RFC 9110 5.1; this is for peers "
                                      "that compare them by case, and costs Envoy about "
                                      "5 percent more CPU per request)")
    observe_max_bytes: int = _opt(16 * 1024**2, _positive(parse_size),
                                  "most response bytes copied into an observation (a raw "
                                  "YOLO head as KServe JSON is about 10 MB)")
    observation_queue_size: int = _opt(1024, _positive(int),
                                       "observations waiting for analysis before drops")
    observation_queue_bytes: int = _opt(64 * 1024**2, _positive(parse_size),
                                        "the shared-memory channel to the analysis "
                                        "workers (in `/dev/shm`, split between them, "
                                        "taken at start-up); each worker's share must "
                                        "hold twice `observe_max_bytes`")
    client_head_timeout: float = _opt(60.0, _positive(float), "seconds a client has to send "
                                      "a whole request head (then 408 and close)")
    client_body_timeout: float = _opt(60.0, _positive(float), "seconds a client may pause "
                                      "between two parts of its body (then 408 and close)")
    client_keepalive_timeout: float = _opt(75.0, _positive(float), "seconds an idle client "
                                           "connection is kept open between requests")
    max_client_connections: int = _opt(1024, _positive(int), "open client connections on "
                                       "the data port; more are closed at once")
    max_head_bytes: int = _opt(32 * 1024, _positive(parse_size), "largest request head "
                               "(request line and headers); larger gets 431")
    ready_path: str = _opt("", str, "upstream HTTP path whose 2xx means ready "
                           "(e.g. /v2/health/ready); empty: a TCP connect suffices")
    probe_interval: float = _opt(5.0, _positive(float), "seconds between upstream probes")
    shutdown_grace: float = _opt(25.0, _positive(float),
                                 "seconds in-flight requests get to finish after SIGTERM")
    routes: tuple[str, ...] = _opt(DEFAULT_ROUTES, parse_routes,
                                   "path templates for the bounded `route` label; "
                                   "other paths are labelled 'other'")
    image_fields: tuple[str, ...] = _opt(("image", "img", "data", "inputs[0]"), parse_list,
                                         "JSON fields searched for a base64 input image")
    model_path: str = _opt("", str, "primary ONNX model file: class names and input size "
                           "are read from its Ultralytics metadata")
    class_names: tuple[str, ...] = _opt((), parse_list,
                                        "class names by id (overrides the model metadata)")
    input_size: int = _opt(640, _positive(int), "model input size in pixels (square), to "
                           "map raw-head boxes back through the letterbox")
    conf_threshold: float = _opt(0.25, parse_ratio, "confidence threshold for raw heads")
    iou_threshold: float = _opt(0.45, parse_ratio, "NMS IoU threshold for raw heads")
    max_detections: int = _opt(300, _positive(int), "most detections kept per image")
    head_layout: str = _opt("auto", _choice("auto", "yolov8", "yolov5", "end2end"),
                            "layout of raw output tensors: auto, or force `yolov8`, "
                            "`yolov5` or `end2end`")
    detections_path: str = _opt("", str, "dotted path to the detection list in a custom "
                                "JSON response (e.g. result.objects)")
    box_field: str = _opt("", str, "box field of a custom detection object")
    box_format: str = _opt("xyxy", _choice("xyxy", "xywh", "ltwh", "xyxyn", "xywhn"),
                           "box format of box_field: corners, centre+size, top-left+size; "
                           "an n suffix: normalised to the image's width and height")
    score_field: str = _opt("", str, "score field of a custom detection object")
    class_field: str = _opt("", str, "class field (id or name) of a custom detection object")
    envoy_concurrency: int = _opt(1, _positive(int), "Envoy worker threads (each with its "
                                  "own rings to the analysis workers)")
    tap_module: str = _opt("", str, "the tap's shared library (liblookout_tap.so); empty: "
                           "the one lookout ships")
    analysis_workers: int = _opt(0, parse_workers, "analysis worker processes (decoding, "
                                 "shadow, drift, samples); 0: the container's CPU limit "
                                 "less envoy_concurrency, at least 1, at most 4")
    analysis_budget: float = _opt(1.0, _positive(float), "seconds one exchange's decoding "
                                  "may cost, estimated from its size and type before "
                                  "parsing; dearer ones are skipped (reason over_budget)")
    shadow_model_path: str = _opt("", str, "reference ONNX model for shadow evaluation; "
                                  "empty: shadow evaluation off")
    shadow_model_sha256: str = _opt("", parse_sha256, "sha256 the reference model file must "
                                    "have; a mismatch disables shadow evaluation")
    shadow_reference_url: str = _opt("", parse_reference_url,
                                     "a reference served by Triton/KServe for many "
                                     "sidecars instead of a local file: "
                                     "`http(s)://HOST:PORT` (V2 REST, binary tensors) "
                                     "or `grpc://HOST:PORT`; see docs/SHADOW.md")
    shadow_reference_model: str = _opt("", str, "the reference's V2 model name on "
                                       "shadow_reference_url")
    shadow_reference_version: str = _opt("", str, "the reference's V2 model version; "
                                         "empty: the server's default")
    shadow_reference_timeout: float = _opt(2.0, _positive(float), "seconds one remote "
                                           "reference request may take before it counts as "
                                           "reference_error")
    shadow_reference_class_names: tuple[str, ...] = _opt(
        (), parse_list, "the remote reference's class names in id order (V2 metadata has "
        "none); empty: the primary model's")
    shadow_providers: tuple[str, ...] = _opt(("tensorrt", "cuda", "cpu"), parse_providers,
                                             "onnxruntime providers in order of "
                                             "preference (GPU ones only where an NVIDIA"
                                             " driver is present; CPU always last)")
    shadow_sample_share: float = _opt(0.1, parse_ratio,
                                      "share of analysed images offered to the reference model")
    shadow_rate: float = _opt(5.0, _positive(float),
                              "most shadow evaluations per second (token bucket rate)")
    shadow_burst: int = _opt(16, _positive(int), "token bucket size for shadow evaluations")
    shadow_max_busy_share: float = _opt(0.25, parse_ratio, "most share of wall time the "
                                        "shadow worker may spend inferring")
    shadow_queue_size: int = _opt(64, _positive(int),
                                  "sampled images waiting for the reference model before drops")
    shadow_batch_size: int = _opt(8, _positive(int), "most images per reference-model run")
    shadow_threads: int = _opt(1, _positive(int),
                               "onnxruntime intra-op threads for the shadow models on the CPU")
    shadow_iou_threshold: float = _opt(0.5, parse_ratio,
                                       "IoU at which a primary box matches a reference box")
    shadow_conf_threshold: float = _opt(0.25, parse_ratio,
                                        "confidence threshold for the reference model's boxes")
    flip_share: float = _opt(0.0, parse_ratio, "share of shadow samples also checked for flip "
                             "consistency with the primary model at model_path")
    reference_flip_share: float = _opt(1.0, parse_ratio,
                                       "share of shadow samples the reference also sees"
                                       " mirrored (in the same batch, twice the "
                                       "reference's compute): its boxes that survive "
                                       "feed the robust recall proxy (the recall SLO "
                                       "and canary gate), its flip consistency the "
                                       "trust signal")
    shadow_recall_floor: float = _opt(0.35, parse_ratio,
                                      "reference confidence from which a flip-confirmed"
                                      " box counts for the robust recall proxy (chosen "
                                      "on clean scenes: docs/QUALITY.md)")
    proxy_trust_window: int = _opt(20, _positive(int), "evaluated images per window of the "
                                   "proxy trust signal")
    proxy_trust_baseline_windows: int = _opt(20, _positive(int), "first windows whose "
                                             "reference behaviour is the normal band")
    proxy_trust_margin: float = _opt(0.25, _positive(float), "how far beyond the normal "
                                     "band, as a share of its width, a window may go and "
                                     "stay trusted")
    drift: bool = _opt(True, parse_bool, "compute input/output features and test for drift")
    drift_sample_share: float = _opt(1.0, parse_ratio, "share of analysed images whose "
                                     "features feed the drift detector")
    drift_baseline_path: str = _opt("", str, "baseline profile written by `lookout shadow "
                                    "baseline`; empty: learn from the first images")
    drift_baseline_size: int = _opt(1000, _positive(int),
                                    "images the baseline is learnt from when none is loaded")
    drift_window: int = _opt(100, _positive(int), "values per drift test window")
    drift_false_alarm_images: int = _opt(100_000, _positive(int),
                                         "expected images between false drift alarms on a "
                                         "stationary stream (the calibration target)")
    drift_clear_windows: int = _opt(2, _positive(int),
                                    "consecutive quiet windows that clear a drift alarm")
    drift_image_size: int = _opt(256, _positive(int),
                                 "longest side images are decoded to for drift features")
    feature_store_dir: str = _opt("", str, "directory where per-image features are kept "
                                  "for `lookout shadow report`; empty: not kept")
    feature_store_hours: int = _opt(72, _positive(int), "hours of features kept")
    sample_dir: str = _opt("", str, "directory of the sample store (thumbnails and their "
                           "index); empty: no sampling")
    sample_strategies: str = _opt(DEFAULT_POLICY, parse_sample_strategies,
                                  "ordered sampling rules with their quotas (see "
                                  "docs/SAMPLES.md)", separator=";")
    sample_image_size: int = _opt(320, _positive(int), "longest side of stored thumbnails")
    sample_format: str = _opt("jpeg", _choice("jpeg", "webp"), "thumbnail encoding")
    sample_quality: int = _opt(80, parse_quality, "thumbnail encoder quality (1-100)")
    sample_pixelate_classes: tuple[str, ...] = _opt((), parse_list, "classes whose boxes are "
                                                    "pixelated in thumbnails (e.g. person)")
    sample_pixelate_all: bool = _opt(False, parse_bool, "pixelate whole thumbnails")
    sample_keep_original: bool = _opt(False, parse_bool, "also keep the full-size original "
                                      "image as the client sent it")
    sample_queue_size: int = _opt(32, _positive(int),
                                  "chosen samples waiting to be written before drops")
    sample_bytes_per_day: int = _opt(256 * 1024**2, _positive(parse_size),
                                     "most sample bytes written per UTC day, all strategies")
    sample_retention_hours: float = _opt(168.0, _positive(float), "hours samples are kept")
    sample_store_max_bytes: int = _opt(1024**3, _positive(parse_size),
                                       "most bytes the sample store holds; oldest go first")
    sample_url: str = _opt("", parse_sample_url, "object store the samples also go to, "
                           "shared by the fleet: s3://BUCKET/PREFIX, gs://..., az://...; the "
                           "sample_dir becomes its spool; empty: off")
    sample_store_endpoint: str = _opt("", parse_endpoint, "the object store's endpoint when "
                                      "not the provider's own (MinIO, Ceph, R2); empty: the "
                                      "provider's, or AWS_ENDPOINT_URL")
    sample_store_region: str = _opt("", str, "the bucket's region; empty: AWS_REGION, "
                                    "else us-east-1")
    sample_store_encryption: str = _opt("", _choice(*ENCRYPTIONS), "S3 server-side "
                                        "encryption of uploaded samples (AES256, aws:kms); "
                                        "empty: the bucket's default")
    sample_store_kms_key: str = _opt("", str, "KMS key id with sample_store_encryption: "
                                     "aws:kms; empty: the account's default key")
    sample_store_class: str = _opt("", str, "storage class of uploaded samples (e.g. "
                                   "STANDARD_IA, NEARLINE, Cool); empty: the bucket's default")
    sample_upload_batch: int = _opt(64, _positive(int), "most samples uploaded per flush "
                                    "(one manifest per model-hour each)")
    sample_upload_interval: float = _opt(5.0, _positive(float), "seconds between flushes "
                                         "of the spool to the object store")
    sample_pod_name: str = _opt("", str, "the pod's name in uploaded samples; empty: "
                                "$POD_NAME, else the host name")
    sample_gallery: str = _opt("local", _choice("local", "fleet"), "what the admin port's "
                               "/samples API and /ui gallery show: this pod's store, or the "
                               "fleet's (sample_url: every pod's samples)")
    admin_token: str = _opt("", str, "bearer token for the sample API on the admin port; "
                            "empty (and no admin_token_file): the API is off", secret=True)
    admin_token_file: str = _opt("", str,
                                 "file holding the token (a mounted Secret); wins over "
                                 "`admin_token`; re-read within 2 s of a change (in "
                                 "place or a symlink swap), which ends every gallery "
                                 "session made with the old token")
    admin_max_connections: int = _opt(256, _positive(int),
                                      "open admin-port connections; at the cap the one "
                                      "idle longest is closed to make room, and a new "
                                      "one is closed only when all are busy "
                                      f"(`{ADMIN_CONNECTIONS_CLOSED.sample_name}`)")
    admin_head_timeout: float = _opt(10.0, _positive(float), "seconds a client of the admin "
                                     "port has to send a whole request head (then closed)")
    admin_idle_timeout: float = _opt(60.0, _positive(float), "seconds an idle admin-port "
                                     "connection is kept open")
    admin_guess_limit: int = _opt(20, _positive(int),
                                  "wrong admin-token guesses (bearer or login form) one"
                                  " client address may make per admin_guess_window; "
                                  "then 429 with `Retry-After` until the window ends")
    admin_guess_limit_total: int = _opt(100, _positive(int), "wrong admin-token guesses from "
                                        "all addresses together per admin_guess_window; "
                                        "then 429 for every guess until the window ends")
    admin_guess_window: float = _opt(60.0, _positive(float), "seconds over which wrong "
                                     "admin-token guesses are counted")
    trace_url_template: str = _opt("", parse_trace_url_template, "trace viewer URL the "
                                   "gallery links each sample's trace to, with {trace_id} "
                                   "(Tempo through Grafana, Jaeger); empty: no link")
    gpu_metrics: bool = _opt(True, parse_bool,
                             "sample the pod's GPUs through NVML (utilisation, memory, "
                             "the pod's processes' memory, throttling, ECC, XIDs); "
                             "without a driver it says so once and exports `gpu_up 0`")
    gpu_interval: float = _opt(10.0, _positive(float), "seconds between NVML samples")
    gpu_call_timeout: float = _opt(5.0, _positive(float),
                                   "seconds an NVML sample may take before it counts as"
                                   ' hung (`reason="timeout"`); a hung call holds one '
                                   "thread, never a scrape")
    log_level: str = _opt("info", _choice("debug", "info", "warning", "error"), "log level")
    event_loop: str = _opt("auto", _choice("auto", "uvloop", "asyncio"),
                           "event loop implementation")

    @classmethod
    def option_help(cls) -> dict[str, str]:
        return {f.name: f.metadata["help"] for f in fields(cls)}


def _coerce(name: str, raw: Any, source: str) -> Any:
    spec = next(f for f in fields(Config) if f.name == name)
    parse = spec.metadata["parse"]
    if name == "models":
        raw = format_models(raw)
    elif isinstance(raw, list | tuple):
        raw = spec.metadata["separator"].join(str(item) for item in raw)
    elif isinstance(raw, bool):
        raw = str(raw).lower()
    try:
        return parse(str(raw))
    except ValueError as error:
        raise ConfigError(f"{source}: invalid value {raw!r}: {error}") from None


def per_model(config: Config) -> dict[str, Config]:
    """Each served model's own configuration: the base with its overrides, each parsed so
    a bad value names `models[i].key` (the default model's is `config`)."""
    configs = {config.model_name: config}
    for index, entry in enumerate(config.models):
        values = {key: _coerce(key, raw, f"models[{index}].{key}")
                  for key, raw in entry.overrides}
        base = configs.get(entry.name, config)
        configs[entry.name] = replace(base, model_name=entry.name,
                                      model_version=entry.version, **values)
    return configs


def _yaml_values(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"config file {path}: cannot read it ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path}: not valid YAML ({error})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path}: expected a mapping of option: value")
    return {str(key).replace("-", "_"): value for key, value in loaded.items()}


# options of the retired Python request path, and what replaces each under Envoy
REMOVED_OPTIONS = {
    "data_plane": "nothing: Envoy is the only data plane",
    "request_processes": "envoy_concurrency (Envoy's worker threads)",
    "stream_threshold_bytes": "nothing: Envoy streams every response and the tap copies "
                              "at most observe_max_bytes of it",
    "grpc_max_message_bytes": "nothing: Envoy bounds each connection's buffers and HTTP/2 "
                              "windows; a per-message limit is the inference server's own "
                              "(Triton/KServe max message size)",
}


def _refuse_removed(name: str, where: str) -> None:
    if name in REMOVED_OPTIONS:
        raise ConfigError(f"{where}: {name} was an option of lookout's former Python "
                          f"request path; Envoy serves the data ports now: use "
                          f"{REMOVED_OPTIONS[name]}")


def load_config(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> Config:
    """Merge the sources (later wins) and validate every value."""
    env = os.environ if env is None else env
    known = {f.name for f in fields(Config)}
    values: dict[str, Any] = {}

    file_path = config_file or env.get(f"{ENV_PREFIX}CONFIG")
    if file_path:
        for key, raw in _yaml_values(Path(file_path)).items():
            _refuse_removed(key, f"config file {file_path}")
            if key not in known:
                raise ConfigError(
                    f"config file {file_path}: unknown key {key!r}; "
                    f"known keys: {', '.join(sorted(known))}"
                )
            values[key] = _coerce(key, raw, f"config file {file_path}, key {key!r}")

    for name in REMOVED_OPTIONS:
        if f"{ENV_PREFIX}{name.upper()}" in env:
            _refuse_removed(name, f"environment variable {ENV_PREFIX}{name.upper()}")
    for name in known:
        env_name = f"{ENV_PREFIX}{name.upper()}"
        if env_name in env:
            values[name] = _coerce(name, env[env_name], f"environment variable {env_name}")

    for name, raw in (cli or {}).items():
        if raw is not None:
            flag = "--" + name.replace("_", "-")
            values[name] = _coerce(name, raw, f"command-line option {flag}")

    config = Config(**values)
    if config.sample_gallery == "fleet" and not config.sample_url:
        raise ConfigError("sample_gallery fleet: needs sample_url, the fleet's store")
    if config.sample_url and not config.sample_dir:
        raise ConfigError(f"sample_url {config.sample_url}: needs sample_dir, the local spool "
                          f"samples wait in until they are uploaded (an emptyDir will do)")
    for name, model_config in per_model(config).items():  # every model's values parse
        try:
            preflight(model_config)
        except PreflightError as error:
            where = "" if model_config is config else f"models entry {name!r}, "
            raise ConfigError(f"{where}{error}") from None
    return config
