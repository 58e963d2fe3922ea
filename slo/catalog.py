"""The one metrics catalog: every metric lookout exports, declared once.

The sidecar registers from this module; alert rules, dashboards, runbooks and the
canary judge read names from it. Nothing else spells a metric name as a string, so a
rename happens here and everywhere at once. This module is pure data on purpose: the
`slo` package may import it without pulling in the data plane.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class MetricType(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """A metric's contract: what PromQL written elsewhere may rely on."""

    name: str
    type: MetricType
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    @property
    def sample_name(self) -> str:
        """The series name as scraped (`_total` for counters)."""
        return f"{self.name}_total" if self.type is MetricType.COUNTER else self.name

    @property
    def bucket_name(self) -> str:
        return f"{self.name}_bucket"

    @property
    def count_name(self) -> str:
        return f"{self.name}_count"

    @property
    def sum_name(self) -> str:
        return f"{self.name}_sum"


# Request latency buckets: dense between 5 ms and 1 s where YOLO serving lives, so a
# latency SLO threshold (which must be a bucket boundary) can sit where teams need it.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0,
)
BYTES_BUCKETS: tuple[float, ...] = tuple(float(2**p) for p in range(8, 28, 2))  # 256 B .. 64 MiB
DETECTION_COUNT_BUCKETS: tuple[float, ...] = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 100, 300)
CONFIDENCE_BUCKETS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 21))
# relative box area: small objects (<0.1% of the frame) to frame-filling ones
AREA_RATIO_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0,
)
SHADOW_DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)

IOU_BUCKETS: tuple[float, ...] = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)
# primary minus reference confidence on matched boxes
CONFIDENCE_GAP_BUCKETS: tuple[float, ...] = (
    -0.5, -0.3, -0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2, 0.3, 0.5,
)

_MVR = ("model", "version", "route")
_MV = ("model", "version")
_MVC = ("model", "version", "class")

REQUESTS = MetricSpec(
    "lookout_requests", MetricType.COUNTER,
    "Requests through the data port by response code; sidecar-made responses carry "
    "a 'sidecar_' prefix on the code.",
    (*_MVR, "code"),
)
REQUEST_DURATION = MetricSpec(
    "lookout_request_duration_seconds", MetricType.HISTOGRAM,
    "Time from request received to response fully sent, as the client sees it.",
    _MVR, LATENCY_BUCKETS,
)
UPSTREAM_DURATION = MetricSpec(
    "lookout_upstream_duration_seconds", MetricType.HISTOGRAM,
    "Time from forwarding to the upstream until its response headers and body arrived.",
    _MVR, LATENCY_BUCKETS,
)
REQUEST_BYTES = MetricSpec(
    "lookout_request_bytes", MetricType.HISTOGRAM,
    "Request body size in bytes.", _MVR, BYTES_BUCKETS,
)
RESPONSE_BYTES = MetricSpec(
    "lookout_response_bytes", MetricType.HISTOGRAM,
    "Response body size in bytes.", _MVR, BYTES_BUCKETS,
)
DETECTIONS_PER_REQUEST = MetricSpec(
    "lookout_detections_per_request", MetricType.HISTOGRAM,
    "Detections returned by the primary model per request.", _MV, DETECTION_COUNT_BUCKETS,
)
DETECTIONS = MetricSpec(
    "lookout_detections", MetricType.COUNTER,
    "Detections returned by the primary model, by class.", _MVC,
)
DETECTION_CONFIDENCE = MetricSpec(
    "lookout_detection_confidence", MetricType.HISTOGRAM,
    "Confidence of the primary model's detections.", _MV, CONFIDENCE_BUCKETS,
)
DETECTION_BOX_AREA = MetricSpec(
    "lookout_detection_box_area_ratio", MetricType.HISTOGRAM,
    "Box area of the primary model's detections as a share of the image area.",
    _MV, AREA_RATIO_BUCKETS,
)
OBSERVATIONS = MetricSpec(
    "lookout_observations", MetricType.COUNTER,
    "Exchanges that reached analysis, by outcome: analysed, parse_failed (see "
    "lookout_parse_failures_total), not_analysed (no 2xx body) or lost (a worker died "
    "holding it). With the observations queue's drops they account for every request.",
    (*_MV, "outcome"),
)
PARSE_FAILURES = MetricSpec(
    "lookout_parse_failures", MetricType.COUNTER,
    "Requests or responses the sidecar could not decode, by reason.", (*_MV, "reason"),
)
SHADOW_PRIMARY_BOXES = MetricSpec(
    "lookout_shadow_primary_boxes", MetricType.COUNTER,
    "Primary-model boxes on shadow-evaluated images (precision proxy denominator).", _MVC,
)
SHADOW_REFERENCE_BOXES = MetricSpec(
    "lookout_shadow_reference_boxes", MetricType.COUNTER,
    "Reference-model boxes on shadow-evaluated images (recall proxy denominator).", _MVC,
)
SHADOW_MATCHED_BOXES = MetricSpec(
    "lookout_shadow_matched_boxes", MetricType.COUNTER,
    "Primary boxes matched by a reference box of the same class (proxy numerator).", _MVC,
)
SHADOW_EVALUATIONS = MetricSpec(
    "lookout_shadow_evaluations", MetricType.COUNTER,
    "Sampled images by shadow outcome: ok, over_budget, dropped (queue full), no_image, "
    "error, reference_error (a remote reference unreachable, slow or failing).",
    (*_MV, "outcome"),
)
SHADOW_MATCH_IOU = MetricSpec(
    "lookout_shadow_match_iou", MetricType.HISTOGRAM,
    "IoU between each matched primary box and its reference box.", _MV, IOU_BUCKETS,
)
SHADOW_CONFIDENCE_GAP = MetricSpec(
    "lookout_shadow_confidence_gap", MetricType.HISTOGRAM,
    "Primary minus reference confidence on each matched box.", _MV, CONFIDENCE_GAP_BUCKETS,
)
FLIP_BOXES = MetricSpec(
    "lookout_flip_boxes", MetricType.COUNTER,
    "Primary-model boxes on flip-tested images, on the original and on the horizontally "
    "flipped view (view: original, flipped).", (*_MV, "view"),
)
FLIP_MATCHED_BOXES = MetricSpec(
    "lookout_flip_matched_boxes", MetricType.COUNTER,
    "Boxes found on both views of a flip-tested image; flip consistency = "
    "2 x matched / (original + flipped).", _MV,
)
SHADOW_CONFIRMED_REFERENCE_BOXES = MetricSpec(
    "lookout_shadow_confirmed_reference_boxes", MetricType.COUNTER,
    "Reference boxes of flip-checked images that the reference is sure of: confidence at "
    "least shadow_recall_floor and found again on the mirrored frame. Robust recall proxy "
    "= confirmed matched / confirmed reference boxes.", _MVC,
)
SHADOW_CONFIRMED_MATCHED_BOXES = MetricSpec(
    "lookout_shadow_confirmed_matched_boxes", MetricType.COUNTER,
    "Primary boxes matched to a confirmed reference box (the robust recall proxy's "
    "numerator).", _MVC,
)
PROXY_TRUST = MetricSpec(
    "lookout_proxy_trust", MetricType.GAUGE,
    "1 while the reference model behaves as it did on the pod's normal traffic (boxes per "
    "image, flip consistency), 0 when the last window left that band: the "
    "proxies are then not to be believed. Absent while the band is learnt.", _MV,
)
PROXY_DISTRUST = MetricSpec(
    "lookout_proxy_distrust", MetricType.GAUGE,
    "1 while this reason makes the last window's proxies untrustworthy (reason: "
    "reference_boxes, reference_flip_consistency), else 0.",
    (*_MV, "reason"),
)
PROXY_TRUST_MARGIN_FACTOR = MetricSpec(
    "lookout_proxy_trust_margin_factor", MetricType.GAUGE,
    "What the trust band's margin is multiplied by: 1 normally, less while the model's "
    "newest audit found a proxy outside its interval (by more than the bias alert's "
    "margin) that the trust signal had called trusted. Set at each judged window.", _MV,
)
SHADOW_UNTRUSTED = MetricSpec(
    "lookout_shadow_untrusted", MetricType.COUNTER,
    "What was evaluated in windows whose proxies are not to be believed (count: images, "
    "primary, reference, matched, confirmed_reference, confirmed_matched boxes): the "
    "quality SLOs subtract it, so time the reference is out of its distribution burns "
    "no budget and counts as unknown.", (*_MV, "count"),
)
AUDIT_ESTIMATE = MetricSpec(
    "lookout_audit_estimate", MetricType.GAUGE,
    "The newest labelled audit of a model version (lookout audit import), per class and "
    "'all': for rate precision or recall, quantity audited (the estimate from the labels), "
    "lower and upper (its 95% interval), proxy (the shadow proxy over the same images). A "
    "proxy outside [lower, upper] is biased on this traffic.",
    (*_MVC, "rate", "quantity"),
)
AUDIT_TIMESTAMP = MetricSpec(
    "lookout_audit_timestamp_seconds", MetricType.GAUGE,
    "End of the traffic window the newest audit of a model version drew its images from "
    "(unix seconds): time() minus it is the audit's age.", _MV,
)
AUDIT_IMAGES = MetricSpec(
    "lookout_audit_images", MetricType.GAUGE,
    "Labelled random images behind the newest audit of a model version.", _MV,
)
SUSPECT_DETECTIONS = MetricSpec(
    "lookout_suspect_detections", MetricType.COUNTER,
    "Boxes both models agree on where both may be wrong alike (reason: border, "
    "low_texture; drift_jump: an image's boxes while input drift is alarmed and its "
    "detections jump); the `suspect` sampling strategy keeps such frames for review.",
    (*_MV, "reason"),
)
SHADOW_DURATION = MetricSpec(
    "lookout_shadow_duration_seconds", MetricType.HISTOGRAM,
    "Reference-model inference time per evaluated image.", _MV, SHADOW_DURATION_BUCKETS,
)
DRIFT_STATISTIC = MetricSpec(
    "lookout_drift_statistic", MetricType.GAUGE,
    "Latest drift statistic per input/output feature: binned Kolmogorov-Smirnov "
    "distance for continuous features, chi-square for categorical ones.", (*_MV, "feature"),
)
DRIFT_ALARM = MetricSpec(
    "lookout_drift_alarm", MetricType.GAUGE,
    "1 while the drift detector for a feature is in alarm (raised above the calibrated "
    "threshold, not yet cleared), else 0.", (*_MV, "feature"),
)
DRIFT_THRESHOLD = MetricSpec(
    "lookout_drift_threshold", MetricType.GAUGE,
    "The calibrated alarm threshold of lookout_drift_statistic per feature.", (*_MV, "feature"),
)
DRIFT_PSI = MetricSpec(
    "lookout_drift_psi", MetricType.GAUGE,
    "Population stability index of the latest window against the baseline, per feature.",
    (*_MV, "feature"),
)
DRIFT_WINDOWS = MetricSpec(
    "lookout_drift_windows", MetricType.COUNTER,
    "Drift windows tested per feature (a stalled counter means no drift testing).",
    (*_MV, "feature"),
)
SAMPLES_STORED = MetricSpec(
    "lookout_samples_stored", MetricType.COUNTER,
    "Input samples written to the sample store, by sampling strategy.", ("strategy",),
)
SAMPLES_DROPPED = MetricSpec(
    "lookout_samples_dropped", MetricType.COUNTER,
    "Samples not stored, by reason (quota, queue_full, disk_full, ...).", ("reason",),
)
SAMPLE_STORE_BYTES = MetricSpec(
    "lookout_sample_store_bytes", MetricType.GAUGE, "Bytes on disk in the sample store.",
)
SAMPLES_UPLOADED = MetricSpec(
    "lookout_samples_uploaded", MetricType.COUNTER,
    "Samples whose files and manifest entry reached the fleet's object store (sample_url).",
)
SAMPLE_UPLOAD_FAILURES = MetricSpec(
    "lookout_sample_upload_failures", MetricType.COUNTER,
    "Failed uploads of a batch of samples to the object store, by reason (unreachable, "
    "denied, not_found, error); the batch stays in the spool and is retried.", ("reason",),
)
SAMPLE_SPOOL_BYTES = MetricSpec(
    "lookout_sample_spool_bytes", MetricType.GAUGE,
    "Bytes of samples in the local spool not yet uploaded to the object store.",
)
SAMPLE_SPOOL_OLDEST_AGE = MetricSpec(
    "lookout_sample_spool_oldest_age_seconds", MetricType.GAUGE,
    "Age of the oldest sample not yet uploaded to the object store (0: none waiting).",
)
QUEUE_DROPPED = MetricSpec(
    "lookout_queue_dropped", MetricType.COUNTER,
    "Items dropped because an internal queue was full (the request path never waits).",
    ("queue",),
)
SPANS_RESERVED = MetricSpec(
    "lookout_spans_reserved", MetricType.COUNTER,
    "Spans of sampled or failed exchanges whose observation was dropped (a full queue), "
    "kept in the tap's reserve so their traces survive analysis that is behind.",
)
COMPONENT_ERRORS = MetricSpec(
    "lookout_component_errors", MetricType.COUNTER,
    "Failures inside lookout's own components; user requests are unaffected (fail-open).",
    ("component",),
)
CLIENT_REFUSED = MetricSpec(
    "lookout_client_refused", MetricType.COUNTER,
    "Client requests or connections lookout refused or closed itself before they reached "
    "the upstream: malformed, over a limit, or timed out.",
    ("reason",),
)
ADMIN_CONNECTIONS_CLOSED = MetricSpec(
    "lookout_admin_connections_closed", MetricType.COUNTER,
    "Admin-port connections lookout closed itself: shed_idle (an idle one, to make room "
    "at admin_max_connections), at_capacity (a new one, every other busy), head_timeout, "
    "idle_timeout.",
    ("reason",),
)
ADMIN_TOKEN_REFUSED = MetricSpec(
    "lookout_admin_token_refused", MetricType.COUNTER,
    "Admin-token guesses refused, by door (api: bearer token on /samples; gallery: the "
    "login form and links) and reason (wrong, or limited: too many wrong guesses from the "
    "address or in all, answered 429 without comparing).",
    ("door", "reason"),
)
MODEL_LABELS_REFUSED = MetricSpec(
    "lookout_model_labels_refused", MetricType.COUNTER,
    "Discovered model names that had earned a label (more than one 2xx answer) but found "
    "all max_models label slots taken; their traffic is labelled 'other'.",
)
UPSTREAM_UP = MetricSpec(
    "lookout_upstream_up", MetricType.GAUGE,
    "1 when the last probe of the inference container succeeded, else 0.",
)
GPU_UTILIZATION = MetricSpec(
    "lookout_gpu_utilization_ratio", MetricType.GAUGE,
    "GPU busy ratio (0..1) from NVML.", ("gpu",),
)
GPU_MEMORY_USED = MetricSpec(
    "lookout_gpu_memory_used_bytes", MetricType.GAUGE,
    "GPU memory in use from NVML.", ("gpu",),
)
GPU_MEMORY_TOTAL = MetricSpec(
    "lookout_gpu_memory_total_bytes", MetricType.GAUGE,
    "GPU memory installed, from NVML (the denominator of memory-full alerts).", ("gpu",),
)
GPU_UP = MetricSpec(
    "lookout_gpu_up", MetricType.GAUGE,
    "1 when the last NVML sample of every visible GPU succeeded; 0 without NVML or a GPU, "
    "or after a failed or hung sample (the other GPU series then keep their last value).",
)
GPU_INFO = MetricSpec(
    "lookout_gpu_info", MetricType.GAUGE,
    "Always 1; the visible GPUs (a MIG instance's gpu label is 'index:instance'), to join "
    "with DCGM's series by uuid.", ("gpu", "uuid", "name"),
)
GPU_PROCESS_MEMORY = MetricSpec(
    "lookout_gpu_process_memory_bytes", MetricType.GAUGE,
    "GPU memory used by this pod's processes (the inference server's, the reference "
    "model's), as NVML reports it per process.", ("gpu",),
)
GPU_THROTTLE_SECONDS = MetricSpec(
    "lookout_gpu_throttle_seconds", MetricType.COUNTER,
    "Seconds the GPU's clocks were held down, by NVML's reason (power cap, thermal, "
    "hardware slowdown, power brake, sync boost).", ("gpu", "reason"),
)
GPU_ECC_ERRORS = MetricSpec(
    "lookout_gpu_ecc_errors", MetricType.COUNTER,
    "GPU memory ECC errors since the driver loaded (type: corrected, uncorrected).",
    ("gpu", "type"),
)
GPU_XID_ERRORS = MetricSpec(
    "lookout_gpu_xid_errors", MetricType.COUNTER,
    "Critical XID events the driver reported (xid: the code for the well-known ones, "
    "else 'other').", ("gpu", "xid"),
)
GPU_COLLECTOR_FAILURES = MetricSpec(
    "lookout_gpu_collector_failures", MetricType.COUNTER,
    "NVML samples that failed (reason: error) or did not return in time (timeout).",
    ("reason",),
)
MODEL_INFO = MetricSpec(
    "lookout_model_info", MetricType.GAUGE,
    "Always 1; identifies the models in service (role: primary or reference). "
    "served_name and served_version are what the model is called where it runs: a remote "
    "reference's V2 name and version, a local file's name.",
    ("model", "version", "sha256", "role", "served_name", "served_version"),
)

SERVED_RESPONSES = MetricSpec(
    "lookout_model_served_responses", MetricType.COUNTER,
    "Inference responses by the model version the server says answered them (V2 "
    "`model_version`), beside the deployed `version` lookout was configured with: a "
    "served_version other than the deployed one means stale weights or a partial "
    "roll-out. At most a few distinct served versions per model; more are 'other'.",
    (*_MV, "served_version"),
)

ALL: tuple[MetricSpec, ...] = (
    REQUESTS, REQUEST_DURATION, UPSTREAM_DURATION, REQUEST_BYTES, RESPONSE_BYTES,
    DETECTIONS_PER_REQUEST, DETECTIONS, DETECTION_CONFIDENCE, DETECTION_BOX_AREA,
    OBSERVATIONS, PARSE_FAILURES,
    SHADOW_PRIMARY_BOXES, SHADOW_REFERENCE_BOXES, SHADOW_MATCHED_BOXES,
    SHADOW_EVALUATIONS, SHADOW_DURATION, SHADOW_MATCH_IOU, SHADOW_CONFIDENCE_GAP,
    FLIP_BOXES, FLIP_MATCHED_BOXES, SHADOW_CONFIRMED_REFERENCE_BOXES,
    SHADOW_CONFIRMED_MATCHED_BOXES, PROXY_TRUST, PROXY_DISTRUST, PROXY_TRUST_MARGIN_FACTOR,
    SHADOW_UNTRUSTED,
    SUSPECT_DETECTIONS, AUDIT_ESTIMATE, AUDIT_TIMESTAMP, AUDIT_IMAGES,
    DRIFT_STATISTIC, DRIFT_ALARM, DRIFT_THRESHOLD, DRIFT_PSI, DRIFT_WINDOWS,
    SAMPLES_STORED, SAMPLES_DROPPED, SAMPLE_STORE_BYTES,
    SAMPLES_UPLOADED, SAMPLE_UPLOAD_FAILURES, SAMPLE_SPOOL_BYTES, SAMPLE_SPOOL_OLDEST_AGE,
    QUEUE_DROPPED, COMPONENT_ERRORS, CLIENT_REFUSED, ADMIN_CONNECTIONS_CLOSED,
    ADMIN_TOKEN_REFUSED, MODEL_LABELS_REFUSED, UPSTREAM_UP,
    GPU_UTILIZATION, GPU_MEMORY_USED, GPU_MEMORY_TOTAL, GPU_UP, GPU_INFO, GPU_PROCESS_MEMORY,
    GPU_THROTTLE_SECONDS, GPU_ECC_ERRORS, GPU_XID_ERRORS, GPU_COLLECTOR_FAILURES,
    MODEL_INFO, SERVED_RESPONSES,
)

# How far outside an audit's 95% interval a proxy may lie (LookoutProxyBiasHigh's default
# `proxy_bias_margin`, and the sidecar's rule for an audit that disagrees with the trust
# signal): one number, so the alert and the trust band cannot judge an audit differently.
PROXY_BIAS_MARGIN = 0.05

# Response codes the sidecar generates itself are exported as e.g. `sidecar_502`, so
# PromQL can tell them from the upstream's own `502` while one regex still counts both.
SIDECAR_CODE_PREFIX = "sidecar_"
# On the gRPC port `code` holds the status name (`OK`, `UNAVAILABLE`). These are the
# statuses that are the server's fault, as OpenTelemetry's gRPC conventions mark a server
# span's error; the others (NOT_FOUND, INVALID_ARGUMENT...) are the caller's, like a 4xx.
GRPC_SERVER_ERROR_CODES = ("UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL",
                           "UNAVAILABLE", "DATA_LOSS")
_SERVER_ERRORS = f"(5..|{'|'.join(GRPC_SERVER_ERROR_CODES)})"
SERVER_ERROR_CODE_REGEX = f"({SIDECAR_CODE_PREFIX})?{_SERVER_ERRORS}"
# only the server errors lookout made itself (the upstream could not be reached)
SIDECAR_SERVER_ERROR_CODE_REGEX = f"{SIDECAR_CODE_PREFIX}{_SERVER_ERRORS}"
# every failed request, the caller's errors too: any HTTP 4xx/5xx, any gRPC status but OK
FAILED_CODE_REGEX = f"({SIDECAR_CODE_PREFIX})?([45]..|[A-Z_]{{3,}})"


def sidecar_code(status: int | str) -> str:
    """The `code` label of a response the sidecar made itself (an HTTP status, or a gRPC
    status name)."""
    return f"{SIDECAR_CODE_PREFIX}{status}"
