"""YOLO output decoding, NMS, the reference-model runner, agreement and drift tests.

Depends only on numpy, scipy, onnxruntime and evidently, so it can run in a worker
process without the data plane.
"""
