"""Envoy's bootstrap, generated from lookout's options: the HTTP port and the gRPC port
in front of the inference server, the tap on both, and Envoy's own edge protections.

Every limit is Envoy's, configured the way its edge-proxy guidance says
(https://www.envoyproxy.io/docs/envoy/latest/configuration/best_practices/edge): the
overload manager caps connections, buffers are bounded per connection, headers, idle
streams and keep-alive have timeouts, HTTP/2 streams, windows and frame floods are
limited and premature resets close the connection. Bodies on the HTTP port are read
whole (the buffer filter) before an upstream connection is taken, so slow uploads hold
only their own bytes, never the upstream pool. lookout's own refusals carry
`X-Lookout-Error` (HTTP) and `lookout-error` (gRPC) from the local-reply mappers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from lookout.sidecar.dataplane.envoy_tracing import envoy_tracing

HTTP_LISTENER, GRPC_LISTENER = "lookout_http", "lookout_grpc"
HTTP_CLUSTER, GRPC_CLUSTER = "lookout_upstream", "lookout_upstream_grpc"
TAP_NAME = "lookout_tap"
ERROR_HEADER, GRPC_ERROR_HEADER = "x-lookout-error", "lookout-error"
PER_CONNECTION_BUFFER = 32 * 1024
H2_MAX_STREAMS = 1024
H2_STREAM_WINDOW = 1024 * 1024
H2_CONNECTION_WINDOW = 4 * 1024 * 1024
RESET_MIN_LIFETIME_S = 1
RESET_STREAM_COUNT = 500
UPSTREAM_CONNECTIONS = 4096
ADMIN_CONNECTIONS_RESERVE = 64


@dataclass(frozen=True, slots=True)
class DataPlaneSettings:
    """What Envoy's configuration is made of: the flat options it reads, by name."""

    listen_host: str
    listen_port: int
    grpc_host: str | None
    grpc_port: int
    upstream: str
    grpc_upstream: str
    connect_timeout: float
    read_timeout: float
    client_head_timeout: float
    client_body_timeout: float
    client_keepalive_timeout: float
    max_client_connections: int
    max_head_bytes: int
    max_body_bytes: int
    grpc_max_message_bytes: int
    upstream_keepalive: float
    upstream_pool_size: int
    model_name: str
    model_version: str


def _seconds(value: float) -> str:
    return f"{value:.3f}s"


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _cluster(name: str, host: str, port: int, settings: DataPlaneSettings, *,
             http2: bool, tls: bool) -> dict[str, Any]:
    protocol: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "common_http_protocol_options": {"idle_timeout": _seconds(settings.upstream_keepalive)},
        "explicit_http_config": {"http2_protocol_options": {
            "initial_stream_window_size": H2_STREAM_WINDOW,
            "initial_connection_window_size": H2_CONNECTION_WINDOW}} if http2 else
        {"http_protocol_options": {}},
    }
    limits = {"max_connections": max(settings.upstream_pool_size, UPSTREAM_CONNECTIONS),
              "max_pending_requests": UPSTREAM_CONNECTIONS,
              "max_requests": UPSTREAM_CONNECTIONS, "max_retries": 3}
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": _seconds(settings.connect_timeout),
        "per_connection_buffer_limit_bytes": PER_CONNECTION_BUFFER,
        "circuit_breakers": {"thresholds": [limits]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": protocol},
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _address(host, port)}}]}]},
    }
    if tls:
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                     "UpstreamTlsContext", "sni": host}}
    return cluster


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _mapper(reason: str, *, flags: Sequence[str] = (), status: int | None = None,
            rewrite_to: int | None = None) -> dict[str, Any]:
    """A local reply of one kind: its `X-Lookout-Error` (and `lookout-error`, which
    gRPC clients read from a trailers-only answer), maybe another status."""
    if flags:
        matcher: dict[str, Any] = {"response_flag_filter": {"flags": list(flags)}}
    else:
        matcher = {"status_code_filter": {"comparison": {
            "op": "EQ", "value": {"default_value": status, "runtime_key": "lookout.unused"}}}}
    mapper: dict[str, Any] = {"filter": matcher, "headers_to_add": [
        {"header": {"key": ERROR_HEADER, "value": reason}, "append_action":
         "OVERWRITE_IF_EXISTS_OR_ADD"},
        {"header": {"key": GRPC_ERROR_HEADER, "value": reason}, "append_action":
         "OVERWRITE_IF_EXISTS_OR_ADD"}]}
    if rewrite_to is not None:
        mapper["status_code"] = rewrite_to
    return mapper


def local_reply_config(settings: DataPlaneSettings) -> dict[str, Any]:
    """Envoy's local replies, named as lookout named its own: what was wrong, the
    upstream, the trace id. The first matching mapper wins; the last catches the rest."""
    mappers = [
        _mapper("upstream-unavailable", flags=["UF", "UH", "NR"], rewrite_to=502),
        _mapper("upstream-timeout", flags=["UT"], rewrite_to=504),
        _mapper("upstream-reset", flags=["UR", "UC"], rewrite_to=502),
        _mapper("overloaded", flags=["UO", "OM"]),
        _mapper("stream-idle-timeout", flags=["SI"]),
        _mapper("downstream-protocol-error", flags=["DPE"]),
        _mapper("body-too-large", status=413),
        _mapper("head-too-large", status=431),
        _mapper("head-timeout", status=408),
        _mapper("bad-request", status=400),
        {"filter": {"status_code_filter": {"comparison": {"op": "GE", "value": {
            "default_value": 100, "runtime_key": "lookout.unused"}}}}, "headers_to_add": [
            {"header": {"key": ERROR_HEADER, "value": "sidecar-%RESPONSE_CODE%"},
             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
            {"header": {"key": GRPC_ERROR_HEADER, "value": "sidecar-%RESPONSE_CODE%"},
             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]},
    ]
    return {"mappers": mappers, "body_format": {"json_format": {
        "error": "%RESPONSE_CODE_DETAILS%", "status": "%RESPONSE_CODE%",
        "detail": "%LOCAL_REPLY_BODY%", "upstream": settings.upstream,
        "trace_id": "%TRACE_ID%"}}}


def _tap_filter(tap_config: str) -> dict[str, Any]:
    return {"name": TAP_NAME, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3."
                 "DynamicModuleFilter",
        "dynamic_module_config": {"name": TAP_NAME},
        "filter_name": TAP_NAME,
        "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                          "value": tap_config}}}


_ROUTER = {"name": "envoy.filters.http.router", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
    "suppress_envoy_headers": True}}


def _http2_listener_options(settings: DataPlaneSettings) -> dict[str, Any]:
    return {
        "max_concurrent_streams": H2_MAX_STREAMS,
        "initial_stream_window_size": H2_STREAM_WINDOW,
        "initial_connection_window_size": H2_CONNECTION_WINDOW,
        "max_outbound_frames": 10000,
        "max_outbound_control_frames": 1000,
        "max_consecutive_inbound_frames_with_empty_payload": 1,
        "max_inbound_priority_frames_per_stream": 100,
        "max_inbound_window_update_frames_per_data_frame_sent": 10,
    }


def _connection_manager(name: str, settings: DataPlaneSettings, routes: dict[str, Any],
                        filters: list[dict[str, Any]], *, grpc: bool,
                        env: Mapping[str, str]) -> dict[str, Any]:
    manager: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                 "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": name,
        "codec_type": "HTTP2" if grpc else "AUTO",
        "use_remote_address": True,
        "server_header_transformation": "PASS_THROUGH",
        "request_headers_timeout": _seconds(settings.client_head_timeout),
        "stream_idle_timeout": _seconds(max(settings.client_body_timeout,
                                            settings.read_timeout)),
        "max_request_headers_kb": max(1, min(8192, settings.max_head_bytes // 1024)),
        "common_http_protocol_options": {
            "idle_timeout": _seconds(settings.client_keepalive_timeout),
            "headers_with_underscores_action": "ALLOW",
            "max_headers_count": 100,
        },
        "http_protocol_options": {"accept_http_10": True},
        "http2_protocol_options": _http2_listener_options(settings),
        "local_reply_config": local_reply_config(settings),
        "route_config": routes,
        "http_filters": [*filters, _ROUTER],
    }
    if not grpc:
        manager["upgrade_configs"] = [{"upgrade_type": "websocket"}]
    tracing = envoy_tracing(env, settings.model_name, settings.model_version)
    if tracing is not None:
        manager["tracing"] = tracing.tracing
    return manager


def _listener(name: str, host: str, port: int, manager: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "address": _address(host, port),
        "per_connection_buffer_limit_bytes": PER_CONNECTION_BUFFER,
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": manager}]}],
    }


def _http_routes(settings: DataPlaneSettings) -> dict[str, Any]:
    """Every path to the upstream. An upgrade (WebSocket) is not buffered: its body is
    the tunnel."""
    route = {"cluster": HTTP_CLUSTER, "timeout": _seconds(settings.read_timeout)}
    no_buffer = {"envoy.filters.http.buffer": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3."
                 "BufferPerRoute", "disabled": True}}
    return {"name": "lookout_http", "virtual_hosts": [{"name": "upstream", "domains": ["*"],
            "routes": [
                {"match": {"prefix": "/", "headers": [{"name": "upgrade",
                                                        "present_match": True}]},
                 "route": {**route, "timeout": "0s"}, "typed_per_filter_config": no_buffer},
                {"match": {"prefix": "/"}, "route": route}]}]}


def _grpc_routes(settings: DataPlaneSettings) -> dict[str, Any]:
    """Deadlines are the client's (`grpc-timeout`); streams live as long as they move."""
    return {"name": "lookout_grpc", "virtual_hosts": [{"name": "upstream", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {
                "cluster": GRPC_CLUSTER, "timeout": "0s",
                "max_stream_duration": {"grpc_timeout_header_max": "0s"}}}]}]}


def _buffer_filter(settings: DataPlaneSettings) -> dict[str, Any]:
    return {"name": "envoy.filters.http.buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
        "max_request_bytes": settings.max_body_bytes}}


def _upstream_target(settings: DataPlaneSettings) -> tuple[str, int, bool]:
    parts = urlsplit(settings.upstream)
    tls = parts.scheme == "https"
    return parts.hostname or "127.0.0.1", parts.port or (443 if tls else 80), tls


def bootstrap(settings: DataPlaneSettings, tap_config: str, admin_socket: str,
              env: Mapping[str, str]) -> dict[str, Any]:
    """The whole bootstrap, as a mapping to write as JSON (which Envoy reads as YAML)."""
    host, port, tls = _upstream_target(settings)
    listeners = [_listener(HTTP_LISTENER, settings.listen_host, settings.listen_port,
                           _connection_manager(HTTP_LISTENER, settings, _http_routes(settings),
                                               [_buffer_filter(settings),
                                                _tap_filter(tap_config)],
                                               grpc=False, env=env))]
    clusters = [_cluster(HTTP_CLUSTER, host, port, settings, http2=False, tls=tls)]
    if settings.grpc_host is not None:
        listeners.append(_listener(
            GRPC_LISTENER, settings.grpc_host, settings.grpc_port,
            _connection_manager(GRPC_LISTENER, settings, _grpc_routes(settings),
                                [_tap_filter(tap_config)], grpc=True, env=env)))
        grpc_host, _, grpc_port = settings.grpc_upstream.rpartition(":")
        clusters.append(_cluster(GRPC_CLUSTER, grpc_host.strip("[]"), int(grpc_port),
                                 settings, http2=True, tls=False))
    tracing = envoy_tracing(env, settings.model_name, settings.model_version)
    if tracing is not None:
        clusters.append(tracing.cluster)
    connections = settings.max_client_connections
    runtime = {
        # a stream reset before it lived this long is premature; this many of them
        # close the connection (CVE-2023-44487, Rapid Reset)
        "overload.premature_reset_min_stream_lifetime_seconds": RESET_MIN_LIFETIME_S,
        "overload.premature_reset_total_stream_count": RESET_STREAM_COUNT,
        f"envoy.resource_limits.listener.{HTTP_LISTENER}.connection_limit": connections,
        f"envoy.resource_limits.listener.{GRPC_LISTENER}.connection_limit": connections,
    }
    return {
        "node": {"id": "lookout", "cluster": "lookout"},
        "admin": {"address": {"pipe": {"path": admin_socket, "mode": 0o600}}},
        "layered_runtime": {"layers": [{"name": "lookout", "static_layer": runtime}]},
        "overload_manager": {"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors."
                         "downstream_connections.v3.DownstreamConnectionsConfig",
                "max_active_downstream_connections": 2 * connections
                + ADMIN_CONNECTIONS_RESERVE}}]},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }
