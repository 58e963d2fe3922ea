"""The request path: the data port's HTTP/1.1 server, request targets, the proxy
handler, the upstream pool, header rules, route labels and request telemetry.
Nothing here parses a body."""
