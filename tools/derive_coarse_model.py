"""Derive the shipped `coarse` detector from `primary`, and its reference model
`coarse_reference` from `reference`: a second model with its own class list and input
size, for multi-model pods (two models behind one server), without a second training run.

    python tools/derive_coarse_model.py        # needs onnx (a test dependency)

The graph takes 320x320 images, resizes them to the primary's 256x256, runs the primary,
scales its boxes back to 320-pixel units and groups its six shape classes into three:
round (circle, ring), angular (square, triangle) and pointed (star, cross), each the
highest score of its group. Its output is the YOLOv8 layout [B, 4+3, N] with
Ultralytics-style metadata, so lookout reads it as it would any exported YOLO model.
The derivation is deterministic: rerunning it gives the same bytes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lookout.lookout_demo.models import MODELS_DIR, PRIMARY, REFERENCE
from lookout.lookout_demo.scenes import CLASSES

IMGSZ = 320
GROUPS = {"round": ("circle", "ring"), "angular": ("square", "triangle"),
          "pointed": ("star", "cross")}


def _prefixed(graph: onnx.GraphProto, prefix: str) -> None:
    """Rename every value of the primary's graph so the wrapper's names cannot clash."""
    names = {v.name for v in graph.input} | {v.name for v in graph.output} | \
        {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
    rename = {name: prefix + name for name in names}
    for node in graph.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
        node.name = prefix + node.name
    for initializer in graph.initializer:
        initializer.name = rename[initializer.name]


def derive(source: Path, role: str) -> onnx.ModelProto:
    primary = onnx.load(str(source))
    graph = primary.graph
    inner_input, inner_output = graph.input[0].name, graph.output[0].name
    _prefixed(graph, "primary/")
    source = primary.metadata_props
    inner_size = int(dict((p.key, p.value) for p in source)["imgsz"].strip("[]").split(",")[0])
    scale = IMGSZ / inner_size
    group_index = [[CLASSES.index(name) for name in members] for members in GROUPS.values()]
    constants = [
        numpy_helper.from_array(np.array([1, 1, scale ** -1, scale ** -1], np.float32),
                                "resize_scales"),
        numpy_helper.from_array(np.array([4, len(CLASSES)], np.int64), "split_sizes"),
        numpy_helper.from_array(np.array(scale, np.float32), "box_scale"),
    ]
    nodes = [helper.make_node("Resize", ["images", "", "resize_scales"],
                              ["primary/" + inner_input], mode="linear",
                              coordinate_transformation_mode="half_pixel", name="resize")]
    nodes += list(graph.node)
    nodes += [
        helper.make_node("Split", ["primary/" + inner_output, "split_sizes"],
                         ["boxes", "scores"], axis=1, name="split"),
        helper.make_node("Mul", ["boxes", "box_scale"], ["scaled_boxes"], name="scale_boxes"),
    ]
    grouped = []
    for group, indices in zip(GROUPS, group_index, strict=True):
        index = numpy_helper.from_array(np.array(indices, np.int64), f"{group}_classes")
        constants.append(index)
        nodes += [
            helper.make_node("Gather", ["scores", f"{group}_classes"], [f"{group}_scores"],
                             axis=1, name=f"gather_{group}"),
            helper.make_node("ReduceMax", [f"{group}_scores"], [f"{group}_max"], axes=[1],
                             keepdims=1, name=f"max_{group}"),
        ]
        grouped.append(f"{group}_max")
    nodes.append(helper.make_node("Concat", ["scaled_boxes", *grouped], ["output0"], axis=1,
                                  name="concat"))
    wrapper = helper.make_graph(
        nodes, "coarse",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                       ["batch", 3, IMGSZ, IMGSZ])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT,
                                       ["batch", 4 + len(GROUPS), "anchors"])],
        initializer=[*graph.initializer, *constants])
    model = helper.make_model(wrapper, opset_imports=list(primary.opset_import),
                              producer_name="lookout tools/derive_coarse_model.py")
    model.ir_version = primary.ir_version
    names = "{" + ", ".join(f"{i}: '{n}'" for i, n in enumerate(GROUPS)) + "}"
    metadata = {"names": names, "stride": "16", "imgsz": f"[{IMGSZ}, {IMGSZ}]",
                "task": "detect", "batch": "1",
                "description": f"lookout tiny YOLO (coarse: {role} regrouped at 320)",
                "author": "lookout tools/derive_coarse_model.py"}
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return model


def main() -> int:
    for source, name in ((PRIMARY, "coarse"), (REFERENCE, "coarse_reference")):
        path = MODELS_DIR / f"{name}.onnx"
        onnx.save(derive(source, source.stem), str(path))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
