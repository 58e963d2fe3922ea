"""The audit's COCO path: the batch as a COCO zip with the primary's boxes pre-filled
(export.py's, with the batch id in `info.audit`), and labels read back from a COCO
annotations JSON that any tool wrote.

A tool may drop the custom fields: an image's sample id is read from its `sample_id`,
else from its file name (`images/<id>.<ext>`, as exported), and the batch id from
`info.audit.batch_id` when kept (else the command line names it). Every image the file
lists counts as reviewed: an image without annotations was judged to hold no object.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from lookout.sidecar.samples.audit_items import LabelledBox
from lookout.sidecar.samples.export import write_export
from lookout.sidecar.samples.store import Sample, valid_id

if TYPE_CHECKING:
    from lookout.sidecar.samples.fleet_store import FleetStore
    from lookout.sidecar.samples.store import SampleStore


class CocoError(ValueError):
    """A file that is not a COCO annotations document this can read; says where."""


def write_batch(store: SampleStore | FleetStore, record: dict[str, Any],
                samples: Iterable[Sample], destination: IO[bytes]) -> int:
    """The batch's zip; returns how many images it holds."""
    audit = {key: record[key] for key in ("batch_id", "model", "version", "window", "seed")}
    audit["top_up_ids"] = record["top_up_ids"]
    return write_export(store, samples, destination, "coco", "primary",  # type: ignore[arg-type]
                        info={"audit": audit})


def read_coco(document: bytes) -> tuple[str | None, dict[str, tuple[LabelledBox, ...]]]:
    """The batch id (None when the tool dropped it) and sample id -> labelled boxes."""
    try:
        coco = json.loads(document)
        categories = {c["id"]: str(c["name"]) for c in coco.get("categories", [])}
        images: dict[Any, str] = {}
        for image in coco["images"]:
            sample_id = image.get("sample_id") or PurePosixPath(
                str(image.get("file_name", ""))).name.split(".")[0]
            if not valid_id(str(sample_id)):
                raise CocoError(f"image {image.get('id')!r}: no sample id (neither "
                                f"sample_id nor a file name images/<id>.<ext>)")
            images[image["id"]] = str(sample_id)
        boxes: dict[str, list[LabelledBox]] = {sample_id: [] for sample_id in images.values()}
        for annotation in coco.get("annotations", []):
            x, y, width, height = (float(v) for v in annotation["bbox"])
            label = categories[annotation["category_id"]]
            boxes[images[annotation["image_id"]]].append(
                LabelledBox(label, x, y, x + width, y + height))
        batch = (coco.get("info") or {}).get("audit", {}).get("batch_id")
    except CocoError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CocoError(f"not a COCO annotations document: {type(error).__name__} "
                        f"{error}") from None
    return (str(batch) if batch else None), {k: tuple(v) for k, v in boxes.items()}
