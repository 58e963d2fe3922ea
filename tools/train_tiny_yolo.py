"""Train the two tiny detectors the repo ships, on its own synthetic scenes, and export
them as ONNX in the YOLOv8 output layout with Ultralytics-style metadata.

    pip install torch==2.13.0          # dev only, CPU build; never a runtime dependency
    python tools/train_tiny_yolo.py --model primary
    python tools/train_tiny_yolo.py --model reference

The architecture is a small anchor-free YOLOv8-style network: a strided conv backbone,
a two-level (stride 8 and 16) neck, decoupled box and class heads. Boxes are predicted
as distances from the anchor point; class scores through a sigmoid, no objectness.
The export emits [B, 4+nc, N] (dynamic batch B) with (cx, cy, w, h) in input pixels. Scenes,
initialisation, batch order and flips are seeded; CPU kernels may still differ in the
last bits between machines, so a rerun gives an equivalent model, not identical bytes.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lookout.lookout_demo.models import MODELS_DIR
from lookout.lookout_demo.perturbations import PERTURBATIONS, perturb
from lookout.lookout_demo.scenes import CLASSES, generate_scene
from lookout.shadow_eval.letterbox import letterbox_image

IMGSZ = 256
STRIDES = (8, 16)


@dataclass(frozen=True)
class Recipe:
    width: int
    train_scenes: int
    epochs: int
    augment_share: float  # share of training scenes that are perturbed
    seed: int
    # perturbations drawn for the perturbed share
    kinds: tuple[str, ...] = ()
    # share of scenes that also get objects of a class outside CLASSES, which the
    # targets treat as background: hard negatives
    negatives_share: float = 0.0


RECIPES = {
    "primary": Recipe(width=8, train_scenes=2500, epochs=12, augment_share=0.0, seed=1),
    # a reference model is trained on broader data than the primary: perturbations, and
    # look-alike objects of other classes as negatives, so that it does not share the
    # primary's blind spot for them (docs/QUALITY.md shows what that buys)
    "reference": Recipe(width=12, train_scenes=2500, epochs=10, augment_share=0.6, seed=2,
                        kinds=tuple(k for k in PERTURBATIONS if k != "unseen_class"),
                        negatives_share=0.3),
}


def conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(c_out), nn.SiLU())


class TinyYolo(nn.Module):
    def __init__(self, num_classes: int, width: int) -> None:
        super().__init__()
        c1, c2, c3, c4 = width, width * 2, width * 4, width * 8
        self.num_classes = num_classes
        self.stem = nn.Sequential(conv(3, c1, 2), conv(c1, c2, 2), conv(c2, c2))
        self.p3 = nn.Sequential(conv(c2, c3, 2), conv(c3, c3), conv(c3, c3))
        self.p4 = nn.Sequential(conv(c3, c4, 2), conv(c4, c4), conv(c4, c4))
        self.fuse3 = nn.Sequential(conv(c3 + c4, c3), conv(c3, c3))
        self.heads = nn.ModuleList()
        for channels in (c3, c4):
            self.heads.append(nn.ModuleDict({
                "box": nn.Sequential(conv(channels, channels), nn.Conv2d(channels, 4, 1)),
                "cls": nn.Sequential(conv(channels, channels),
                                     nn.Conv2d(channels, num_classes, 1)),
            }))
        for head in self.heads:  # start with low class scores, as focal-loss detectors do
            nn.init.constant_(head["cls"][-1].bias, -4.0)

    def levels(self, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per level: (box distances [B, 4, H, W] in strides, class logits [B, nc, H, W])."""
        x = self.stem(images)
        p3 = self.p3(x)
        p4 = self.p4(p3)
        n3 = self.fuse3(torch.cat([p3, F.interpolate(p4, scale_factor=2.0)], dim=1))
        return [(F.softplus(h["box"](f)), h["cls"](f)) for h, f in zip(self.heads, (n3, p4),
                                                                         strict=True)]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Export form: [B, 4+nc, N] with (cx, cy, w, h) in input pixels, sigmoid scores."""
        outputs = []
        for (distances, logits), stride in zip(self.levels(images), STRIDES, strict=True):
            batch, _, height, width = distances.shape
            ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
            ax = ((xs + 0.5) * stride).reshape(1, -1).to(distances)
            ay = ((ys + 0.5) * stride).reshape(1, -1).to(distances)
            d = distances.reshape(batch, 4, -1) * stride
            x1, y1, x2, y2 = ax - d[:, 0], ay - d[:, 1], ax + d[:, 2], ay + d[:, 3]
            box = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=1)
            outputs.append(torch.cat([box, logits.reshape(batch, self.num_classes, -1)
                                      .sigmoid()], dim=1))
        return torch.cat(outputs, dim=2)


def anchor_points() -> tuple[torch.Tensor, torch.Tensor]:
    points, strides = [], []
    for stride in STRIDES:
        cells = IMGSZ // stride
        ys, xs = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
        points.append(torch.stack([(xs + 0.5) * stride, (ys + 0.5) * stride], -1).reshape(-1, 2))
        strides.append(torch.full((cells * cells,), float(stride)))
    return torch.cat(points), torch.cat(strides)


def assign(boxes: torch.Tensor, points: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Index of the ground-truth box each anchor learns (-1: background). An anchor is
    positive when inside the box, within 2.5 strides of its centre, and on the level
    suited to the box size; ties go to the smaller box."""
    if len(boxes) == 0:
        return torch.full((len(points),), -1, dtype=torch.long)
    x, y = points[:, 0:1], points[:, 1:2]
    inside = (x > boxes[:, 0]) & (x < boxes[:, 2]) & (y > boxes[:, 1]) & (y < boxes[:, 3])
    centre_x, centre_y = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    radius = 2.5 * strides[:, None]
    near = ((x - centre_x).abs() < radius) & ((y - centre_y).abs() < radius)
    side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    level_ok = torch.where(strides[:, None] == STRIDES[0], side < 64, side >= 40)
    valid = inside & near & level_ok
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    cost = torch.where(valid, area[None, :], torch.full_like(valid, 1e12, dtype=area.dtype))
    best = cost.argmin(dim=1)
    return torch.where(valid.any(dim=1), best, torch.full_like(best, -1))


def giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt, rb = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area_a, area_b = (a[:, 2:] - a[:, :2]).prod(1), (b[:, 2:] - b[:, :2]).prod(1)
    union = area_a + area_b - inter
    iou = inter / union.clamp(min=1e-6)
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).prod(1)
    return iou - (hull - union) / hull.clamp(min=1e-6)


def focal_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    probability = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = probability * targets + (1 - probability) * (1 - targets)
    alpha = 0.25 * targets + 0.75 * (1 - targets)
    return (alpha * (1 - p_t) ** 2 * ce).sum()


def build_dataset(recipe: Recipe, rng: np.random.Generator):
    images, targets = [], []
    for seed in range(recipe.train_scenes):
        scene = generate_scene(seed)
        if rng.random() < recipe.negatives_share:
            scene = perturb(scene, "unseen_class", float(rng.uniform(0.2, 1.0)), seed=seed)
        if rng.random() < recipe.augment_share:
            kind = recipe.kinds[int(rng.integers(len(recipe.kinds)))]
            scene = perturb(scene, kind, float(rng.uniform(0.1, 1.0)), seed=seed)
        canvas, geometry = letterbox_image(scene.image, IMGSZ, IMGSZ)
        keep = scene.classes >= 0
        images.append(canvas)
        targets.append((geometry.to_input(scene.boxes[keep]), scene.classes[keep]))
    return np.stack(images), targets


def train(name: str, recipe: Recipe) -> TinyYolo:
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    started = time.monotonic()
    images, targets = build_dataset(recipe, rng)
    print(f"{name}: {len(images)} scenes ready in {time.monotonic() - started:.0f}s",
          flush=True)
    model = TinyYolo(len(CLASSES), recipe.width)
    points, strides = anchor_points()
    batch_size = 32
    steps = recipe.epochs * math.ceil(len(images) / batch_size)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 3e-3, total_steps=steps,
                                                   pct_start=0.1)
    for epoch in range(recipe.epochs):
        model.train()
        order = rng.permutation(len(images))
        total = 0.0
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            batch = torch.from_numpy(images[index]).permute(0, 3, 1, 2).float() / 255.0
            flip = torch.from_numpy(rng.random(len(index)) < 0.5)
            batch[flip] = batch[flip].flip(-1)
            loss = _batch_loss(model, batch, [targets[i] for i in index], flip, points,
                               strides)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach())
        print(f"{name}: epoch {epoch + 1}/{recipe.epochs} loss "
              f"{total / math.ceil(len(order) / batch_size):.3f} "
              f"({time.monotonic() - started:.0f}s)", flush=True)
    return model.eval()


def _batch_loss(model, batch, batch_targets, flip, points, strides) -> torch.Tensor:
    levels = model.levels(batch)
    distances = torch.cat([d.flatten(2) for d, _ in levels], dim=2)  # [B, 4, N]
    logits = torch.cat([c.flatten(2) for _, c in levels], dim=2)  # [B, nc, N]
    cls_loss, box_loss, positives = 0.0, 0.0, 0
    for i, (boxes_np, classes_np) in enumerate(batch_targets):
        boxes = torch.from_numpy(boxes_np.copy()).float()
        if flip[i] and len(boxes):
            boxes[:, [0, 2]] = IMGSZ - boxes[:, [2, 0]]
        owner = assign(boxes, points, strides)
        positive = owner >= 0
        target = torch.zeros_like(logits[i])
        if positive.any():
            classes = torch.from_numpy(classes_np).long()[owner[positive]]
            d = distances[i][:, positive].T * strides[positive, None]
            p = points[positive]
            predicted = torch.stack([p[:, 0] - d[:, 0], p[:, 1] - d[:, 1],
                                     p[:, 0] + d[:, 2], p[:, 1] + d[:, 3]], dim=1)
            quality = giou(predicted, boxes[owner[positive]])
            box_loss = box_loss + (1 - quality).sum()
            # the class target is the box's IoU quality, so scores rank well-placed boxes
            # first at NMS time (as YOLOv8's task-aligned targets do)
            target[classes, positive.nonzero().squeeze(1)] = quality.detach().clamp(min=0.05)
            positives += int(positive.sum())
        cls_loss = cls_loss + focal_loss(logits[i], target)
    norm = max(positives, 1)
    return (cls_loss + 2.0 * box_loss) / norm


def export(model: TinyYolo, name: str, out_dir: Path) -> Path:
    import onnx

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.onnx"
    dummy = torch.zeros(1, 3, IMGSZ, IMGSZ)
    torch.onnx.export(model, dummy, str(path), opset_version=17, input_names=["images"],
                      output_names=["output0"], dynamo=False,
                      dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}})
    onnx_model = onnx.load(str(path))
    names = "{" + ", ".join(f"{i}: '{n}'" for i, n in enumerate(CLASSES)) + "}"
    metadata = {"names": names, "stride": str(max(STRIDES)), "imgsz": f"[{IMGSZ}, {IMGSZ}]",
                "task": "detect", "batch": "1", "description": f"lookout tiny YOLO ({name})",
                "author": "lookout tools/train_tiny_yolo.py"}
    del onnx_model.metadata_props[:]
    for key, value in metadata.items():
        onnx_model.metadata_props.add(key=key, value=value)
    onnx.save(onnx_model, str(path))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(RECIPES), required=True)
    parser.add_argument("--out", type=Path, default=MODELS_DIR)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = train(args.model, RECIPES[args.model])
    path = export(model, args.model, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
