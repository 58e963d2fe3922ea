"""Opening the fleet's bucket with obstore, and naming what went wrong with it.

obstore (Rust's `object_store` crate) speaks S3 and S3-compatible stores, Google Cloud
Storage and Azure Blob Storage behind one API, signs requests itself and finds
credentials where the platform puts them: `AWS_*` variables, web identity (IRSA:
`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`), ECS/EKS container credentials and the
instance profile; `GOOGLE_APPLICATION_CREDENTIALS` or GKE workload identity; `AZURE_*`
(account key, client secret, or workload identity's federated token). lookout never
reads, logs or stores a credential itself. Errors are reported by their first line,
which names the request and the status, never a secret.

`AWS_EC2_METADATA_DISABLED=true` (the AWS SDKs' switch, which object_store does not
read) points the instance-metadata lookup at a closed loopback port, so a pod (or a
test) that must not ask a metadata service never does.

Retries inside one call are few and short (the sink retries whole batches with its own
back-off), so a bucket that is down costs one short wait per batch, not minutes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lookout.sidecar.samples.layout import StoreUrl

if TYPE_CHECKING:
    from obstore.store import ObjectStore

    from lookout.sidecar.settings import SampleSettings

ENCRYPTIONS = ("", "AES256", "aws:kms", "aws:kms:dsse")
NO_METADATA = "http://127.0.0.1:9"  # the discard port: refused at once, never answered
REASONS = ("unreachable", "denied", "not_found", "error")  # failure labels, bounded


@dataclass(frozen=True, slots=True)
class BucketOptions:
    """What the URL cannot say: an S3-compatible endpoint, the region, encryption and
    the storage class of new objects, and how long one request may take."""

    endpoint: str = ""  # empty: the provider's own (or AWS_ENDPOINT_URL)
    region: str = ""  # empty: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1
    encryption: str = ""  # S3 server-side encryption; empty: the bucket's default
    kms_key: str = ""  # with aws:kms
    storage_class: str = ""  # e.g. STANDARD_IA, NEARLINE, Cool; empty: the default
    timeout: float = 30.0


def bucket_options(settings: SampleSettings) -> BucketOptions:
    """The sidecar's options for its fleet store, the sink's and the gallery's alike."""
    return BucketOptions(settings.sample_store_endpoint, settings.sample_store_region,
                         settings.sample_store_encryption, settings.sample_store_kms_key,
                         settings.sample_store_class)


def open_bucket(url: StoreUrl, options: BucketOptions = BucketOptions()) -> ObjectStore:
    """A store rooted at the URL's prefix. Nothing is sent yet."""
    from obstore.store import LocalStore, from_url

    if url.scheme == "file":
        return LocalStore(Path(url.bucket), mkdir=True)
    config: dict[str, Any] = {}
    if url.scheme == "s3":
        config.update({key: value for key, value in (
            ("endpoint", options.endpoint), ("region", options.region),
            ("server_side_encryption", options.encryption),
            ("sse_kms_key_id", options.kms_key)) if value})
        if os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
            config["metadata_endpoint"] = NO_METADATA
    elif options.endpoint:
        config["endpoint" if url.scheme == "az" else "base_url"] = options.endpoint
    client: dict[str, Any] = {"timeout": timedelta(seconds=options.timeout),
                              "connect_timeout": timedelta(seconds=min(5.0, options.timeout))}
    if options.endpoint.startswith("http://"):
        client["allow_http"] = True
    retry: dict[str, Any] = {"max_retries": 2, "retry_timeout": timedelta(
        seconds=options.timeout), "backoff": {"init_backoff": timedelta(milliseconds=100),
                                              "max_backoff": timedelta(seconds=2)}}
    return from_url(str(url), config=config or None, client_options=client,  # type: ignore[arg-type]
                    retry_config=retry)  # type: ignore[arg-type]


def failure_reason(error: BaseException) -> str:
    """A bounded label for a failed request (lookout_sample_upload_failures_total)."""
    from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

    text = str(error)
    if isinstance(error, PermissionDeniedError | UnauthenticatedError) or \
            any(code in text for code in ("403 Forbidden", "401 Unauthorized",
                                          "AccessDenied")):
        return "denied"
    if isinstance(error, FileNotFoundError) or "NoSuchBucket" in text or "404 Not" in text:
        return "not_found"
    if any(word in text for word in ("error sending request", "timed out", "timeout",
                                     "connect", "dns error")):
        return "unreachable"
    return "error"


WHAT_FAILED = {"not_found": "the bucket (or the object) does not exist",
               "unreachable": "the bucket is unreachable",
               "denied": "access is denied (see the bucket policy in docs/SAMPLES.md)",
               "error": "the bucket fails"}


def explain(error: BaseException) -> str:
    """What went wrong, in words, then the request that failed."""
    return f"{WHAT_FAILED[failure_reason(error)]} ({first_line(error)})"


def first_line(error: BaseException) -> str:
    """What an error says without obstore's debug dump."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
