"""The models one pod serves, as the inference server names them.

Triton, KServe and MLServer serve several models behind one port, each under
`/v2/models/{name}[/versions/{v}]/...`. In a pod that lists its models (`models`) or
discovers them (`discover_models`), the `model` label of every metric is the name the
request path gives, when it is a model lookout knows: the configured default
(`model_name`, which also answers every non-V2 route), the `models` list, or one
discovered in service. A pod with neither is a one-model pod: every request is
`model_name`'s, whatever the path calls it, as the label has always been.

Discovery admits a name once the upstream has answered it with a 2xx more than once,
so only models the server really has become labels (a client inventing names gets 404s
from the server, and `other`), and at most `max_models` of them. Everything else is
`other`. A discovered name with no traffic for `model_label_idle_seconds` gives its
slot back, so names that came and went cannot keep a model added later at `other`.

Each configured model has its own decode settings, reference model, drift baseline and
sampling rules: the base configuration with its overrides (`config.per_model`), cut once
into its `ModelSettings`, so every stage is built for a model exactly as for the one
model of a simple pod.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import unquote

import yaml

from lookout.sidecar.settings import (
    AnalysisSettings,
    DriftSettings,
    GpuSettings,
    SampleSettings,
    ShadowSettings,
)

OTHER_MODEL = "other"
UNKNOWN_VERSION = "unknown"
# options a `models` entry may set for its model; the rest are the pod's
MODEL_KEYS = (
    "model_path", "model_sha256", "class_names", "input_size", "conf_threshold",
    "iou_threshold", "max_detections", "head_layout", "detections_path", "box_field",
    "box_format", "score_field", "class_field", "shadow_model_path", "shadow_model_sha256",
    "shadow_reference_url", "shadow_reference_model", "shadow_reference_version",
    "shadow_reference_class_names",
    "shadow_sample_share", "shadow_rate", "shadow_conf_threshold", "shadow_iou_threshold",
    "drift", "drift_baseline_path", "drift_baseline_size", "sample_strategies",
)
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One configured model: its name on the server, its deployed version, and the raw
    values of the options it overrides (parsed by the configuration loader)."""

    name: str
    version: str = UNKNOWN_VERSION
    overrides: tuple[tuple[str, Any], ...] = ()


def _valid_name(name: str, where: str) -> str:
    if not name or not set(name) <= _NAME_CHARS or name == OTHER_MODEL:
        raise ValueError(f"{where}: model name {name!r} must be letters, digits, '.', '_' "
                         f"or '-' (and not {OTHER_MODEL!r})")
    return name


def parse_models(text: str) -> tuple[ModelEntry, ...]:
    """A YAML (or JSON) list of mappings: `name`, optional `version`, and any of
    MODEL_KEYS. Values are kept raw here and parsed by the loader, per key."""
    if not text.strip():
        return ()
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"not a YAML list of models ({error})") from None
    if not isinstance(document, list):
        raise ValueError("expected a list of models, each a mapping with a name")
    entries, seen = [], set()
    for index, item in enumerate(document):
        where = f"models[{index}]"
        if not isinstance(item, Mapping) or "name" not in item:
            raise ValueError(f"{where}: expected a mapping with a name")
        item = {str(k).replace("-", "_"): v for k, v in item.items()}
        name = _valid_name(str(item.pop("name")), where)
        if name in seen:
            raise ValueError(f"{where}: model {name!r} is listed twice")
        seen.add(name)
        version = str(item.pop("version", UNKNOWN_VERSION))
        unknown = sorted(set(item) - set(MODEL_KEYS))
        if unknown:
            raise ValueError(f"{where}: {', '.join(unknown)} cannot be set per model; "
                             f"per-model keys: {', '.join(MODEL_KEYS)}")
        entries.append(ModelEntry(name, version, tuple(item.items())))
    return tuple(entries)


def format_models(entries: Any) -> str:
    """A YAML file's list of models as the text `parse_models` reads."""
    return yaml.safe_dump(entries) if isinstance(entries, list) else str(entries)


def path_model(path: str) -> str | None:
    """The model a V2 (or V1) path names, or None for any other path."""
    if path.startswith("/v2/models/"):
        rest = path[len("/v2/models/"):]
        name = rest.split("/", 1)[0]
    elif path.startswith("/v1/models/"):
        name = path[len("/v1/models/"):].split(":", 1)[0].split("/", 1)[0]
    else:
        return None
    return unquote(name) or None


ADMIT_AFTER = 2  # 2xx answers a discovered name needs: more than one
MAX_CANDIDATES = 1024  # names with one 2xx answer, remembered at most
RELEASE_CHECK_SECONDS = 1.0


class ModelLabels:
    """Path -> (model, version) labels: a dict lookup, and for an unknown name a bounded
    admission once the upstream answered it with a 2xx more than once. A discovered name
    with no traffic for `idle_seconds` gives its slot back (a configured one never
    does); an admission the cap turned away calls `turned_away`. Not thread-safe: one
    thread (the event loop, or one worker's) uses it."""

    def __init__(self, default: str, default_version: str,
                 configured: Mapping[str, str], discover: bool, max_models: int,
                 idle_seconds: float = 3600.0,
                 turned_away: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.default = default
        self._versions = {default: default_version, **configured}
        self._configured = frozenset(self._versions)
        self._discover = discover
        # one model, none listed and none to discover: every path is the default model
        self._single = not configured and not discover
        self._max = max_models
        self._idle = idle_seconds
        self._turned_away = turned_away or (lambda: None)
        self._clock = clock
        self._last_seen: dict[str, float] = {}  # discovered name -> its last traffic
        self._candidates: dict[str, int] = {}  # name -> 2xx answers so far, oldest first
        self._checked = clock()

    @classmethod
    def of(cls, settings: LabelSettings, **extra: Any) -> Self:
        """The labels the settings give: the default and listed models, discovery, the
        cap and the idle time."""
        return cls(settings.model_name, settings.model_version,
                   {entry.name: entry.version for entry in settings.models
                    if entry.name != settings.model_name},
                   settings.discover_models, settings.max_models,
                   idle_seconds=settings.model_label_idle_seconds, **extra)

    @property
    def single(self) -> bool:
        """A one-model pod: every request is the default model's, whatever it names."""
        return self._single

    @property
    def known(self) -> dict[str, str]:
        return dict(self._versions)

    @property
    def discovered(self) -> list[str]:
        return [name for name in self._versions if name not in self._configured]

    def label(self, path: str) -> tuple[str, str]:
        """The labels while the request is in flight: known name, default or other."""
        return self.label_name(None if self._single else path_model(path))

    def label_name(self, name: str | None) -> tuple[str, str]:
        """The labels of a request naming model `name` (None: it names none)."""
        if self._single:
            name = None
        if name is None:
            return self.default, self._versions[self.default]
        version = self._versions.get(name)
        if version is None:
            return OTHER_MODEL, UNKNOWN_VERSION
        return name, version

    def answered(self, name: str | None, status: int, count: int = 1
                 ) -> tuple[str, str] | None:
        """After the upstream answered `count` requests naming model `name` with
        `status`: the second 2xx for an unknown model admits it (while there is room);
        returns its labels, or None when nothing changes."""
        if not self._discover or name is None:
            return None
        now = self._clock()
        if name in self._last_seen:
            self._last_seen[name] = now
        if now - self._checked >= RELEASE_CHECK_SECONDS:
            self.release_idle(now)
        if name in self._versions or not 200 <= status < 300 or count <= 0 \
                or not set(name) <= _NAME_CHARS:
            return None
        successes = self._candidates.pop(name, 0) + count
        if successes < ADMIT_AFTER:
            if len(self._candidates) >= MAX_CANDIDATES:
                del self._candidates[next(iter(self._candidates))]
            self._candidates[name] = successes
            return None
        if len(self._versions) >= self._max:
            self._candidates[name] = successes  # still a candidate when a slot frees
            self._turned_away()
            return None
        self._versions[name] = UNKNOWN_VERSION
        self._last_seen[name] = now
        return name, UNKNOWN_VERSION

    def release_idle(self, now: float | None = None) -> list[str]:
        """Discovered names idle for `idle_seconds` give their slots back."""
        now = self._clock() if now is None else now
        self._checked = now
        idle = [name for name, seen in self._last_seen.items() if now - seen >= self._idle]
        for name in idle:
            del self._last_seen[name]
            del self._versions[name]
        return idle

    def adopt(self, discovered: Mapping[str, str]) -> None:
        """The discovered labels another process decided (the lookout process's
        `LabelPublisher`), in place of this one's."""
        for name in self.discovered:
            del self._versions[name]
        for name, version in discovered.items():
            if name not in self._configured:
                self._versions[name] = version
        self._last_seen = dict.fromkeys(self.discovered, self._clock())


@dataclass(frozen=True, slots=True)
class LabelSettings:
    """What the model labels are made of (`settings.of(LabelSettings, config)`)."""

    model_name: str
    model_version: str
    models: tuple[ModelEntry, ...]
    discover_models: bool
    max_models: int
    model_label_idle_seconds: float


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """One served model's settings, cut once from its configuration in the lookout
    process (`composition.py`): what its analysis chain is built from in a worker."""

    analysis: AnalysisSettings
    shadow: ShadowSettings
    drift: DriftSettings | None  # None: no drift monitor for this model
    samples: SampleSettings
    model_sha256: str = ""

    @property
    def name(self) -> str:
        return self.analysis.model_name

    @property
    def version(self) -> str:
        return self.analysis.model_version

    @property
    def shadowed(self) -> bool:
        """It has a reference model, local or remote."""
        return bool(self.shadow.shadow_model_path or self.shadow.shadow_reference_url)

    @property
    def feeds_lead(self) -> bool:
        """Its analyses reach a stage only the lead worker runs (the reference, drift,
        the sample recorder), so the other workers forward them."""
        return self.shadowed or self.drift is not None or bool(self.samples.sample_dir)

    def discovered(self, name: str, input_size: int | None) -> ModelSettings:
        """A model found in service, from the pod's settings: its decode settings without
        its model file, class names, reference model or pinned baseline (they belong to
        the default model)."""
        version = UNKNOWN_VERSION
        return ModelSettings(
            dataclasses.replace(self.analysis, model_name=name, model_version=version,
                                model_path="", class_names=(),
                                input_size=input_size or self.analysis.input_size),
            dataclasses.replace(self.shadow, model_name=name, model_version=version,
                                model_path="", shadow_model_path="",
                                shadow_reference_url="", shadow_reference_model=""),
            None if self.drift is None else dataclasses.replace(
                self.drift, model_name=name, model_version=version,
                drift_baseline_path=""),
            self.samples)


@dataclass(frozen=True, slots=True)
class ChainSettings:
    """What one worker's chains are built from, cut once in the lookout process
    (`composition.py`): each served model's settings, the default model's first."""

    models: tuple[ModelSettings, ...]
    pod: ModelSettings  # the pod's own: its sample store, and where discovered models start
    gpu: GpuSettings
    upstream: str  # a discovered model's metadata is asked of the server
    connect_timeout: float


def input_size_from_metadata(metadata: Any) -> int | None:
    """The square input size a V2 model-metadata document gives its first input: NCHW
    ([1, 3, 640, 640]) or NHWC ([1, 640, 640, 3]); None when it does not say."""
    try:
        shape = [int(d) for d in metadata["inputs"][0]["shape"]]
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    if len(shape) < 3:
        return None
    sides = shape[-2:] if shape[-3] in (1, 3) else shape[-3:-1]
    return sides[0] if sides[0] == sides[1] and sides[0] > 0 else None


def fetch_input_size(upstream: str, name: str, timeout: float) -> int | None:
    """Ask the server for a discovered model's metadata (`GET /v2/models/{name}`), once,
    from an analysis worker; any failure means the pod's default input size."""
    import json
    import urllib.error
    import urllib.request
    from urllib.parse import quote

    url = f"{upstream}/v2/models/{quote(name, safe='')}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return input_size_from_metadata(json.loads(response.read(1024**2)))
    except (OSError, ValueError, urllib.error.URLError):
        return None
