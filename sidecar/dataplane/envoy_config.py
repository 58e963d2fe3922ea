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

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from lookout.sidecar.dataplane.envoy_tracing import envoy_tracing
from lookout.sidecar.proxy.routes import OTHER_ROUTE

# Envoy's own object names (its stats carry them: http.data_http.*), never metric names
HTTP_LISTENER, GRPC_LISTENER = "data_http", "data_grpc"
HTTP_CLUSTER, GRPC_CLUSTER = "upstream_http", "upstream_grpc"
TAP_NAME = "lookout_tap"
ERROR_HEADER, GRPC_ERROR_HEADER = "x-lookout-error", "lookout-error"
PER_CONNECTION_BUFFER = 32 * 1024
H2_MAX_STREAMS = 128  # as nginx: enough for a gRPC channel's concurrency, not a flood
H2_STREAM_WINDOW = 1024 * 1024
H2_CONNECTION_WINDOW = 4 * 1024 * 1024
RESET_MIN_LIFETIME_S = 1
RESET_STREAM_COUNT = 200
SILENT_CONNECTION_S = 10  # a connection that sends nothing this long is closed
UPLOAD_DEADLINE_S = 300  # a request body must have arrived whole by then
DEADLINE_LEAD_S = 0.05  # Envoy answers a gRPC deadline this much before the client does
UPSTREAM_CONNECTIONS = 4096
ADMIN_CONNECTIONS_RESERVE = 64


@dataclass(frozen=True, slots=True)
class DataPlaneSettings:
    """What Envoy's configuration is made of: the flat options it reads, by their names
    (`settings.of(DataPlaneSettings, config)`)."""

    listen: Any  # config.Address: host and port
    grpc_listen: Any  # config.Address, or None: no gRPC port
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
    upstream_keepalive: float
    upstream_pool_size: int
    model_name: str
    model_version: str


def downstream_connection_limit(max_client_connections: int) -> int:
    """Envoy's global cap on client connections (the overload manager's): both data
    ports full, and its admin socket's reserve."""
    return 2 * max_client_connections + ADMIN_CONNECTIONS_RESERVE


def upstream_connection_limit(pool_size: int) -> int:
    """Most connections one upstream cluster may open (its circuit breaker)."""
    return max(pool_size, UPSTREAM_CONNECTIONS)


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
    limits = {"max_connections": upstream_connection_limit(settings.upstream_pool_size),
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


# Envoy's local replies lookout names: response flags (or a status) -> the reason, what
# happened in words, and the status lookout's own request path answered with
_LOCAL_REPLIES: tuple[tuple[tuple[str, ...], int | None, str, str, int | None], ...] = (
    (("UF", "UH", "NR"), None, "upstream-unavailable", "the upstream {upstream} is "
     "unavailable", 502),
    (("UT",), None, "upstream-timeout", "the upstream {upstream} sent no response in time",
     504),
    (("UR", "UC"), None, "upstream-reset", "the upstream {upstream} closed or reset the "
     "connection", 502),
    (("UPE",), None, "upstream-bad-response", "the upstream {upstream} broke the protocol",
     502),
    (("UO", "OM"), None, "overloaded", "lookout is at its limits", None),
    (("SI",), None, "stream-idle-timeout", "nothing moved on the stream in time", None),
    (("DPE",), None, "bad-request", "the request broke the protocol", None),
    ((), 413, "body-too-large", "the request body is larger than max_body_bytes", None),
    ((), 431, "head-too-large", "the request head is larger than max_head_bytes", None),
    ((), 408, "head-timeout", "the request did not arrive in time", None),
    ((), 400, "bad-request", "malformed request", None),
)
_OVERWRITE = "OVERWRITE_IF_EXISTS_OR_ADD"


def _filter(flags: tuple[str, ...], status: int | None) -> dict[str, Any]:
    if flags:
        return {"response_flag_filter": {"flags": list(flags)}}
    op, value = ("EQ", status) if status is not None else ("GE", 100)
    return {"status_code_filter": {"comparison": {"op": op, "value": {
        "default_value": value, "runtime_key": "lookout.local_reply.unused"}}}}


def local_reply_config(settings: DataPlaneSettings, *, grpc: bool) -> dict[str, Any]:
    """Envoy's local replies, named as lookout named its own: `X-Lookout-Error` and a
    JSON body (what was wrong, the upstream, the trace id) on the HTTP port; on the gRPC
    port `lookout-error` (underscored, as gRPC metadata was) and a grpc-message that says
    it is lookout's. The first matching mapper wins; the last catches the rest."""
    upstream = settings.grpc_upstream if grpc else settings.upstream
    # a gRPC deadline is the client's own (`grpc-timeout`), kept for it by Envoy at the
    # moment the upstream would have: DEADLINE_EXCEEDED as the upstream's, not lookout's
    # (the gRPC port has no route timeout: its only 504 is that deadline)
    mappers: list[dict[str, Any]] = [{"filter": _filter((), 504)}] if grpc else []
    for flags, status, reason, words, http_status in (*_LOCAL_REPLIES,
                                                      ((), None, "sidecar", "", None)):
        if grpc and status is not None:
            continue  # the gRPC port's codec answers these with a stream reset
        name = reason.replace("-", "_") if grpc else reason
        mapper: dict[str, Any] = {"filter": _filter(flags, status), "headers_to_add": [
            {"header": {"key": GRPC_ERROR_HEADER if grpc else ERROR_HEADER,
                        "value": name if words else "sidecar_%RESPONSE_CODE%"},
             "append_action": _OVERWRITE}]}
        if http_status is not None and not grpc:
            mapper["status_code"] = http_status
        if grpc:
            text = words.format(upstream=upstream) if words else "%LOCAL_REPLY_BODY%"
            mapper["body_format_override"] = {
                "text_format": f"lookout: {text} (%RESPONSE_CODE_DETAILS%)"}
        mappers.append(mapper)
    if grpc:
        return {"mappers": mappers}
    return {"mappers": mappers, "body_format": {"json_format": {
        "error": "%RESPONSE_CODE_DETAILS%", "status": "%RESPONSE_CODE%",
        "detail": "%LOCAL_REPLY_BODY%", "upstream": upstream, "trace_id": "%TRACE_ID%"}}}


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
        # the request reaches the upstream as the client sent it: no x-forwarded-for
        # append, no x-envoy-external-address, no x-request-id of Envoy's making
        "use_remote_address": False,
        "generate_request_id": False,
        # the tracing decision is the sampler's (parent-based), not a request id's
        "request_id_extension": {"typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3."
                     "UuidRequestIdConfig", "use_request_id_for_trace_sampling": False}},
        "server_header_transformation": "PASS_THROUGH",
        "request_headers_timeout": _seconds(settings.client_head_timeout),
        "stream_idle_timeout": _seconds(max(settings.client_body_timeout,
                                            settings.read_timeout)),
        "max_request_headers_kb": max(1, min(8192, settings.max_head_bytes // 1024)),
        # slow uploads on the HTTP port are read by the buffer filter, never holding an
        # upstream connection; this bounds how long one may take (gRPC streams: no bound)
        "request_timeout": "0s" if grpc else _seconds(UPLOAD_DEADLINE_S),
        "common_http_protocol_options": {
            "idle_timeout": _seconds(settings.client_keepalive_timeout),
            # Envoy's edge guidance: a header name with '_' can alias another once a
            # server maps '-' and '_' alike (CGI); refused, never relayed (nginx drops it)
            "headers_with_underscores_action": "REJECT_REQUEST",
            "max_headers_count": 100,
        },
        "http_protocol_options": {"accept_http_10": True},
        "http2_protocol_options": _http2_listener_options(settings),
        "local_reply_config": local_reply_config(settings, grpc=grpc),
        "route_config": routes,
        "http_filters": [*filters, _ROUTER],
    }
    if not grpc:
        manager["upgrade_configs"] = [{"upgrade_type": "websocket"}]
    tracing = envoy_tracing(env, settings.model_name, settings.model_version, grpc=grpc)
    if tracing is not None:
        manager["tracing"] = tracing.tracing
    return manager


def _listener(name: str, host: str, port: int, manager: dict[str, Any],
              settings: DataPlaneSettings) -> dict[str, Any]:
    """A silent connection (one that sends nothing) is closed once the inspector has
    waited for its first bytes (client_head_timeout, at most SILENT_CONNECTION_S):
    1,024 of them cannot lock others out for long."""
    silent = min(settings.client_head_timeout, SILENT_CONNECTION_S)
    return {
        "name": name,
        "address": _address(host, port),
        "per_connection_buffer_limit_bytes": PER_CONNECTION_BUFFER,
        "listener_filters_timeout": _seconds(silent),
        "continue_on_listener_filters_timeout": False,
        "listener_filters": [{"name": "envoy.filters.listener.http_inspector",
                              "typed_config": {
                                  "@type": "type.googleapis.com/envoy.extensions.filters."
                                           "listener.http_inspector.v3.HttpInspector"}}],
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": manager}]}],
    }


def template_regex(template: str) -> str:
    """A route template as RE2, as `proxy/routes.py` reads it: `{name}` is one or more
    characters but '/', and a trailing '/' is allowed."""
    pieces = re.split(r"\{[A-Za-z_][A-Za-z0-9_]*\}", template)
    return "[^/]+?".join(re.escape(piece) for piece in pieces) + "/?"


def _http_routes(settings: DataPlaneSettings, templates: Sequence[str]) -> dict[str, Any]:
    """Every path to the upstream, each route template a route of that name (the span's
    name), the rest `other`. An upgrade (WebSocket) is not buffered: its body is the
    tunnel."""
    action = {"cluster": HTTP_CLUSTER, "timeout": _seconds(settings.read_timeout)}
    no_buffer = {"envoy.filters.http.buffer": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3."
                 "BufferPerRoute", "disabled": True}}
    routes: list[dict[str, Any]] = [
        {"name": "upgrade", "match": {"prefix": "/", "headers": [
            {"name": "upgrade", "present_match": True}]},
         "route": {**action, "timeout": "0s"}, "typed_per_filter_config": no_buffer}]
    routes += [{"name": template, "match": {"safe_regex": {"regex": template_regex(template)}},
                "route": action} for template in templates]
    routes.append({"name": OTHER_ROUTE, "match": {"prefix": "/"}, "route": action})
    return {"name": HTTP_LISTENER, "virtual_hosts": [{"name": "upstream", "domains": ["*"],
            "routes": routes}]}


def _grpc_routes(methods: Sequence[str]) -> dict[str, Any]:
    """Each method lookout knows a route named `service/method` (gRPC's span name), the
    rest `grpc`. A call's deadline is the client's `grpc-timeout`, kept by Envoy too;
    streams live as long as they move."""
    action = {"cluster": GRPC_CLUSTER, "timeout": "0s",
              "max_stream_duration": {"grpc_timeout_header_max": "0s",
                                      "grpc_timeout_header_offset": _seconds(DEADLINE_LEAD_S)}}
    routes = [{"name": method[1:], "match": {"path": method}, "route": action,
               "tracing": {"custom_tags": [
                   {"tag": "rpc.service", "literal": {"value": method[1:].partition("/")[0]}},
                   {"tag": "rpc.method", "literal": {"value": method.rpartition("/")[2]}}]}}
              for method in methods]
    routes.append({"name": "grpc", "match": {"prefix": "/"}, "route": action})
    return {"name": GRPC_LISTENER, "virtual_hosts": [{"name": "upstream", "domains": ["*"],
            "routes": routes}]}


def _buffer_filter(settings: DataPlaneSettings) -> dict[str, Any]:
    return {"name": "envoy.filters.http.buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
        "max_request_bytes": settings.max_body_bytes}}


def _upstream_target(settings: DataPlaneSettings) -> tuple[str, int, bool]:
    parts = urlsplit(settings.upstream)
    tls = parts.scheme == "https"
    return parts.hostname or "127.0.0.1", parts.port or (443 if tls else 80), tls


def bootstrap(settings: DataPlaneSettings, tap_config: str, admin_socket: str,
              env: Mapping[str, str], templates: Sequence[str] = (),
              methods: Sequence[str] = ()) -> dict[str, Any]:
    """The whole bootstrap, as a mapping to write as JSON (which Envoy reads as YAML)."""
    host, port, tls = _upstream_target(settings)
    listeners = [_listener(HTTP_LISTENER, settings.listen.host, settings.listen.port,
                           _connection_manager(HTTP_LISTENER, settings,
                                               _http_routes(settings, templates),
                                               [_buffer_filter(settings),
                                                _tap_filter(tap_config)],
                                               grpc=False, env=env), settings)]
    clusters = [_cluster(HTTP_CLUSTER, host, port, settings, http2=False, tls=tls)]
    if settings.grpc_listen is not None:
        listeners.append(_listener(
            GRPC_LISTENER, settings.grpc_listen.host, settings.grpc_listen.port,
            _connection_manager(GRPC_LISTENER, settings, _grpc_routes(methods),
                                [_tap_filter(tap_config)], grpc=True, env=env), settings))
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
        **(tracing.runtime if tracing is not None else {}),
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
                "max_active_downstream_connections":
                    downstream_connection_limit(connections)}}]},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }
