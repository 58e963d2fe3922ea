"""The SLO spec, burn-rate and error-budget math, and the canary judge.

Imports nothing of lookout's but the metrics catalog (`sidecar.catalog`).
"""
