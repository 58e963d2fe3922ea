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

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# Envoy's own object names (its stats carry them: http.data_http.*), never metric names
HTTP_LISTENER, GRPC_LISTENER = "data_http", "data_grpc"
HTTP_CLUSTER, GRPC_CLUSTER = "upstream_http", "upstream_grpc"
# the tap's shared library; Envoy loads a dynamic module `name` from lib<name>.so, so the
# module's name is read off the file's (one spelling: they cannot drift apart)
TAP_LIBRARY = "liblookout_tap.so"
TAP_NAME = TAP_LIBRARY.removeprefix("lib").removesuffix(".so")
ERROR_HEADER, GRPC_ERROR_HEADER = "x-lookout-error", "lookout-error"
# Envoy's edge guidance says 32 KiB; a body of 100 KB then crosses each connection in
# pieces of 32 KiB, its reads paused and resumed on both sides, which cost lookout's Envoy
# a quarter of Envoy's own CPU per request (bench/envoy_parts.py: 1.68x -> 1.42x at 100
# KB). 256 KiB holds a camera frame in one read. It is not the memory bound of a request
# body: the buffer filter holds up to max_body_bytes; this bounds what a client that does
# not read its responses can make Envoy hold (256 KiB per connection, 512 MiB at 2 x 1,024)
PER_CONNECTION_BUFFER = 256 * 1024
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
    preserve_header_case: bool
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


# HTTP/1 header names reach each side spelled as the other sent them (Envoy would
# lower-case them), with `preserve_header_case`: for peers that compare names by case
PRESERVE_CASE = {"stateful_formatter": {"name": "preserve_case", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.http.header_formatters.preserve_case.v3."
             "PreserveCaseFormatterConfig"}}}


def _header_case(settings: DataPlaneSettings) -> dict[str, Any]:
    return {"header_key_format": PRESERVE_CASE} if settings.preserve_header_case else {}


def _cluster(name: str, host: str, port: int, settings: DataPlaneSettings, *,
             http2: bool, tls: bool) -> dict[str, Any]:
    protocol: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "common_http_protocol_options": {"idle_timeout": _seconds(settings.upstream_keepalive)},
        "explicit_http_config": {"http2_protocol_options": {
            "initial_stream_window_size": H2_STREAM_WINDOW,
            "initial_connection_window_size": H2_CONNECTION_WINDOW}} if http2 else
        {"http_protocol_options": _header_case(settings)},
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
# happened in words ({upstream} and {read_timeout} filled in), and the status lookout
# answers with
_LOCAL_REPLIES: tuple[tuple[tuple[str, ...], int | None, str, str, int | None], ...] = (
    (("UF", "UH", "NR"), None, "upstream-unreachable", "the upstream {upstream} cannot be "
     "reached", 502),
    (("UT",), None, "upstream-timeout", "the upstream {upstream} sent no response within "
     "read timeout {read_timeout}s (read_timeout)", 504),
    (("UR", "UC"), None, "upstream-reset", "the upstream {upstream} closed or reset the "
     "connection before its response", 502),
    (("UPE",), None, "upstream-bad-response", "the upstream {upstream} answered with "
     "something that is not HTTP", 502),
    (("UO", "OM"), None, "overloaded", "lookout is at its limits", None),
    (("SI",), 408, "body-timeout", "the request body stopped arriving (client_body_timeout)",
     None),
    (("SI",), None, "stream-idle-timeout", "nothing moved on the stream in time", None),
    (("DPE",), None, "bad-request", "the request broke the protocol", None),
    ((), 413, "body-too-large", "the request body is larger than max_body_bytes "
     "({max_body_bytes} bytes)", None),
    ((), 431, "head-too-large", "the request head is larger than max_head_bytes", None),
    ((), 408, "head-timeout", "the request did not arrive in time", None),
    ((), 400, "bad-request", "malformed request", None),
)
_OVERWRITE = "OVERWRITE_IF_EXISTS_OR_ADD"
_GRPC_NAMES = {"upstream-unreachable": "upstream_unavailable"}  # gRPC's status name


def _filter(flags: tuple[str, ...], status: int | None) -> dict[str, Any]:
    op, value = ("EQ", status) if status is not None else ("GE", 100)
    by_status = {"status_code_filter": {"comparison": {"op": op, "value": {
        "default_value": value, "runtime_key": "lookout.local_reply.unused"}}}}
    if not flags:
        return by_status
    by_flags = {"response_flag_filter": {"flags": list(flags)}}
    if status is None:
        return by_flags
    return {"and_filter": {"filters": [by_flags, by_status]}}


def _json_body(reason: str, message: str, upstream: str) -> dict[str, Any]:
    """The HTTP port's error body. No trace id: Envoy formats local replies without the
    active span (%TRACE_ID% is null there); the span and the RED exemplars carry it."""
    return {"json_format": {
        "error": reason, "message": message, "origin": "lookout", "upstream": upstream,
        "status": "%RESPONSE_CODE%", "detail": "%RESPONSE_CODE_DETAILS%"}}


def local_reply_config(settings: DataPlaneSettings, *, grpc: bool) -> dict[str, Any]:
    """Envoy's local replies, named as lookout named its own: `X-Lookout-Error` and a
    JSON body (what was wrong, in words, and the upstream) on the HTTP port; on the gRPC
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
        name = _GRPC_NAMES.get(reason, reason.replace("-", "_")) if grpc else reason
        text = words.format(upstream=upstream, read_timeout=f"{settings.read_timeout:g}",
                            max_body_bytes=settings.max_body_bytes) \
            if words else "%LOCAL_REPLY_BODY%"
        mapper: dict[str, Any] = {"filter": _filter(flags, status), "headers_to_add": [
            {"header": {"key": GRPC_ERROR_HEADER if grpc else ERROR_HEADER,
                        "value": name if words else "sidecar_%RESPONSE_CODE%"},
             "append_action": _OVERWRITE}]}
        if http_status is not None and not grpc:
            mapper["status_code"] = http_status
        if grpc:
            mapper["body_format_override"] = {
                "text_format": f"lookout: {text} (%RESPONSE_CODE_DETAILS%)"}
        else:
            mapper["body_format_override"] = _json_body(
                name if words else "sidecar_%RESPONSE_CODE%", text, upstream)
        mappers.append(mapper)
    return {"mappers": mappers}


def _tap_filter(tap_config: str) -> dict[str, Any]:
    return {"name": TAP_NAME, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3."
                 "DynamicModuleFilter",
        "dynamic_module_config": {"name": TAP_NAME},
        "filter_name": TAP_NAME,
        "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                          "value": tap_config}}}


# No dynamic cluster stats (upstream_rq_<code>, upstream_rq_time and their internal and
# external copies): the tap counts every exchange by model, route and code itself, and
# these cost 4-5% of Envoy's instructions per request (bench/envoy_parts.py, "Envoy's
# dynamic stats"); Envoy's docs name the option for high-performance scenarios. The
# listener's and the connection manager's counters, which lookout reads, stay.
def _router() -> dict[str, Any]:
    return {"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
        "suppress_envoy_headers": True, "dynamic_stats": False}}


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
                        filters: list[dict[str, Any]], *, grpc: bool) -> dict[str, Any]:
    manager: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                 "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": name,
        "codec_type": "HTTP2" if grpc else "AUTO",
        # the request reaches the upstream as the client sent it, but for the address
        # appended to X-Forwarded-For (the route's): no x-envoy-external-address or
        # x-envoy-internal, no x-request-id of Envoy's making
        "use_remote_address": False,
        "generate_request_id": False,
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
        "http_protocol_options": {"accept_http_10": True, **_header_case(settings)},
        "http2_protocol_options": _http2_listener_options(settings),
        "local_reply_config": local_reply_config(settings, grpc=grpc),
        "route_config": routes,
        "http_filters": [*filters, _router()],
    }
    if not grpc:
        manager["upgrade_configs"] = [{"upgrade_type": "websocket"}]
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


def _http_routes(settings: DataPlaneSettings) -> dict[str, Any]:
    """Every path to the upstream by one prefix route: the tap names a request's route
    template itself, so Envoy matches no regular expression per request. A declared body
    over max_body_bytes is refused at once, before it is sent, and so is a request with
    two Host fields; an upgrade (WebSocket) is not buffered: its body is the tunnel,
    closed after read_timeout of silence. The upstream learns the client's address in
    X-Forwarded-For, appended as nginx's `proxy_add_x_forwarded_for` does."""
    action = {"cluster": HTTP_CLUSTER, "timeout": _seconds(settings.read_timeout)}
    no_buffer = {"envoy.filters.http.buffer": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3."
                 "BufferPerRoute", "disabled": True}}
    routes: list[dict[str, Any]] = [
        # two Host fields arrive joined (RFC 9112 3.2: refuse with a 400)
        {"name": "several-hosts", "match": {"prefix": "/", "headers": [
            {"name": ":authority", "string_match": {"contains": ","}}]},
         "direct_response": {"status": 400}, "typed_per_filter_config": no_buffer},
        {"name": "body-too-large", "match": {"prefix": "/", "headers": [
            {"name": "content-length", "range_match": {
                "start": settings.max_body_bytes + 1, "end": 2**63 - 1}}]},
         "direct_response": {"status": 413}, "typed_per_filter_config": no_buffer},
        {"name": "upgrade", "match": {"prefix": "/", "headers": [
            {"name": "upgrade", "present_match": True}]},
         "route": {**action, "timeout": "0s", "idle_timeout": _seconds(settings.read_timeout)},
         "typed_per_filter_config": no_buffer}]
    routes.append({"name": "upstream", "match": {"prefix": "/"}, "route": action})
    return {"name": HTTP_LISTENER, "virtual_hosts": [{
        "name": "upstream", "domains": ["*"], "routes": routes,
        "request_headers_to_add": [{"header": {
            "key": "x-forwarded-for", "value": "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%"},
            "append_action": "APPEND_IF_EXISTS_OR_ADD"}]}]}


def _grpc_routes() -> dict[str, Any]:
    """Every call to the one gRPC upstream (the tap tells the methods apart). A call's
    deadline is the client's `grpc-timeout`, kept by Envoy too; streams live as long as
    they move."""
    action = {"cluster": GRPC_CLUSTER, "timeout": "0s",
              "max_stream_duration": {"grpc_timeout_header_max": "0s",
                                      "grpc_timeout_header_offset": _seconds(DEADLINE_LEAD_S)}}
    return {"name": GRPC_LISTENER, "virtual_hosts": [{"name": "upstream", "domains": ["*"],
            "routes": [{"name": "grpc", "match": {"prefix": "/"}, "route": action}]}]}


def _buffer_filter(settings: DataPlaneSettings) -> dict[str, Any]:
    return {"name": "envoy.filters.http.buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
        "max_request_bytes": settings.max_body_bytes}}


def _upstream_target(settings: DataPlaneSettings) -> tuple[str, int, bool]:
    parts = urlsplit(settings.upstream)
    tls = parts.scheme == "https"
    return parts.hostname or "127.0.0.1", parts.port or (443 if tls else 80), tls


def bootstrap(settings: DataPlaneSettings, tap_config: str, admin_socket: str) -> dict[str, Any]:
    """The whole bootstrap, as a mapping to write as JSON (which Envoy reads as YAML)."""
    host, port, tls = _upstream_target(settings)
    listeners = [_listener(HTTP_LISTENER, settings.listen.host, settings.listen.port,
                           _connection_manager(HTTP_LISTENER, settings,
                                               _http_routes(settings),
                                               [_buffer_filter(settings),
                                                _tap_filter(tap_config)],
                                               grpc=False), settings)]
    clusters = [_cluster(HTTP_CLUSTER, host, port, settings, http2=False, tls=tls)]
    if settings.grpc_listen is not None:
        listeners.append(_listener(
            GRPC_LISTENER, settings.grpc_listen.host, settings.grpc_listen.port,
            _connection_manager(GRPC_LISTENER, settings, _grpc_routes(),
                                [_tap_filter(tap_config)], grpc=True), settings))
        grpc_host, _, grpc_port = settings.grpc_upstream.rpartition(":")
        clusters.append(_cluster(GRPC_CLUSTER, grpc_host.strip("[]"), int(grpc_port),
                                 settings, http2=True, tls=False))
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
                "max_active_downstream_connections":
                    downstream_connection_limit(connections)}}]},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }
