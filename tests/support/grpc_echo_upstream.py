"""A gRPC upstream that answers every unary method with the bytes it was sent, and the V2
`ServerReady` with ready=true: for the tests that need the gRPC port served, not a model.

    python -m tests.support.grpc_echo_upstream PORT
"""

from __future__ import annotations

import asyncio
import sys

import grpc
from grpc import aio

SERVER_READY = "/inference.GRPCInferenceService/ServerReady"


class Echo(grpc.GenericRpcHandler):
    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        ready = details.method == SERVER_READY

        async def answer(request: bytes, context: aio.ServicerContext) -> bytes:
            return b"\x08\x01" if ready else request
        return grpc.unary_unary_rpc_method_handler(answer)


async def main(port: int) -> None:
    server = aio.server()
    server.add_generic_rpc_handlers((Echo(),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
