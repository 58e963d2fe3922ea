"""`lookout webhook certs`: a CA and the webhook's serving certificate, and the CA put
into the MutatingWebhookConfiguration's `caBundle` (for clusters without
cert-manager)."""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 365


@dataclass(frozen=True, slots=True)
class ServingCertificate:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @property
    def ca_bundle(self) -> str:
        return base64.b64encode(self.ca_pem).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def dns_names(service: str, namespace: str) -> list[str]:
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
            f"{service}.{namespace}.svc.cluster.local"]


def make_certificate(service: str, namespace: str, extra_names: tuple[str, ...] = (),
                     days: int = VALID_DAYS) -> ServingCertificate:
    """A fresh CA (its key is thrown away: nothing else is ever signed with it) and a
    P-256 serving certificate for the Service's DNS names."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("lookout-webhook-ca"))
          .issuer_name(_name("lookout-webhook-ca")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + datetime.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names = [*dns_names(service, namespace), *extra_names]
    cert = (x509.CertificateBuilder().subject_name(_name(names[2]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    return ServingCertificate(
        ca.public_bytes(serialization.Encoding.PEM),
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()))


def write(certificate: ServingCertificate, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.crt").write_bytes(certificate.ca_pem)
    (directory / "tls.crt").write_bytes(certificate.cert_pem)
    key = directory / "tls.key"
    key.touch(mode=0o600)
    key.write_bytes(certificate.key_pem)


def patch_ca_bundle(configuration: str, ca_bundle: str, kubeconfig: str | None = None) -> None:
    """Set `caBundle` on every webhook of the named MutatingWebhookConfiguration, with
    the credentials `kubectl` would use (in-cluster or kubeconfig)."""
    from kubernetes import client

    from lookout.k8s.kube import api_client

    api = client.AdmissionregistrationV1Api(api_client(kubeconfig))
    current = api.read_mutating_webhook_configuration(configuration)
    patch = {"webhooks": [{"name": hook.name, "clientConfig": {"caBundle": ca_bundle}}
                          for hook in current.webhooks or []]}
    api.patch_mutating_webhook_configuration(configuration, patch)
