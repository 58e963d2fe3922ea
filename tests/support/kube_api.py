"""A stand-in for the Kubernetes API server, over HTTP on loopback.

No API server can run on these machines (no container runtime, no etcd, no kubelet),
so the rollback and CA-bundle tests talk to this instead: a generic REST store of the
objects a test seeds, with the API's own paths, GET/LIST/PATCH/POST, the `scale` and
`status` subresources, label selectors, resourceVersions, and the three patch types
(JSON patch, JSON merge patch, and strategic merge on the fields the tests use: maps
merge, lists of named items merge by name). It records every request the official
`kubernetes` client sends, so the tests assert on the calls a real server would get:
method, path, content type, body and credentials.
"""

from __future__ import annotations

import copy
import json
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonpatch

TOKEN = "stand-in-token"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any
    authorization: str


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge(target: Any, patch: Any) -> Any:
    """Maps merge; lists of maps with `name` merge item by item on it; other lists are
    replaced — the strategic-merge behaviour of the fields these tests patch."""
    if isinstance(patch, dict) and isinstance(target, dict):
        result = dict(target)
        for key, value in patch.items():
            result[key] = (strategic_merge(target[key], value) if key in target and
                           value is not None else value)
            if value is None:
                result.pop(key)
        return result
    if (isinstance(patch, list) and isinstance(target, list)
            and all(isinstance(i, dict) and "name" in i for i in patch + target)):
        by_name = {item["name"]: item for item in target}
        for item in patch:
            by_name[item["name"]] = strategic_merge(by_name.get(item["name"], {}), item)
        return list(by_name.values())
    return copy.deepcopy(patch)


class KubeApiStandIn:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}  # object path -> object
        self.requests: list[RecordedRequest] = []
        self.forbidden: set[tuple[str, str]] = set()  # (method, path) answered 403
        self._lock = threading.Lock()
        self._version = 1000
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                stand_in._serve(self)

            do_GET = do_PATCH = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "stand-in",
            "clusters": [{"name": "stand-in", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": TOKEN}}],
            "contexts": [{"name": "stand-in",
                          "context": {"cluster": "stand-in", "user": "tester"}}],
        }))
        return path

    def api_client(self) -> Any:
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        configuration.api_key = {"authorization": f"Bearer {TOKEN}"}
        return client.ApiClient(configuration)

    # -- the store --------------------------------------------------------------------

    def add(self, collection: str, document: dict[str, Any]) -> dict[str, Any]:
        """Seed an object; `collection` is its list path, e.g.
        /apis/apps/v1/namespaces/shop/deployments."""
        document = copy.deepcopy(document)
        metadata = document.setdefault("metadata", {})
        metadata.setdefault("uid", f"uid-{metadata['name']}-{len(self.objects)}")
        metadata["resourceVersion"] = self._next_version()
        self.objects[f"{collection}/{metadata['name']}"] = document
        return document

    def get(self, path: str) -> dict[str, Any]:
        return self.objects[path]

    def writes(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method not in ("GET",)]

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    # -- HTTP ---------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(handler.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        content_type = handler.headers.get("Content-Type", "").split(";")[0]
        body = json.loads(raw) if raw else None
        record = RecordedRequest(handler.command, url.path, query, content_type, body,
                                 handler.headers.get("Authorization", ""))
        with self._lock:
            self.requests.append(record)
            status, answer = self._answer(record)
        payload = json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _answer(self, request: RecordedRequest) -> tuple[int, Any]:
        if request.authorization != f"Bearer {TOKEN}":
            return _status(401, "Unauthorized", "no or wrong bearer token")
        if (request.method, request.path) in self.forbidden:
            return _status(403, "Forbidden", f"{request.method} {request.path} is forbidden")
        path, subresource = request.path, ""
        if path.endswith(("/scale", "/status")) and path.rsplit("/", 1)[0] in self.objects:
            path, subresource = path.rsplit("/", 1)
        if request.method == "GET" and path in self.objects:
            found = self.objects[path]
            return 200, _scale(found) if subresource == "scale" else found
        if request.method == "GET":
            return 200, self._list(path, request.query.get("labelSelector", ""))
        if request.method == "POST":
            return self._create(path, request.body)
        if request.method == "PATCH" and path in self.objects:
            return self._patch(path, subresource, request)
        return _status(404, "NotFound", f"{request.path} not found")

    def _list(self, collection: str, selector: str) -> dict[str, Any]:
        wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
        items = [obj for path, obj in self.objects.items()
                 if path.rsplit("/", 1)[0] == collection
                 and all(obj["metadata"].get("labels", {}).get(k) == v
                         for k, v in wanted.items())]
        return {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items}

    def _create(self, collection: str, body: dict[str, Any]) -> tuple[int, Any]:
        metadata = body.setdefault("metadata", {})
        if "name" not in metadata:
            metadata["name"] = f"{metadata.get('generateName', 'object-')}{len(self.objects)}"
        return 201, self.add(collection, body)

    def _patch(self, path: str, subresource: str,
               request: RecordedRequest) -> tuple[int, Any]:
        current = self.objects[path]
        patch = request.body
        if subresource == "scale":  # a Scale's spec.replicas is the object's
            patch = {"spec": {"replicas": patch["spec"]["replicas"]}}
        try:
            if request.content_type == "application/json-patch+json":
                patched = jsonpatch.apply_patch(current, patch)
            elif request.content_type == "application/merge-patch+json":
                patched = merge_patch(current, patch)
            elif request.content_type == "application/strategic-merge-patch+json":
                if "/apis/argoproj.io/" in path:  # custom resources: never strategic
                    return _status(415, "UnsupportedMediaType",
                                   "strategic merge patch is not supported for custom "
                                   "resources")
                patched = strategic_merge(current, patch)
            else:
                return _status(415, "UnsupportedMediaType", request.content_type)
        except jsonpatch.JsonPatchTestFailed as error:
            return _status(409, "Conflict", str(error))
        if subresource == "status":
            patched = {**current, "status": patched.get("status")}
        elif "status" in current:
            patched["status"] = current["status"]
        patched["metadata"]["resourceVersion"] = self._next_version()
        self.objects[path] = patched
        return 200, _scale(patched) if subresource == "scale" else patched


def _scale(deployment: dict[str, Any]) -> dict[str, Any]:
    metadata = deployment["metadata"]
    return {"apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": metadata["name"], "namespace": metadata.get("namespace"),
                         "resourceVersion": metadata["resourceVersion"]},
            "spec": {"replicas": deployment["spec"].get("replicas", 1)},
            "status": {"replicas": deployment["spec"].get("replicas", 1)}}


def _status(code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
    return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                  "message": message, "reason": reason, "code": code}
