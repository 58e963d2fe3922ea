"""The mutating admission webhook: AdmissionReview v1 in, a JSONPatch out, computed by
the same `inject_template` as `lookout inject`.

Two entries of the shipped MutatingWebhookConfiguration call it: `/mutate/namespace`
for pods of namespaces labelled `lookout.io/injection=enabled` (inject unless the pod
says `lookout.io/inject: "false"`), and `/mutate/annotation` for pods elsewhere (inject
only on `lookout.io/inject: "true"`). So the webhook needs no API access to read
namespace labels. Whatever goes wrong, the answer allows the pod, with a warning:
a bug here must never stop a deployment. Serving certificates are reloaded from their
files when they change (cert-manager rotates them in place).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import logging
import os
import ssl
from pathlib import Path
from typing import Any

import jsonpatch
from aiohttp import web

from k8s.inject import (
    InjectError,
    InjectOptions,
    Outcome,
    inject_template,
    is_injected,
    wants_injection,
    workload_name,
)

log = logging.getLogger(__name__)

MAX_REVIEW_BYTES = 4 * 1024**2  # the API server sends at most ~3 MiB objects
RELOAD_INTERVAL = 2.0


def _allowed(uid: str, patch: list[dict[str, Any]] | None = None,
             warnings: list[str] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    if warnings:
        response["warnings"] = [w[:256] for w in warnings]  # the API server's limit
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": response}


def review(body: Any, mode: str, options: InjectOptions, own_namespace: str | None
           ) -> dict[str, Any]:
    """The AdmissionReview answer for one request (pure: tested without a server).
    Whatever the request holds, the answer admits the pod: with the sidecar, or
    without it and a warning saying why."""
    request = body.get("request") if isinstance(body, dict) else None
    uid = str(request.get("uid", "")) if isinstance(request, dict) else ""
    if not isinstance(request, dict) or not uid:
        return _allowed(uid, warnings=["lookout: not an AdmissionReview v1 request; "
                                       "pod admitted without the sidecar"])
    try:
        return _review_pod(request, uid, mode, options, own_namespace)
    except (InjectError, KeyError, TypeError, ValueError, AttributeError) as error:
        return _allowed(uid, warnings=[f"lookout: sidecar not injected: {error}"])


def _review_pod(request: dict[str, Any], uid: str, mode: str, options: InjectOptions,
                own_namespace: str | None) -> dict[str, Any]:
    pod = request.get("object")
    if request.get("kind", {}).get("kind") != "Pod" or not isinstance(pod, dict) \
            or not isinstance(pod.get("spec"), dict):
        return _allowed(uid, warnings=["lookout: the request holds no Pod; admitted "
                                       "unchanged"])
    namespace = request.get("namespace") or (pod.get("metadata") or {}).get("namespace")
    metadata = pod.get("metadata") or {}
    if namespace is not None and namespace == own_namespace:
        return _allowed(uid)  # never the webhook's own pods
    if is_injected(pod["spec"]) or not wants_injection(metadata, mode == "namespace"):
        return _allowed(uid)
    mutated = copy.deepcopy(pod)
    mutated.setdefault("metadata", {})
    outcome = Outcome()
    inject_template(mutated["metadata"], mutated["spec"], workload_name(pod), options,
                    outcome, "Pod", namespace)
    patch = jsonpatch.make_patch(pod, mutated).patch
    return _allowed(uid, patch, [f"lookout: {w}" for w in outcome.warnings])


class CertificateReloader:
    """An SSLContext whose certificate follows the files: checked every few seconds,
    loaded again when either file's mtime changes (new handshakes use it)."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._stamp = self._mtimes()
        self.context.load_cert_chain(cert, key)

    def _mtimes(self) -> tuple[float, float]:
        return (os.stat(self.cert).st_mtime, os.stat(self.key).st_mtime)

    def check(self) -> bool:
        try:
            stamp = self._mtimes()
            if stamp == self._stamp:
                return False
            self.context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as error:  # half-written rotation: next round
            log.warning("serving certificate not reloaded: %s", error)
            return False
        self._stamp = stamp
        log.info("serving certificate reloaded from %s", self.cert)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_INTERVAL)
            self.check()


def build_app(options: InjectOptions, own_namespace: str | None) -> web.Application:
    async def mutate(request: web.Request) -> web.Response:
        mode = request.match_info["mode"]
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            body = None
        return web.json_response(review(body, mode, options, own_namespace))

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    app = web.Application(client_max_size=MAX_REVIEW_BYTES)
    app.router.add_post("/mutate/{mode:namespace|annotation}", mutate)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(host: str, port: int, cert: Path, key: Path, options: InjectOptions,
                own_namespace: str | None, stop: asyncio.Event) -> None:
    reloader = CertificateReloader(cert, key)
    runner = web.AppRunner(build_app(options, own_namespace), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=reloader.context).start()
    log.info("lookout webhook serving https://%s:%d (namespace %s)", host, port, own_namespace)
    reloading = asyncio.create_task(reloader.run())
    try:
        await stop.wait()
    finally:
        reloading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reloading
        await runner.cleanup()
