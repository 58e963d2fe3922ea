"""Alertmanager routing for the generated alerts: pages and tickets to their receivers,
grouped per alert and model version, with the inhibitions that keep one incident one
notification."""

from __future__ import annotations

from typing import Any

from lookout.slo.spec import Kind, ServiceSpec

# placeholders: `.invalid` never resolves, so nothing is sent until they are replaced
PAGE_URL = "https://pager.example.invalid/lookout"
TICKET_URL = "https://tickets.example.invalid/lookout"


def alertmanager_config(spec: ServiceSpec) -> dict[str, Any]:
    return {
        "route": {
            "receiver": "ticket",
            "group_by": ["alertname", "model", "version"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "12h",
            "routes": [{"matchers": ['severity="page"'], "receiver": "page",
                        "repeat_interval": "1h"}],
        },
        "receivers": [
            {"name": "page", "webhook_configs": [{"url": PAGE_URL, "send_resolved": True}]},
            {"name": "ticket",
             "webhook_configs": [{"url": TICKET_URL, "send_resolved": True}]},
        ],
        "inhibit_rules": [
            # a paging burn on an SLO makes its ticket-tier burn redundant
            {"source_matchers": ['severity="page"', 'slo=~".+"'],
             "target_matchers": ['severity="ticket"', 'slo=~".+"'],
             "equal": ["slo"]},
            # with the inference server down, latency and quality alerts say nothing new
            {"source_matchers": ['alertname="LookoutUpstreamDown"'],
             "target_matchers": [
                 f'slo_kind=~"{Kind.LATENCY.value}|{Kind.QUALITY.value}"'],
             "equal": ["model"]},
        ],
    }
