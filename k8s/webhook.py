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
import re
import ssl
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonpatch
from aiohttp import web

from lookout.k8s.inject import (
    InjectError,
    InjectOptions,
    InjectOutcome,
    inject_template,
    is_injected,
    wants_injection,
    workload_name,
)

log = logging.getLogger(__name__)

MAX_REVIEW_BYTES = 4 * 1024**2  # the API server sends at most ~3 MiB objects
RELOAD_INTERVAL = 2.0
REVIEW_TIMEOUT = 5.0  # the API server waits 10 s by default; answer well before that
REVIEW_THREADS = 2
_UID = re.compile(rb'"uid"\s*:\s*"([0-9A-Za-z-]{1,64})"')


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
    except RecursionError:
        return _allowed(uid, warnings=["lookout: sidecar not injected: the pod is nested "
                                       "too deeply to patch"])


def review_bytes(raw: bytes, mode: str, options: InjectOptions,
                 own_namespace: str | None) -> dict[str, Any]:
    """`review` of a raw body, whatever it holds (run in a worker thread)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else "not JSON"
        return _allowed(_uid_of(raw), warnings=[f"lookout: the review is {reason}; pod "
                                                "admitted without the sidecar"])
    return review(body, mode, options, own_namespace)


def _uid_of(raw: bytes) -> str:
    """The request's uid, found without parsing the whole review (for a late answer)."""
    found = _UID.search(raw[:65536])
    return found.group(1).decode("ascii", "replace") if found else ""


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
    outcome = InjectOutcome()
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
    # reviews are parsed and patched in threads: a huge pod must not hold up the others
    reviewers = ThreadPoolExecutor(REVIEW_THREADS, thread_name_prefix="lookout-review")

    async def mutate(request: web.Request) -> web.Response:
        mode = request.match_info["mode"]
        raw = await request.read()
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(reviewers, review_bytes, raw, mode, options, own_namespace)
        try:
            answer = await asyncio.wait_for(work, REVIEW_TIMEOUT)
        except TimeoutError:
            answer = _allowed(_uid_of(raw), warnings=[
                f"lookout: sidecar not injected: the review took over {REVIEW_TIMEOUT:g}s"])
        return web.json_response(answer)

    async def close_reviewers(app: web.Application) -> None:
        reviewers.shutdown(wait=False, cancel_futures=True)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    app = web.Application(client_max_size=MAX_REVIEW_BYTES)
    app.on_cleanup.append(close_reviewers)
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
