"""Maintainer script: write the Open Inference Protocol's gRPC descriptors, as NVIDIA's
`tritonclient` distribution publishes them (`grpc_service.proto` and the
`model_config.proto` it imports), into the FileDescriptorSet lookout loads at run time
(sidecar/pipeline/protos/inference.binpb).

Triton's file is taken rather than KServe's because it is the superset: KServe's
`grpc_predict_v2.proto` has the same messages under the same numbers but no
`ModelStreamInfer`, which streaming YOLO clients use. The set is loaded into a private
descriptor pool, so it never collides with a tritonclient or kserve import in the same
process.

    python -m tools.export_inference_protos        # needs tritonclient installed
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2

TARGET = Path(__file__).resolve().parents[1] / "sidecar/pipeline/protos/inference.binpb"


def descriptor_set() -> bytes:
    """The two files, dependencies first, serialised deterministically."""
    from tritonclient.grpc import model_config_pb2, service_pb2

    files = descriptor_pb2.FileDescriptorSet()
    for module in (model_config_pb2, service_pb2):
        files.file.add().ParseFromString(module.DESCRIPTOR.serialized_pb)
    return files.SerializeToString(deterministic=True)


def main() -> None:
    TARGET.write_bytes(descriptor_set())
    print(f"wrote {TARGET} ({TARGET.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
