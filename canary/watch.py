"""`lookout canary watch`: judge every interval and roll the canary back on `fail`.

A loop, not an operator: one process per canary, run as a Deployment (canary.manifests)
or a CI job. It stops after a rollback (exit 1), after `--promote-after` passes in a row
(exit 0), after `--iterations` judgements (the last verdict's exit code), or on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lookout.canary.prometheus import Prometheus, PrometheusError
from lookout.k8s.rollback import Rollback, RollbackError, Target, TargetKind
from lookout.slo.spec import SpecError, parse_duration

if TYPE_CHECKING:  # the judge needs numpy and scipy: imported when a watch runs, not
    # when any `lookout` command builds its parser (`serve` among them)
    from lookout.canary.comparison import CanaryComparison
    from lookout.slo.judge import JudgeSettings

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def add_watch_options(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--canary-deployment", metavar="NAME",
                        help="the canary of a stable/canary Deployment pair: scaled to 0")
    target.add_argument("--deployment", metavar="NAME",
                        help="one Deployment mid-rollout: its previous pod template restored")
    target.add_argument("--rollout", metavar="NAME", help="an Argo Rollout: aborted")
    parser.add_argument("--namespace", help="(default: the pod's own, else `default`)")
    parser.add_argument("--kubeconfig", help="(default: in-cluster, else ~/.kube/config)")
    parser.add_argument("--every", default="1m", help="time between judgements (1m)")
    parser.add_argument("--iterations", type=int, default=0,
                        help="stop after this many judgements (0: never)")
    parser.add_argument("--promote-after", type=int, default=0,
                        help="stop with exit 0 after this many passes in a row (0: never)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what a rollback would do; change nothing")


def target_from(args: argparse.Namespace) -> Target:
    namespace = args.namespace
    if not namespace:
        namespace = (IN_CLUSTER_NAMESPACE.read_text().strip()
                     if IN_CLUSTER_NAMESPACE.exists() else "default")
    if args.canary_deployment:
        return Target(TargetKind.DEPLOYMENT_PAIR, namespace, args.canary_deployment)
    if args.deployment:
        return Target(TargetKind.DEPLOYMENT, namespace, args.deployment)
    return Target(TargetKind.ROLLOUT, namespace, args.rollout)


def _log(**fields: object) -> None:
    print(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}),
          flush=True)


def run_watch(args: argparse.Namespace, prometheus: Prometheus, comparison: CanaryComparison,
              settings: JudgeSettings) -> int:
    from lookout.canary.comparison import judge_canary  # the judge: numpy and scipy
    from lookout.canary.report import gallery_link
    from lookout.k8s.kube import api_client
    from lookout.slo.judge import Verdict

    try:
        every = parse_duration(args.every, "--every")
    except SpecError as error:
        print(f"lookout canary: {error}", file=sys.stderr)
        return 3
    target = target_from(args)
    rollback = Rollback(api_client(args.kubeconfig), target, dry_run=args.dry_run)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    passes, iteration, exit_code = 0, 0, 2
    while not stop.is_set():
        iteration += 1
        try:
            judgement = judge_canary(prometheus, comparison, settings)
        except PrometheusError as error:
            _log(event="error", error=str(error))
            exit_code = 3
        else:
            exit_code = judgement.verdict.exit_code
            _log(event="judged", target=str(target), verdict=judgement.verdict.value,
                 reason=judgement.reason, canary=comparison.canary_version,
                 baseline=comparison.baseline_version)
            if judgement.verdict is Verdict.FAIL:
                try:
                    frames = gallery_link(args, comparison, time.time())
                    for action in rollback.apply(judgement.reason):
                        _log(event="rollback", target=str(target), action=action,
                             **({"gallery_url": frames} if frames else {}))
                except RollbackError as error:
                    _log(event="rollback_failed", target=str(target), error=str(error))
                    return 3
                return 1
            passes = passes + 1 if judgement.verdict is Verdict.PASS else 0
            if args.promote_after and passes >= args.promote_after:
                _log(event="promotable", target=str(target), passes=passes)
                return 0
        if args.iterations and iteration >= args.iterations:
            return exit_code
        stop.wait(every)
    return 0
