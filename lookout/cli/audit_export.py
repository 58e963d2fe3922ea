"""`lookout audit export`: draw the batch, record it, and hand it to a labelling tool (a
COCO zip to any tool, or a Label Studio project), the primary's boxes pre-filled."""

from __future__ import annotations

import argparse
import sys
import time


def add_command(actions: argparse._SubParsersAction) -> None:
    from lookout.cli.audit import label_studio_options, store_option

    export = actions.add_parser("export", help="draw a random batch and send it for labelling")
    store_option(export)
    export.add_argument("--model", required=True)
    export.add_argument("--version", required=True)
    export.add_argument("--since", required=True, help="window start: 7d (ago), unix "
                        "seconds or RFC 3339")
    export.add_argument("--until", help="window end (default: now)")
    export.add_argument("--size", type=int, default=200, help="random images to draw")
    export.add_argument("--seed", type=int, help="the draw's seed (default: from the clock; "
                        "recorded either way)")
    export.add_argument("--top-up", type=int, default=0, help="images to add from other "
                        "strata for error hunting (marked; never in the estimates)")
    export.add_argument("--top-up-strategies", default="", help="which strata, e.g. "
                        "error,disagreement (default: all but random)")
    where = export.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--output", help="the zip to write (with --format coco)")
    where.add_argument("--label-studio", metavar="URL", help="create a Label Studio project")
    export.add_argument("--format", choices=("coco",), default="coco")
    export.add_argument("--classes", default="", help="the labels annotators may use, e.g. "
                        "car,person (default: those either model found in the batch)")
    label_studio_options(export)


def run(args: argparse.Namespace) -> int:
    from lookout.cli.audit import label_studio_token
    from lookout.cli.samples import SourceError, StoreSource
    from lookout.sidecar.runtime.times import parse_time
    from lookout.sidecar.samples.audit_coco import write_batch
    from lookout.sidecar.samples.audit_draw import DrawError, draw_batch
    from lookout.sidecar.samples.audit_records import AuditRecords
    from lookout.sidecar.samples.label_studio import LabelStudioError, send_batch

    now = time.time()
    try:
        since = parse_time(args.since, now)
        until = parse_time(args.until, now) if args.until else now
        store = StoreSource(args.store).store
        seed = args.seed if args.seed is not None else int(now * 1000) % 2**31
        strategies = [s for s in args.top_up_strategies.split(",") if s]
        record, samples = draw_batch(store, args.model, args.version, since, until,
                                     args.size, seed, args.top_up, strategies, now)
        if args.label_studio:
            from lookout.sidecar.samples.audit_estimates import predictions
            from lookout.sidecar.samples.audit_import import audit_items

            names = [n for n in args.classes.split(",") if n] or sorted(
                {b.label for s in samples for source in ("primary", "reference")
                 for b in predictions(s, source)})
            project = send_batch(
                args.label_studio, label_studio_token(args),
                f"lookout audit {record['batch_id']}", names, audit_items(store, samples))
            record["label_studio"] = {"url": args.label_studio, "project": project}
            where = f"Label Studio project {project} at {args.label_studio}"
        else:
            with open(args.output, "wb") as out:
                write_batch(store, record, samples, out)
            where = args.output
        AuditRecords(store).write(record)
    except (SourceError, DrawError, LabelStudioError, ValueError, OSError) as error:
        print(f"lookout audit export: {error}", file=sys.stderr)
        return 1
    sizes = record["sizes"]
    print(f"batch {record['batch_id']}: {sizes['random']} random images of {sizes['stratum']} "
          f"in the window (+{sizes['top_up']} top-up) -> {where}")
    return 0
