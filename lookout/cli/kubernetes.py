"""`lookout inject` and `lookout webhook serve|certs`."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import IO

import yaml

from lookout.k8s.inject import (
    DEFAULT_IMAGE,
    InjectError,
    InjectOptions,
    inject_documents,
    pod_monitors,
)


def add_commands(commands: argparse._SubParsersAction) -> None:
    inject = commands.add_parser("inject", help="add the sidecar to Kubernetes manifests "
                                 "(like istioctl kube-inject)")
    inject.add_argument("-f", "--filename", required=True,
                        help="multi-document YAML to read; - for stdin")
    inject.add_argument("-o", "--output", default="-", help="where to write; - for stdout")
    _options(inject)
    inject.set_defaults(run=run_inject)
    inject.add_argument("--pod-monitor", action="store_true",
                        help="also write a prometheus-operator PodMonitor per workload")

    webhook = commands.add_parser("webhook", help="the mutating admission webhook")
    webhook.set_defaults(run=run_webhook)
    actions = webhook.add_subparsers(dest="webhook_command", required=True)
    serve = actions.add_parser("serve", help="answer AdmissionReviews over HTTPS")
    serve.add_argument("--listen", default="0.0.0.0:8443", help="HOST:PORT")
    serve.add_argument("--cert", default="/etc/lookout-webhook/tls.crt")
    serve.add_argument("--key", default="/etc/lookout-webhook/tls.key")
    _options(serve)
    manifests = actions.add_parser("manifests", help="the webhook's Deployment, Service, "
                                   "RBAC and MutatingWebhookConfiguration")
    manifests.add_argument("--namespace", default="lookout-system")
    manifests.add_argument("--image", default=DEFAULT_IMAGE)
    certs = actions.add_parser("certs", help="make a CA and serving certificate and "
                               "(with --patch) put the CA into the webhook configuration")
    certs.add_argument("--service", default="lookout-webhook")
    certs.add_argument("--namespace", default="lookout-system")
    certs.add_argument("--out", required=True, help="directory for ca.crt, tls.crt, tls.key")
    certs.add_argument("--patch", metavar="CONFIGURATION",
                       help="MutatingWebhookConfiguration whose caBundle to set")
    certs.add_argument("--kubeconfig", help="(default: in-cluster, else ~/.kube/config)")


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="the lookout image")
    parser.add_argument("--no-native-sidecar", action="store_true",
                        help="a regular container instead of an init container with "
                             "restartPolicy Always (clusters older than 1.29)")
    parser.add_argument("--listen-port", type=int, default=8080, help="sidecar data port")
    parser.add_argument("--admin-port", type=int, default=9090, help="sidecar admin port")


def _inject_options(args: argparse.Namespace) -> InjectOptions:
    return InjectOptions(image=args.image, native_sidecar=not args.no_native_sidecar,
                         listen_port=args.listen_port, admin_port=args.admin_port)


MAX_MANIFEST_CHARS = 64 * 2**20


def _open_input(name: str) -> IO[str]:
    return sys.stdin if name == "-" else open(name, encoding="utf-8")


def run_inject(args: argparse.Namespace) -> int:
    try:
        with _open_input(args.filename) as source:
            text = source.read(MAX_MANIFEST_CHARS + 1)  # never all of /dev/zero
        if len(text) > MAX_MANIFEST_CHARS:
            print(f"lookout inject: {args.filename}: larger than {MAX_MANIFEST_CHARS // 2**20} "
                  "MiB of manifests; split it", file=sys.stderr)
            return 1
        documents = list(yaml.safe_load_all(text))
    except UnicodeDecodeError:
        print(f"lookout inject: {args.filename}: not UTF-8 text", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"lookout inject: {args.filename}: {error.strerror}", file=sys.stderr)
        return 1
    except yaml.YAMLError as error:
        print(f"lookout inject: {args.filename}: not valid YAML ({error})", file=sys.stderr)
        return 1
    try:
        injected, outcome = inject_documents(documents, _inject_options(args))
    except InjectError as error:
        print(f"lookout inject: {error}", file=sys.stderr)
        return 1
    if args.pod_monitor:
        injected += pod_monitors(outcome)
    text = yaml.safe_dump_all([d for d in injected if d is not None], sort_keys=False)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
    for warning in outcome.warnings:
        print(f"lookout inject: warning: {warning}", file=sys.stderr)
    return 0


def manifests_yaml(namespace: str, image: str) -> str:
    from lookout.k8s.manifests import webhook_manifests

    return yaml.safe_dump_all(webhook_manifests(namespace, image), sort_keys=False)


def run_webhook(args: argparse.Namespace) -> int:
    if args.webhook_command == "manifests":
        sys.stdout.write(manifests_yaml(args.namespace, args.image))
        return 0
    if args.webhook_command == "certs":
        from lookout.k8s.certs import make_certificate, patch_ca_bundle, write

        certificate = make_certificate(args.service, args.namespace)
        write(certificate, Path(args.out))
        print(f"wrote ca.crt, tls.crt, tls.key to {args.out}")
        if args.patch:
            patch_ca_bundle(args.patch, certificate.ca_bundle, args.kubeconfig)
            print(f"caBundle of {args.patch} set")
        return 0

    from lookout.k8s import webhook
    from lookout.sidecar.config import parse_address
    from lookout.sidecar.runtime.logs import configure_logging

    configure_logging("info")
    address = parse_address(args.listen)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await webhook.serve(address.host, address.port, Path(args.cert), Path(args.key),
                            _inject_options(args), os.environ.get("POD_NAMESPACE"), stop)

    try:
        asyncio.run(main())
    except OSError as error:
        print(f"lookout webhook: {error}", file=sys.stderr)
        return 1
    return 0
