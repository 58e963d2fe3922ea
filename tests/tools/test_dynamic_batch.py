"""tools/dynamic_batch.py on a small batch-1 graph shaped like the tiny YOLO head."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

from tools.dynamic_batch import check_batched, make_batch_dynamic


def _batch_one_model() -> onnx.ModelProto:
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])
    output = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 64])
    grid = helper.make_tensor_value_info("grid", TensorProto.FLOAT, [1, 64])
    nodes = [
        helper.make_node("Constant", [], ["head_shape"],
                         value=numpy_helper.from_array(np.array([1, 3, -1], np.int64))),
        helper.make_node("Reshape", ["images", "head_shape"], ["output0"]),
        helper.make_node("Constant", [], ["anchors"],
                         value=numpy_helper.from_array(np.ones((8, 8), np.float32))),
        helper.make_node("Constant", [], ["grid_shape"],
                         value=numpy_helper.from_array(np.array([1, -1], np.int64))),
        helper.make_node("Reshape", ["anchors", "grid_shape"], ["grid"]),
    ]
    graph = helper.make_graph(nodes, "tiny", [images], [output, grid])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_batch_becomes_dynamic_and_anchor_grids_stay(tmp_path) -> None:
    model = _batch_one_model()
    assert make_batch_dynamic(model) == 1  # only the 3-D head reshape
    path = tmp_path / "dynamic.onnx"
    onnx.save(model, str(path))
    check_batched(path)  # raises when batched outputs differ from single runs
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    head, grid = session.run(None, {"images": np.zeros((5, 3, 8, 8), np.float32)})
    assert head.shape == (5, 3, 64) and grid.shape == (1, 64)
