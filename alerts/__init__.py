"""Prometheus recording/alerting rules and Alertmanager config, generated from the SLO spec."""
