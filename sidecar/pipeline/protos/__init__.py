"""The Open Inference Protocol's gRPC messages, from the descriptor set that
tools/export_inference_protos.py writes, loaded into a pool of lookout's own.

A private pool, not protobuf's default one: tritonclient and kserve each register
`inference.*` in the default pool, and two registrations of one name refuse to load, so
lookout's copy must not be a third. The request path reads only `KNOWN_METHODS` (its
bounded `route` labels); the messages are decoded in the analysis workers.
"""

from __future__ import annotations

from importlib.resources import files

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

SERVICE = "inference.GRPCInferenceService"
# the standard health service (grpc/health/v1/health.proto) is not in the set; its two
# methods are named here so that they get their own `route` label
HEALTH_METHODS = ("/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch")


def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    fileset = descriptor_pb2.FileDescriptorSet.FromString(
        files(__package__).joinpath("inference.binpb").read_bytes())
    for file in fileset.file:
        pool.Add(file)
    return pool


POOL = _pool()


def message_class(name: str) -> type[Message]:
    """The generated class of a message, by its full name (`inference.ModelInferRequest`)."""
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(name))


def _known_methods() -> frozenset[str]:
    """Every method of the protocol's service, and the health service's, by path."""
    service = POOL.FindServiceByName(SERVICE)
    return frozenset((*(f"/{SERVICE}/{method.name}" for method in service.methods),
                      *HEALTH_METHODS))


KNOWN_METHODS = _known_methods()
INFER_METHOD = f"/{SERVICE}/ModelInfer"
STREAM_INFER_METHOD = f"/{SERVICE}/ModelStreamInfer"
