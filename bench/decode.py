"""Decoding + NMS of a YOLOv8 [1, 84, 8400] head: lookout's numpy decoder against the
same decoding done by OpenCV's NMSBoxesBatched and by onnxruntime running an ONNX
NonMaxSuppression graph, in one run, on the same heads.

    python bench/decode.py [--objects 20] [--repeats 200]

Heads look like a real model's: every object fires on a cluster of neighbouring
anchors with jittered boxes and scores, everything else is low-score noise. All three
pipelines must return the same boxes (checked) before their times are compared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from lookout.shadow_eval.boxes import box_iou
from lookout.shadow_eval.decode import DecodeSettings, decode_yolov8

SETTINGS = DecodeSettings(conf_threshold=0.25, iou_threshold=0.45, max_detections=300)
NUM_CLASSES, ANCHORS = 80, 8400


def realistic_head(objects: int, rng: np.random.Generator) -> np.ndarray:
    head = np.zeros((1, 4 + NUM_CLASSES, ANCHORS), np.float32)
    head[0, :4] = rng.uniform(0, 640, (4, ANCHORS))
    head[0, 4:] = rng.uniform(0, 0.1, (NUM_CLASSES, ANCHORS))
    slots = rng.permutation(ANCHORS)
    cursor = 0
    for _ in range(objects):
        cx, cy = rng.uniform(60, 580, 2)
        w, h = rng.uniform(20, 120, 2)
        cls = rng.integers(NUM_CLASSES)
        score = rng.uniform(0.5, 0.95)
        cluster = slots[cursor:cursor + rng.integers(8, 30)]
        cursor += len(cluster)
        head[0, 0, cluster] = cx + rng.normal(0, 2, len(cluster))
        head[0, 1, cluster] = cy + rng.normal(0, 2, len(cluster))
        head[0, 2, cluster] = w * rng.uniform(0.95, 1.05, len(cluster))
        head[0, 3, cluster] = h * rng.uniform(0.95, 1.05, len(cluster))
        head[0, 4 + cls, cluster] = score * rng.uniform(0.6, 1.0, len(cluster))
    return head


def decode_opencv(head: np.ndarray, cv2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The usual OpenCV pipeline, vectorised: threshold, then cv2.dnn.NMSBoxesBatched."""
    predictions = head[0]
    class_scores = predictions[4:]
    best = class_scores.max(axis=0)
    candidates = np.flatnonzero(best > SETTINGS.conf_threshold)
    classes = class_scores[:, candidates].argmax(axis=0)
    cx, cy, w, h = predictions[:4, candidates]
    ltwh = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)
    scores = best[candidates]
    # OpenCV's top_k caps the candidates *before* suppression; cap the result instead
    keep = cv2.dnn.NMSBoxesBatched(ltwh.tolist(), scores.tolist(), classes.tolist(),
                                   SETTINGS.conf_threshold, SETTINGS.iou_threshold)
    keep = np.asarray(keep, dtype=np.int64).reshape(-1)[: SETTINGS.max_detections]
    xyxy = np.column_stack([ltwh[:, 0], ltwh[:, 1], ltwh[:, 0] + ltwh[:, 2],
                            ltwh[:, 1] + ltwh[:, 3]])
    return xyxy[keep], scores[keep], classes[keep]


def nms_graph_bytes() -> bytes:
    """[1, 84, N] head -> NonMaxSuppression over (centre) boxes and per-class scores."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Slice", ["head", "zero", "four", "one"], ["boxes_t"]),
        helper.make_node("Transpose", ["boxes_t"], ["boxes"], perm=[0, 2, 1]),
        helper.make_node("Slice", ["head", "four", "big", "one"], ["scores"]),
        helper.make_node("NonMaxSuppression",
                         ["boxes", "scores", "max_out", "iou", "score_threshold"],
                         ["selected"], center_point_box=1),
    ]
    constants = [
        helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor("four", TensorProto.INT64, [1], [4]),
        helper.make_tensor("big", TensorProto.INT64, [1], [1 << 30]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        helper.make_tensor("max_out", TensorProto.INT64, [1], [SETTINGS.max_detections]),
        helper.make_tensor("iou", TensorProto.FLOAT, [1], [SETTINGS.iou_threshold]),
        helper.make_tensor("score_threshold", TensorProto.FLOAT, [1],
                           [SETTINGS.conf_threshold]),
    ]
    graph = helper.make_graph(
        nodes, "yolo_nms",
        [helper.make_tensor_value_info("head", TensorProto.FLOAT, [1, 4 + NUM_CLASSES, ANCHORS])],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, [None, 3])],
        initializer=constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def decode_onnxruntime(head: np.ndarray, session) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    (selected,) = session.run(None, {"head": head})
    classes, anchors = selected[:, 1], selected[:, 2]
    scores = head[0, 4 + classes, anchors]
    order = np.argsort(-scores)[: SETTINGS.max_detections]
    classes, anchors, scores = classes[order], anchors[order], scores[order]
    cx, cy, w, h = head[0, :4][:, anchors]
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return xyxy, scores, classes


def matched(a, b) -> tuple[int, int]:
    """(boxes of `a` found in `b`, boxes in either): agreement between two pipelines."""
    if not len(a[0]) or not len(b[0]):
        return 0, max(len(a[0]), len(b[0]))
    found = int((box_iou(a[0], b[0]).max(axis=1) > 0.99).sum())
    return found, max(len(a[0]), len(b[0]))


def time_per_call(function, heads, repeats: int) -> float:
    """Median microseconds per head over `repeats` passes through all heads."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for head in heads:
            function(head)
        samples.append((time.perf_counter() - start) / len(heads) * 1e6)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=20, help="objects per head")
    parser.add_argument("--heads", type=int, default=20, help="distinct heads")
    parser.add_argument("--repeats", type=int, default=50, help="timed passes")
    args = parser.parse_args()
    try:
        import cv2
        import onnxruntime
    except ImportError as error:
        sys.exit(f"{error.name} is required: pip install -e '.[bench]'")

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # one core each, like the numpy and OpenCV paths
    session = onnxruntime.InferenceSession(nms_graph_bytes(), options,
                                           providers=["CPUExecutionProvider"])
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    heads = [realistic_head(args.objects, rng) for _ in range(args.heads)]

    def ours(head):
        detections = decode_yolov8(head, SETTINGS)
        return detections.boxes, detections.scores, detections.classes

    def opencv(head):
        return decode_opencv(head, cv2)

    def ort(head):
        return decode_onnxruntime(head, session)

    peers = {"lookout numpy": ours, "opencv NMSBoxesBatched": opencv,
             "onnxruntime NonMaxSuppression": ort}
    agreement = {}
    for name, function in peers.items():
        pairs = [matched(ours(head), function(head)) for head in heads]
        agreement[name] = sum(p[0] for p in pairs) / max(sum(p[1] for p in pairs), 1)
        # boxes whose IoU sits right at the threshold may go either way in float maths
        if agreement[name] < 0.98:
            sys.exit(f"{name} agrees with lookout on only {agreement[name]:.1%} of boxes; "
                     "timings would not compare")
    kept = statistics.mean(len(ours(h)[0]) for h in heads)
    candidates = statistics.mean(int((h[0, 4:].max(axis=0) > SETTINGS.conf_threshold).sum())
                                 for h in heads)
    print(f"{args.heads} heads [1, 84, 8400], {args.objects} objects, {candidates:.0f} "
          f"candidates over threshold, {kept:.1f} detections kept")
    print("agreement with lookout's boxes: " + ", ".join(
        f"{name} {share:.1%}" for name, share in agreement.items()))
    times = {name: time_per_call(function, heads, args.repeats)
             for name, function in peers.items()}
    fastest_peer = min(times[name] for name in peers if name != "lookout numpy")
    print("| pipeline | us per head | lookout / this |")
    print("|---|---|---|")
    for name, value in times.items():
        print(f"| {name} | {value:.0f} | {times['lookout numpy'] / value:.2f}x |")
    print(f"\nlookout vs the faster peer: {times['lookout numpy'] / fastest_peer:.2f}x "
          "(below 1.00x is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
