"""Boxes over a thumbnail as SVG: the primary's solid, the reference's dashed, an
audit's annotators' dotted (the `audit` layer, for audited samples), in
thumbnail pixels (the SVG's viewBox), so they scale with the image at any size, and
labels placed where they overlap no other label (a label with no free place is left
out of the picture; the detection tables beside it list every box)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from lookout.sidecar.samples.export import thumbnail_boxes
from lookout.sidecar.samples.store import Sample

LAYERS = ("primary", "reference")
AUDIT = "audit"  # the annotators' boxes: no score, drawn and labelled before the models'
CHAR_WIDTH = 0.6  # of the font size: a label's width, estimated (no font metrics here)


@dataclass(frozen=True, slots=True)
class Rect:
    x: float
    y: float
    width: float
    height: float

    def overlaps(self, other: Rect) -> bool:
        return not (self.x + self.width <= other.x or other.x + other.width <= self.x
                    or self.y + self.height <= other.y or other.y + other.height <= self.y)


def place_labels(boxes: list[tuple[str, list[float]]], size: tuple[int, int],
                 font: float) -> list[Rect | None]:
    """Where each box's label goes: above its top-left corner, inside it, below it or
    inside its bottom, whichever first fits the image and overlaps no label placed
    before; None where none does. Boxes come in the order they are to be preferred."""
    width, height = size
    placed: list[Rect] = []
    out: list[Rect | None] = []
    for text, (x1, y1, _, y2) in boxes:
        label_width, label_height = CHAR_WIDTH * font * len(text) + 4, font + 2
        x = min(max(x1, 0.0), max(width - label_width, 0.0))
        choice = None
        for y in (y1 - label_height, y1, y2, y2 - label_height):
            spot = Rect(x, y, label_width, label_height)
            if y >= 0 and y + label_height <= height and \
                    not any(spot.overlaps(other) for other in placed):
                choice = spot
                break
        if choice is not None:
            placed.append(choice)
        out.append(choice)
    return out


def _caption(name: str, score: float | None) -> str:
    return name if score is None else f"{name} {score:.2f}"


def overlay(sample: Sample, layers: tuple[str, ...] = LAYERS, labels: bool = True,
            audit: Sequence[tuple[str, float, float, float, float]] = ()) -> str:
    """The SVG to lay over the sample's thumbnail; `labels` off for the gallery's small
    cards, where each box still names itself in its tooltip; `audit`: the annotators'
    boxes (label, x1, y1, x2, y2) of an audited sample."""
    size = (sample.thumbnail_width, sample.thumbnail_height)
    font = max(2.0, sample.thumbnail_height / 30)
    drawn: list[tuple[str, str, list[float], float | None]] = [
        (AUDIT, name, [x1, y1, x2, y2], None) for name, x1, y1, x2, y2 in audit]
    drawn += [(layer, name, box, score) for layer in layers
              for name, box, score in thumbnail_boxes(sample, layer)]
    # the truth, then the surest first: their labels get the free places
    drawn.sort(key=lambda item: -2.0 if item[3] is None else -item[3])
    spots = place_labels([(_caption(name, score), box) for _, name, box, score in drawn],
                         size, font) if labels else [None] * len(drawn)
    parts = [f'<svg class="overlay" viewBox="0 0 {size[0]} {size[1]}" '
             f'preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg" '
             f'role="img" aria-label="detections">']
    for (layer, name, (x1, y1, x2, y2), score), label in zip(drawn, spots, strict=True):
        title = escape(f"{layer}: {_caption(name, score)}")
        parts.append(f'<g class="box {layer}"><title>{title}</title>'
                     f'<rect x="{x1:.1f}" y="{y1:.1f}" width="{x2 - x1:.1f}" '
                     f'height="{y2 - y1:.1f}"/></g>')
        if label is not None:
            parts.append(f'<g class="label {layer}"><rect x="{label.x:.1f}" '
                         f'y="{label.y:.1f}" width="{label.width:.1f}" '
                         f'height="{label.height:.1f}"/><text x="{label.x + 2:.1f}" '
                         f'y="{label.y + font:.1f}" font-size="{font:.1f}">'
                         f'{escape(_caption(name, score))}</text></g>')
    parts.append("</svg>")
    return "".join(parts)
