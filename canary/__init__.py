"""Canary gating: the judge against Prometheus, Argo Rollouts and Flagger templates, and
the watch loop that rolls a failing canary back."""
