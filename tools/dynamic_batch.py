"""Give a batch-1 export of the repo's tiny YOLO a dynamic batch dimension, in place.

The shipped models were first exported with a fixed batch of 1, which stops the
reference runner from micro-batching. Retraining only to re-export is wasteful, so
this rewrites the graph: the input and output get a symbolic `batch` dimension and
every 3-D `Reshape` target `[1, C, -1]` becomes `[0, C, -1]` (0 copies the input's
leading dimension). 2-D targets are anchor grids, batch-independent, and stay.
The result is checked before it is written: a batch of 4 must give exactly the
outputs of 4 single-image runs. `train_tiny_yolo.py` now exports with a dynamic batch
directly, so this is only needed for models exported before that.

    python tools/dynamic_batch.py lookout_demo/models/*.onnx
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import numpy_helper


def _reshape_targets(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    constants = {node.output[0]: node.attribute[0].t for node in model.graph.node
                 if node.op_type == "Constant" and node.attribute[0].name == "value"}
    constants.update({init.name: init for init in model.graph.initializer})
    return {node.input[1]: constants[node.input[1]] for node in model.graph.node
            if node.op_type == "Reshape" and node.input[1] in constants}


def make_batch_dynamic(model: onnx.ModelProto) -> int:
    """Rewrite `model` in place; returns how many Reshape targets changed."""
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    changed = 0
    for tensor in _reshape_targets(model).values():
        target = numpy_helper.to_array(tensor)
        if target.ndim == 1 and target.size == 3 and target[0] == 1:
            target = target.copy()
            target[0] = 0
            tensor.CopyFrom(numpy_helper.from_array(target, tensor.name))
            changed += 1
    return changed


def check_batched(path: Path, batch: int = 4) -> None:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    source = session.get_inputs()[0]
    height, width = source.shape[2], source.shape[3]
    images = np.random.default_rng(0).random((batch, 3, height, width), dtype=np.float32)
    together = session.run(None, {source.name: images})[0]
    alone = np.concatenate([session.run(None, {source.name: images[i:i + 1]})[0]
                            for i in range(batch)])
    if together.shape != alone.shape or not np.allclose(together, alone, atol=1e-4):
        raise SystemExit(f"{path}: batched outputs differ from single-image outputs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for path in args.models:
        model = onnx.load(str(path))
        changed = make_batch_dynamic(model)
        onnx.checker.check_model(model)
        candidate = path.with_suffix(".dynamic.onnx")
        onnx.save(model, str(candidate))
        check_batched(candidate)
        candidate.replace(path)
        print(f"{path}: batch is dynamic ({changed} reshape targets rewritten)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
