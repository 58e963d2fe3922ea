"""Envoy as the data plane: its generated configuration, the tap's shared memory as
Python sees it (rings of exchanges, exact RED counters), and the ABI guard."""
