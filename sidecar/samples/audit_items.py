"""What an audit hands a labelling tool and reads back from it.

Shared by the COCO path (`audit_coco.py`) and the Label Studio client
(`label_studio.py`), so both give the estimator the same mapping: sample id -> the
annotator's boxes, in the stored thumbnail's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LabelledBox:
    """One box with its class name, in thumbnail pixels (score only for predictions)."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    score: float | None = None


@dataclass(frozen=True)
class AuditItem:
    """One image sent for labelling, with the primary's boxes to pre-fill."""

    sample_id: str
    image: bytes  # the stored thumbnail's bytes
    media_type: str  # e.g. "image/jpeg"
    width: int  # thumbnail pixels
    height: int
    predictions: tuple[LabelledBox, ...]  # the primary's boxes, thumbnail pixels
