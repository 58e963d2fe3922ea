"""Tracing from the standard `OTEL_*` variables, read as the OpenTelemetry SDKs read them,
checked when lookout starts: a value that could only fail on the first span is refused.

The tap decides and propagates (`tap/PROTOCOL.md`, "Trace context"): parent-based, a root
trace kept at the ratio (a tenth unless OTEL_TRACES_SAMPLER says). The analysis workers
make and export the spans (`exchange_spans.py`) through the SDK's own OTLP exporters,
which read the endpoint, headers, timeouts and batch variables themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_SAMPLE_RATIO = 0.1  # root traces kept when OTEL_TRACES_SAMPLER names none
PROTOCOLS = ("grpc", "http/protobuf")
EXPORTERS = ("otlp", "console", "none")
_RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")
_BATCH_VARIABLES = ("OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                    "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_EXPORT_TIMEOUT")


class TracingConfigError(ValueError):
    """An OTEL_* value lookout cannot honour; the message names it."""


@dataclass(frozen=True, slots=True)
class TraceSettings:
    enabled: bool  # OTEL_SDK_DISABLED=true: no trace context made, none touched
    sample_ratio: float  # of root traces (a caller's sampled flag is always followed)
    exporters: frozenset[str]  # "otlp", "console"; empty: trace context and exemplars only
    protocol: str  # the OTLP exporter's

    @property
    def sample_ppm(self) -> int:
        """The ratio as the tap takes it: parts per million."""
        return round(self.sample_ratio * 1_000_000)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TraceSettings:
        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        exporters = frozenset(name.strip() for name in
                              env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")
                              if name.strip()) - {"none"}
        unknown = sorted(exporters - set(EXPORTERS))
        if unknown:
            raise TracingConfigError(f"OTEL_TRACES_EXPORTER: {', '.join(unknown)} is not "
                                     f"supported; use {', '.join(EXPORTERS)}")
        if "otlp" in exporters:
            if protocol not in PROTOCOLS:
                raise TracingConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not "
                                         f"supported; use grpc or http/protobuf")
            endpoint(env, protocol == "grpc")
        for variable in _BATCH_VARIABLES:
            value = env.get(variable, "").strip()
            if value and (not value.isdigit() or int(value) == 0):
                raise TracingConfigError(f"{variable}={value!r}: expected a whole number "
                                         f"greater than 0")
        return cls(enabled=tracing_on(env), sample_ratio=_ratio(env),
                   exporters=exporters, protocol=protocol)


def tracing_on(env: Mapping[str, str]) -> bool:
    return env.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"


def _ratio(env: Mapping[str, str]) -> float:
    sampler = env.get("OTEL_TRACES_SAMPLER", "")
    if not sampler:
        return DEFAULT_SAMPLE_RATIO
    if sampler in ("always_on", "parentbased_always_on"):
        return 1.0
    if sampler in ("always_off", "parentbased_always_off"):
        return 0.0
    if sampler in _RATIO_SAMPLERS:
        argument = env.get("OTEL_TRACES_SAMPLER_ARG", "1")
        try:
            ratio = float(argument)
        except ValueError:
            raise TracingConfigError(f"OTEL_TRACES_SAMPLER_ARG={argument!r}: expected a "
                                     f"ratio from 0 to 1") from None
        return min(max(ratio, 0.0), 1.0)
    raise TracingConfigError(f"OTEL_TRACES_SAMPLER={sampler!r} is not supported by the "
                             f"data plane; use parentbased_traceidratio, traceidratio, "
                             f"always_on or always_off")


def endpoint(env: Mapping[str, str], grpc: bool) -> tuple[str, int, str]:
    """(host, port, path) of the collector, as the SDK's exporter finds it; refused when
    the SDK could not use it."""
    specific = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
    general = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    default = "http://localhost:4317" if grpc else "http://localhost:4318"
    url = specific or general or default
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TracingConfigError(f"OTLP endpoint {url!r}: expected http(s)://HOST:PORT")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    path = parts.path or "/v1/traces" if grpc or specific else parts.path.rstrip("/") + "/v1/traces"
    return parts.hostname, port, path
