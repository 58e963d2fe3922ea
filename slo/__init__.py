"""The metrics catalog, the SLO spec, burn-rate and error-budget math, and the canary
judge's statistics. Imports nothing of lookout's: everything else reads the catalog
from here, the sidecar included."""
