"""Grafana dashboards generated with grafanalib from the SLO spec."""
