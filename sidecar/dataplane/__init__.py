"""Envoy as the data plane: its generated configuration and admin socket, the tap's
shared memory as Python sees it (rings of exchanges, exact RED counters), the route
templates and gRPC status names they are labelled by, the ABI guard, and the readiness
probe of the upstream Envoy forwards to. Envoy's process is started in `processes/`."""
