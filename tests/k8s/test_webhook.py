"""The admission webhook over real HTTPS on loopback, with real AdmissionReview v1
JSON: its patch, applied with a JSONPatch library, gives what `lookout inject` gives;
opt-in, opt-out, idempotency, its own namespace, malformed reviews, TLS only, and a
rotated certificate picked up without a restart."""

from __future__ import annotations

import base64
import copy
import http.client
import json
import socket
import ssl
import sys
from pathlib import Path

import jsonpatch
import pytest

from lookout.k8s.certs import make_certificate, write
from lookout.k8s.inject import InjectOptions, inject_documents
from tests.support.processes import REPO, ManagedProcess, free_port, port_accepts, wait_until

OWN_NAMESPACE = "lookout-system"


def _pod(annotations: dict[str, str] | None = None, **spec_changes) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "yolo-api-7d9f-", "namespace": "vision",
                         "labels": {"app": "yolo-api"}, "annotations": annotations or {}},
            "spec": {"containers": [{"name": "api", "image": "example/yolo-api:1.2",
                                     "ports": [{"name": "http", "containerPort": 8000}]}],
                     **spec_changes}}


def _review(pod: dict, namespace: str = "vision", uid: str = "705ab4f5-6393-11e8") -> dict:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "namespace": namespace, "operation": "CREATE", "object": pod,
                        "userInfo": {"username": "system:serviceaccount:kube-system:rs"}}}


class Webhook:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        write(make_certificate("lookout-webhook", OWN_NAMESPACE, ("localhost",)), directory)
        self.port = free_port()
        self.process = ManagedProcess(
            [sys.executable, "-m", "lookout", "webhook", "serve",
             "--listen", f"127.0.0.1:{self.port}", "--cert", str(directory / "tls.crt"),
             "--key", str(directory / "tls.key")], env={"POD_NAMESPACE": OWN_NAMESPACE})
        wait_until(lambda: port_accepts(self.port) or not self.process.alive(), 30,
                   "the webhook to listen")
        assert self.process.alive(), self.process.output

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.directory / "ca.crt"))

    def post(self, path: str, body: bytes) -> tuple[int, dict]:
        connection = http.client.HTTPSConnection("localhost", self.port, timeout=10,
                                                 context=self.context())
        try:
            connection.request("POST", path, body=body,
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    def admit(self, review: dict, mode: str = "namespace") -> dict:
        status, answer = self.post(f"/mutate/{mode}", json.dumps(review).encode())
        assert status == 200 and answer["kind"] == "AdmissionReview"
        response = answer["response"]
        assert response["allowed"] is True and response["uid"] == review["request"]["uid"]
        return response

    def served_certificate(self) -> bytes:
        """The certificate the server presents (not verified: only compared)."""
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.getpeercert(binary_form=True)


@pytest.fixture(scope="module")
def webhook(tmp_path_factory):
    server = Webhook(tmp_path_factory.mktemp("webhook-tls"))
    yield server
    assert server.process.terminate() == 0


def _patched(pod: dict, response: dict) -> dict:
    patch = json.loads(base64.b64decode(response["patch"]))
    assert response["patchType"] == "JSONPatch"
    return jsonpatch.apply_patch(copy.deepcopy(pod), patch)


def test_the_patch_gives_exactly_what_inject_gives(webhook) -> None:
    pod = _pod()
    response = webhook.admit(_review(pod))
    [expected], _ = inject_documents([pod], InjectOptions())
    assert _patched(pod, response) == expected
    assert expected["spec"]["initContainers"][0]["name"] == "lookout"


def test_annotation_mode_injects_only_pods_that_ask(webhook) -> None:
    assert "patch" not in webhook.admit(_review(_pod()), mode="annotation")
    asking = _pod({"lookout.io/inject": "true"})
    response = webhook.admit(_review(asking), mode="annotation")
    assert _patched(asking, response)["spec"]["initContainers"][0]["name"] == "lookout"


def test_opt_out_idempotency_own_namespace_and_host_network(webhook) -> None:
    assert "patch" not in webhook.admit(_review(_pod({"lookout.io/inject": "false"})))
    pod = _pod()
    once = _patched(pod, webhook.admit(_review(pod)))
    assert "patch" not in webhook.admit(_review(once))  # never twice
    assert "patch" not in webhook.admit(_review(_pod(), namespace=OWN_NAMESPACE))
    host = webhook.admit(_review(_pod(hostNetwork=True)))
    assert "patch" not in host and any("hostNetwork" in w for w in host["warnings"])


def test_pods_that_cannot_be_injected_are_admitted_with_a_warning(webhook) -> None:
    portless = _pod()
    del portless["spec"]["containers"][0]["ports"]
    response = webhook.admit(_review(portless))
    assert "patch" not in response and "upstream-port" in response["warnings"][0]


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"request": {"uid": ""}}',
                                  json.dumps({"request": {"uid": "1", "kind": {"kind": "Pod"},
                                                          "object": "a string"}}).encode()])
def test_malformed_reviews_are_allowed_with_a_warning(webhook, body: bytes) -> None:
    status, answer = webhook.post("/mutate/namespace", body)
    assert status == 200 and answer["response"]["allowed"] is True
    assert answer["response"]["warnings"] and "patch" not in answer["response"]


def test_plain_http_is_refused(webhook) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", webhook.port, timeout=5)
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        connection.request("POST", "/mutate/namespace", body=b"{}")
        connection.getresponse().read()
    connection.close()


def test_a_rotated_certificate_is_served_without_a_restart(webhook) -> None:
    before = webhook.served_certificate()
    write(make_certificate("lookout-webhook", OWN_NAMESPACE, ("localhost",)),
          webhook.directory)
    wait_until(lambda: webhook.served_certificate() != before, 30,
               "the new certificate to be served")
    # verified against the new CA (webhook.context() reads the rewritten ca.crt)
    assert webhook.admit(_review(_pod({"lookout.io/inject": "false"})))["allowed"]


def test_certs_patch_sets_the_ca_bundle_through_the_api(tmp_path: Path) -> None:
    """`lookout webhook certs --patch` against the Kubernetes API stand-in (no API
    server can run here): it reads the configuration and sets caBundle on each webhook
    with one strategic-merge patch, leaving the rest of each webhook as it was."""
    import subprocess

    import yaml

    from tests.support.kube_api import KubeApiStandIn

    shipped = yaml.safe_load_all((REPO / "k8s" / "manifests" / "webhook.yaml").read_text())
    [configuration] = [d for d in shipped if d["kind"] == "MutatingWebhookConfiguration"]
    api = KubeApiStandIn()
    try:
        collection = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
        api.add(collection, configuration)
        name = configuration["metadata"]["name"]
        result = subprocess.run(
            [sys.executable, "-m", "lookout", "webhook", "certs", "--out", str(tmp_path),
             "--patch", name, "--kubeconfig", str(api.kubeconfig(tmp_path))],
            capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        [patch] = api.writes()
        assert (patch.method, patch.content_type) == (
            "PATCH", "application/strategic-merge-patch+json")
        ca = base64.b64encode((tmp_path / "ca.crt").read_bytes()).decode()
        patched = api.get(f"{collection}/{name}")
        assert [hook["clientConfig"]["caBundle"] for hook in patched["webhooks"]] == [ca, ca]
        for before, after in zip(configuration["webhooks"], patched["webhooks"], strict=True):
            assert after["clientConfig"]["service"] == before["clientConfig"]["service"]
            assert after["rules"] == before["rules"]
    finally:
        api.close()
