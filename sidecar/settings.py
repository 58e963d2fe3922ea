"""Each subsystem's own small settings, in the manner of httpx's `Timeout` and `Limits`.

The loader (`config.py`) still reads one flat set of options (the `LOOKOUT_*` variables,
YAML keys and flags the README lists); `of(kind, config)` cuts from it exactly the fields a
subsystem reads, under the same names, so a component cannot depend on an option it was
not given and a test builds one from only what it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TypeVar

T = TypeVar("T")


def of(kind: type[T], source: object) -> T:
    """`kind` filled field by field from `source`'s fields of the same names: the flat
    configuration, which only the composition holds (`composition.py`, `server.py`)."""
    return kind(**{f.name: getattr(source, f.name) for f in fields(kind)})


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """The inference container and how the readiness probe reaches it."""

    upstream: str
    connect_timeout: float
    read_timeout: float
    upstream_pool_size: int
    upstream_keepalive: float
    ready_path: str
    probe_interval: float


@dataclass(frozen=True, slots=True)
class AnalysisSettings:
    """How request images and response detections are read."""

    model_name: str
    model_version: str
    model_path: str
    class_names: tuple[str, ...]
    input_size: int
    conf_threshold: float
    iou_threshold: float
    max_detections: int
    head_layout: str
    image_fields: tuple[str, ...]
    detections_path: str
    box_field: str
    box_format: str
    score_field: str
    class_field: str
    analysis_budget: float
    observe_max_bytes: int


@dataclass(frozen=True, slots=True)
class ShadowSettings:
    """The reference model, its budget, and the primary's decoding for flip checks."""

    model_name: str
    model_version: str
    model_path: str
    conf_threshold: float
    iou_threshold: float
    max_detections: int
    shadow_model_path: str
    shadow_model_sha256: str
    shadow_providers: tuple[str, ...]
    shadow_reference_url: str
    shadow_reference_model: str
    shadow_reference_version: str
    shadow_reference_timeout: float
    shadow_reference_class_names: tuple[str, ...]
    shadow_sample_share: float
    shadow_rate: float
    shadow_burst: int
    shadow_max_busy_share: float
    shadow_queue_size: int
    shadow_batch_size: int
    shadow_threads: int
    shadow_iou_threshold: float
    shadow_conf_threshold: float
    flip_share: float
    reference_flip_share: float
    shadow_recall_floor: float
    proxy_trust_window: int
    proxy_trust_baseline_windows: int
    proxy_trust_margin: float


@dataclass(frozen=True, slots=True)
class GpuSettings:
    """The NVML collector: whether, how often, and how long one sample may hang."""

    gpu_metrics: bool
    gpu_interval: float
    gpu_call_timeout: float


@dataclass(frozen=True, slots=True)
class DriftSettings:
    """The drift detector's baseline, windows and calibration, and the feature store."""

    model_name: str
    model_version: str
    drift_sample_share: float
    drift_baseline_path: str
    drift_baseline_size: int
    drift_window: int
    drift_false_alarm_images: int
    drift_clear_windows: int
    drift_image_size: int
    feature_store_dir: str
    feature_store_hours: int


@dataclass(frozen=True, slots=True)
class SampleSettings:
    """The sampling policy, thumbnails, quotas and the store's limits."""

    sample_dir: str
    sample_strategies: str
    sample_image_size: int
    sample_format: str
    sample_quality: int
    sample_pixelate_classes: tuple[str, ...]
    sample_pixelate_all: bool
    sample_keep_original: bool
    sample_queue_size: int
    sample_bytes_per_day: int
    sample_retention_hours: float
    sample_store_max_bytes: int
    drift_image_size: int
    sample_url: str = ""
    sample_store_endpoint: str = ""
    sample_store_region: str = ""
    sample_store_encryption: str = ""
    sample_store_kms_key: str = ""
    sample_store_class: str = ""
    sample_upload_batch: int = 64
    sample_upload_interval: float = 5.0
    sample_pod_name: str = ""
    sample_gallery: str = "local"
