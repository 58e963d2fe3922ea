"""What Envoy refused or closed before it reached the upstream, under lookout's names:
`lookout_client_refused_total{reason}` from the counters Envoy keeps itself, read from
its admin socket, and a tally in the log (never a value the client sent).

Envoy's counters start from zero when Envoy is restarted; the totals here do not."""

from __future__ import annotations

import http.client
import json
import logging
import threading

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from lookout.sidecar.dataplane.envoy_admin import admin_request
from lookout.sidecar.dataplane.envoy_config import GRPC_LISTENER, HTTP_LISTENER
from lookout.sidecar.runtime.logs import TallyLog
from lookout.slo import catalog

log = logging.getLogger(__name__)

REFRESH_SECONDS = 5.0
# (stat name prefix, suffix) -> reason. `http1.`/`http2.` are the codecs' own, for
# both ports; `listener.` is every data listener (the admin's is a pipe: `listener.admin`)
_STATS: tuple[tuple[str, str, str], ...] = (
    (f"http.{HTTP_LISTENER}.", "downstream_cx_protocol_error", "bad_request"),
    (f"http.{GRPC_LISTENER}.", "downstream_cx_protocol_error", "bad_http2"),
    ("http.", "downstream_rq_too_many_premature_resets", "bad_http2"),
    ("http2.", "too_many_header_frames", "bad_http2"),
    ("http2.", "inbound_empty_frames_flood", "bad_http2"),
    ("http2.", "inbound_priority_frames_flood", "bad_http2"),
    ("http2.", "inbound_window_update_frames_flood", "bad_http2"),
    ("http2.", "outbound_control_flood", "bad_http2"),
    ("http2.", "outbound_flood", "bad_http2"),
    ("http.", "downstream_rq_header_timeout", "head_timeout"),
    ("listener.", "downstream_pre_cx_timeout", "head_timeout"),  # sent nothing at all
    ("http.", "downstream_rq_idle_timeout", "body_timeout"),
    ("http.", "downstream_rq_timeout", "body_timeout"),
    ("http.", "downstream_cx_idle_timeout", "keepalive_timeout"),
    ("http.", "downstream_rq_too_large", "body_too_large"),
    # the HTTP port's refusing routes (envoy_config._http_routes): a declared body over
    # max_body_bytes (413), two Host fields (400); lookout_requests_total tells them apart
    (f"http.{HTTP_LISTENER}.", "rq_direct_response", "refused_by_route"),
    ("listener.", "downstream_cx_overflow", "connection_limit"),
    ("listener.", "downstream_global_cx_overflow", "connection_limit"),
)
REASONS = tuple(sorted({reason for _, _, reason in _STATS}))
_FILTER = "(" + "|".join(sorted({suffix for _, suffix, _ in _STATS})) + ")$"


def reason_of(stat: str) -> str | None:
    if stat.startswith("listener.admin."):
        return None
    for prefix, suffix, reason in _STATS:
        if stat.startswith(prefix) and stat.endswith("." + suffix):
            return reason
    return None


class EnvoyRefusals:
    """Envoy's refusal counters, refreshed every REFRESH_SECONDS and at each scrape."""

    def __init__(self, admin_socket: str, tally: TallyLog) -> None:
        self._socket = admin_socket
        self._tally = tally
        self._lock = threading.Lock()
        self._last: dict[str, int] = {}
        self.totals: dict[str, int] = dict.fromkeys(REASONS, 0)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="envoy-refusals", daemon=True)

    def refresh(self) -> None:
        try:
            status, body = admin_request(self._socket, "GET",
                                         f"/stats?format=json&usedonly&filter={_FILTER}")
        except (OSError, http.client.HTTPException):
            return  # Envoy is restarting (its deaths are counted elsewhere)
        if status != 200:
            return
        with self._lock:
            for entry in json.loads(body).get("stats", []):
                name, value = entry.get("name", ""), entry.get("value")
                reason = reason_of(name)
                if reason is None or not isinstance(value, int):
                    continue
                last = self._last.get(name, 0)
                added = value - last if value >= last else value  # a restarted Envoy
                self._last[name] = value
                if added:
                    self.totals[reason] += added
                    self._tally.add(reason, added)

    def collect(self) -> list[Metric]:
        self.refresh()
        family = CounterMetricFamily(catalog.CLIENT_REFUSED.name, catalog.CLIENT_REFUSED.help,
                                     labels=catalog.CLIENT_REFUSED.labels)
        with self._lock:
            for reason, total in sorted(self.totals.items()):
                family.add_metric([reason], total)
        return [family]

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(REFRESH_SECONDS):
            self.refresh()

    def stop(self) -> None:
        """The last refresh (Envoy still answering) and the tally's last line."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(REFRESH_SECONDS)
        self.refresh()
        self._tally.flush()
