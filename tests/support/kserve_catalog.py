"""What tests/support/kserve_models.py serves, importable without importing `kserve`:
KServe's generated protos and tritonclient's register the same `inference.*` names in
protobuf's default pool, so one process can never import both. The server runs in a
process of its own; the tests, which drive it with tritonclient, read these."""

MODELS = {"primary": ("primary", "3"), "coarse": ("coarse", "1")}  # name: (file, version)
INPUT_SIZES = {"primary": 256, "coarse": 320, "slow": 256, "reference": 256}
SLOW_MODEL = "slow"  # the primary detector, served with --grpc-port only, answering late
SLOW_SECONDS = 3.0
# with --reference: the shipped reference model alone, as a shared reference pool serves it
REFERENCE_MODEL = ("reference", "1")  # (name, version)
