"""`lookout audit import`: read a batch's labels back (a COCO annotations JSON from any
tool, or the batch's Label Studio project) and record the audited estimates."""

from __future__ import annotations

import argparse
import sys


def add_command(actions: argparse._SubParsersAction) -> None:
    from lookout.cli.audit import label_studio_options, store_option

    imported = actions.add_parser("import", help="labels in, audited precision/recall out")
    store_option(imported)
    where = imported.add_mutually_exclusive_group(required=True)
    where.add_argument("--coco", metavar="FILE", help="a COCO annotations JSON")
    where.add_argument("--label-studio", metavar="URL", help="read the batch's project")
    imported.add_argument("--batch", help="the batch id (default: the one the COCO file "
                          "names; required with --label-studio)")
    imported.add_argument("--json", action="store_true", help="print the record")
    label_studio_options(imported)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from lookout.cli.audit import label_studio_token, summary_line
    from lookout.cli.samples import SourceError, StoreSource
    from lookout.sidecar.samples.audit_coco import read_coco
    from lookout.sidecar.samples.audit_import import batch_samples, complete
    from lookout.sidecar.samples.audit_records import AuditRecords
    from lookout.sidecar.samples.label_studio import LabelStudioError, read_annotations

    try:
        store = StoreSource(args.store).store
        records = AuditRecords(store)
        if args.coco:
            named, annotations = read_coco(Path(args.coco).read_bytes())
            batch_id = args.batch or named
            if batch_id is None:
                raise ValueError("the COCO file does not name its batch: give --batch")
            source = "coco"
        else:
            if not args.batch:
                raise ValueError("--label-studio needs --batch")
            batch_id, source = args.batch, "label_studio"
        record = records.read(batch_id)
        if record is None:
            raise ValueError(f"no audit batch {batch_id} in {store.directory}")
        if not args.coco:
            project = (record.get("label_studio") or {}).get("project")
            if project is None:
                raise ValueError(f"batch {batch_id} was not sent to Label Studio")
            annotations = read_annotations(
                args.label_studio, label_studio_token(args), int(project))
        samples = batch_samples(store, [*record["random_ids"], *record["top_up_ids"]])
        record = complete(record, samples, annotations, source)
        records.write(record)
    except (SourceError, LabelStudioError, ValueError, OSError) as error:
        print(f"lookout audit import: {error}", file=sys.stderr)
        return 1
    print(json.dumps(record, indent=1) if args.json else summary_line(record))
    return 0
