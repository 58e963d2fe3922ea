"""A gRPC upstream in the test's own process that counts every call that reaches it:
echo for any unary method, ready=true for the V2 `ServerReady`. The security tests read
`calls` to bound what an attack got through."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent import futures

import grpc

SERVER_READY = "/inference.GRPCInferenceService/ServerReady"


class CountingGrpcUpstream:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        upstream = self

        class Echo(grpc.GenericRpcHandler):
            def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
                method = details.method

                def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
                    with upstream._lock:
                        upstream.calls[method] += 1
                    return b"\x08\x01" if method == SERVER_READY else request
                return grpc.unary_unary_rpc_method_handler(answer)

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                                   handlers=[Echo()])
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    def total(self, method: str | None = None) -> int:
        with self._lock:
            return self.calls[method] if method else sum(self.calls.values())

    def close(self) -> None:
        self._server.stop(0)
