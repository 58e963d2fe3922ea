"""Envoy's OpenTelemetry tracer from the standard `OTEL_*` variables, read as the
OpenTelemetry SDKs read them: the same endpoint defaults, protocol, service name and
parent-based ratio sampling (a tenth of root traces unless OTEL_TRACES_SAMPLER_ARG says).
Returns the HTTP connection manager's `tracing` block and the collector's cluster, or
nothing when tracing is off."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

DEFAULT_SAMPLE_RATIO = 0.1  # root traces kept when OTEL_TRACES_SAMPLER names none
OTLP_CLUSTER = "otlp_collector"
EXPORT_TIMEOUT_S = 2  # an OTLP export that has not been answered by then has failed
_RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")


class TracingConfigError(ValueError):
    """An OTEL_* value Envoy's tracer cannot honour; the message names it."""


@dataclass(frozen=True, slots=True)
class EnvoyTracing:
    tracing: dict[str, Any]  # the connection manager's `tracing`
    cluster: dict[str, Any]  # where spans go (with exporter none: a cluster of no hosts)
    runtime: dict[str, int]  # the batch processor's OTEL_BSP_* as Envoy's runtime keys


def _percent(env: Mapping[str, str]) -> float:
    sampler = env.get("OTEL_TRACES_SAMPLER", "")
    if not sampler:
        return DEFAULT_SAMPLE_RATIO * 100
    if sampler in ("always_on", "parentbased_always_on"):
        return 100.0
    if sampler in ("always_off", "parentbased_always_off"):
        return 0.0
    if sampler in _RATIO_SAMPLERS:
        argument = env.get("OTEL_TRACES_SAMPLER_ARG", "1")
        try:
            ratio = float(argument)
        except ValueError:
            raise TracingConfigError(f"OTEL_TRACES_SAMPLER_ARG={argument!r}: expected a "
                                     f"ratio from 0 to 1") from None
        return min(max(ratio, 0.0), 1.0) * 100
    raise TracingConfigError(f"OTEL_TRACES_SAMPLER={sampler!r} is not supported by the "
                             f"data plane; use parentbased_traceidratio, traceidratio, "
                             f"always_on or always_off")


def _endpoint(env: Mapping[str, str], grpc: bool) -> tuple[str, str, int, bool, str]:
    """(scheme, host, port, tls, path) of the collector."""
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
    return parts.scheme, parts.hostname, port, tls, path


def _tags(grpc: bool) -> list[dict[str, Any]]:
    """OpenTelemetry's semantic attributes that Envoy's own tags lack (it writes
    `http.method`, `http.url`, `http.status_code`, `upstream_address`... on every span):
    each custom tag is a formatter run for every request, sampled or not."""
    if grpc:
        values = {"rpc.system": "grpc", "rpc.grpc.status_code": "%GRPC_STATUS_NUMBER%"}
    else:
        values = {"http.route": "%ROUTE_NAME%"}
    return [{"tag": tag, "value": value} for tag, value in values.items()]


def tracing_on(env: Mapping[str, str]) -> bool:
    return env.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"


def envoy_tracing(env: Mapping[str, str], model: str, version: str, *,
                  grpc: bool = False) -> EnvoyTracing | None:
    """`grpc`: the gRPC port's span names and attributes (a route per method)."""
    if not tracing_on(env):
        return None
    exporters = {name.strip() for name in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")}
    export = "otlp" in exporters  # without: trace context and exemplars, spans kept nowhere
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    if protocol not in ("grpc", "http/protobuf"):
        raise TracingConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not "
                                 f"supported; use grpc or http/protobuf")
    otlp_grpc = protocol == "grpc"
    _, host, port, tls, path = _endpoint(env, otlp_grpc)
    config: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
        "service_name": env.get("OTEL_SERVICE_NAME", "lookout"),
        "sampler": _sampler(env),
    }
    if otlp_grpc and export:
        config["grpc_service"] = {"envoy_grpc": {"cluster_name": OTLP_CLUSTER},
                                  "timeout": f"{EXPORT_TIMEOUT_S}s"}
    else:
        config["http_service"] = {
            "http_uri": {"uri": f"{'https' if tls else 'http'}://{host}:{port}{path}",
                         "cluster": OTLP_CLUSTER, "timeout": f"{EXPORT_TIMEOUT_S}s"}}
    tracing = {
        "provider": {"name": "envoy.tracers.opentelemetry", "typed_config": config},
        "random_sampling": {"value": 100},
        # one span per request, the upstream's parent: a CLIENT span beside it would cost
        # a tenth of Envoy's own CPU per request (docs/PERFORMANCE.md), made for every
        # request sampled or not, to time a hop on loopback the SERVER span already spans
        "spawn_upstream_span": False,
        # the span's name: `service/method` on gRPC, `METHOD route` on HTTP
        "operation": "%ROUTE_NAME%" if grpc else "%REQ(:METHOD)% %ROUTE_NAME%",
        "custom_tags": [*_tags(grpc),
            {"tag": "lookout.model.name", "metadata": {
                "kind": {"request": {}},
                "metadata_key": {"key": "lookout", "path": [{"key": "model"}]},
                "default_value": model}},
            {"tag": "lookout.model.version", "literal": {"value": version}},
        ],
    }
    cluster = _collector_cluster(host, port, tls=tls, otlp_grpc=otlp_grpc) if export \
        else _no_collector()
    return EnvoyTracing(tracing, cluster, _batching(env))


def _sampler(env: Mapping[str, str]) -> dict[str, Any]:
    """As the Python SDK's ParentBased(TraceIdRatioBased) did: a caller's sampled flag is
    followed, a root span is kept at the ratio (Envoy's own decision lets every request
    reach it)."""
    return {
        "name": "envoy.tracers.opentelemetry.samplers.parent_based",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.tracers.opentelemetry.samplers.v3."
                     "ParentBasedSamplerConfig",
            "wrapped_sampler": {
                "name": "envoy.tracers.opentelemetry.samplers.trace_id_ratio_based",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.tracers.opentelemetry."
                             "samplers.v3.TraceIdRatioBasedSamplerConfig",
                    "sampling_percentage": {"numerator": round(_percent(env) * 10_000),
                                            "denominator": "MILLION"}}}}}


def _collector_cluster(host: str, port: int, *, tls: bool, otlp_grpc: bool
                       ) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": OTLP_CLUSTER, "type": "STRICT_DNS", "connect_timeout": "2s",
        "dns_lookup_family": "V4_PREFERRED",
        "load_assignment": {"cluster_name": OTLP_CLUSTER, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": host,
                                                          "port_value": port}}}}]}]},
    }
    if otlp_grpc:
        cluster["typed_extension_protocol_options"] = _http2_options()
    if tls:
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                     "UpstreamTlsContext", "sni": host}}
    return cluster


def _no_collector() -> dict[str, Any]:
    """Envoy's tracer needs an exporter: without OTLP, one into a cluster with no hosts
    (trace context and exemplars still work, spans are kept nowhere)."""
    return {"name": OTLP_CLUSTER, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": OTLP_CLUSTER, "endpoints": []}}


def _batching(env: Mapping[str, str]) -> dict[str, int]:
    """Envoy's tracer flushes every `flush_interval_ms` or `min_flush_spans` spans."""
    runtime = {}
    for variable, key in (("OTEL_BSP_SCHEDULE_DELAY", "flush_interval_ms"),
                          ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "min_flush_spans")):
        value = env.get(variable, "").strip()
        if value:
            if not value.isdigit() or int(value) == 0:
                raise TracingConfigError(f"{variable}={value!r}: expected a whole number "
                                         f"greater than 0")
            runtime[f"tracing.opentelemetry.{key}"] = int(value)
    return runtime


def _http2_options() -> dict[str, Any]:
    return {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}}}}
