"""Estimated audit records made by hand, in the shape `audit_import.complete` writes:
what the gauges, the dashboards, the canary judge and the trust band read."""

from __future__ import annotations

T0 = 1_800_000_000.0


def rate(audited: float, interval: list[float] | None, proxy: float) -> dict:
    return {"audited": audited, "interval": interval, "proxy": proxy,
            "bias": audited - proxy, "bias_interval": None}


def audit(batch: str, model: str = "m", version: str = "v1", at: float = T0,
          status: str = "estimated", precision: float = 0.8) -> dict:
    row = {"precision": rate(precision, [precision - 0.1, precision + 0.05], 0.9),
           "recall": rate(0.6, [0.5, 0.7], 0.75)}
    return {"batch_id": batch, "created": at, "estimated": at + 60, "status": status,
            "model": model, "version": version, "window": {"since": at - 3600, "until": at},
            "labels": {"random": 40}, "random_ids": [], "top_up_ids": [],
            "estimates": {"all": row, "car": row, "zebra": row}}
