"""Where a sample lives in object storage: the URL, the partitions, the object keys.

    {prefix}/model=M/version=V/date=YYYY-MM-DD/hour=HH/{id}.{ext}            thumbnail
    {prefix}/model=M/version=V/date=YYYY-MM-DD/hour=HH/{id}.orig.{ext}       original
    {prefix}/model=M/version=V/date=YYYY-MM-DD/hour=HH/manifests/pod=P/{first id}.jsonl

Partitioned by model, version and hour (UTC) so that a reader asking for one model's
hour lists that hour's manifests and nothing else; the keys are the sample's id, so an
upload retried after a crash rewrites the same objects instead of adding copies. A
manifest holds one flush's metadata, one JSON object a line: what the gallery filters
on, the pod's name among it. Model and version names are percent-encoded into a key
segment, so no name can add a level or climb out of the prefix.

Parsing lives here (not in the sink) so that start-up can refuse a malformed
`sample_url` without loading an object-store client.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

SCHEMES = {"s3": "S3 (or S3-compatible)", "gs": "Google Cloud Storage",
           "az": "Azure Blob Storage", "file": "a local directory (tests, a mounted volume)"}
MANIFESTS = "manifests"
MANIFEST_SUFFIX = ".jsonl"
HOUR = 3600


@dataclass(frozen=True, slots=True)
class StoreUrl:
    """A parsed `sample_url`: the scheme, the bucket (container), the key prefix."""

    scheme: str
    bucket: str
    prefix: str

    def __str__(self) -> str:
        if self.scheme == "file":
            return f"file://{self.bucket}"
        return f"{self.scheme}://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")


def parse_store_url(text: str) -> StoreUrl:
    """`s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix` or
    `file:///absolute/dir`; anything else is refused with what would be accepted."""
    text = text.strip()
    parts = urlsplit(text)
    accepted = "expected s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX " \
               "or file:///DIRECTORY"
    if parts.scheme not in SCHEMES:
        raise ValueError(f"{accepted} (scheme {parts.scheme or 'missing'!r} is not one)")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{accepted}: no query, fragment or credentials in the URL "
                         f"(credentials come from the environment)")
    if parts.scheme == "file":
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError("expected file:///ABSOLUTE/DIRECTORY")
        return StoreUrl("file", parts.path.rstrip("/") or "/", "")
    bucket = parts.netloc
    if not bucket or not all(c.isalnum() or c in "-._" for c in bucket):
        raise ValueError(f"{accepted}: {bucket!r} is not a bucket name")
    prefix = parts.path.strip("/")
    if any(segment in ("", ".", "..") for segment in prefix.split("/") if prefix):
        raise ValueError(f"{accepted}: the prefix {prefix!r} has an empty, . or .. segment")
    return StoreUrl(parts.scheme, bucket, prefix)


def segment(name: str) -> str:
    """A model or version name as one key segment (no `/`, no `=` surprises)."""
    return quote(name, safe="-._~")


@dataclass(frozen=True, slots=True, order=True)
class Partition:
    """One model's version's hour: the unit a reader lists."""

    hour: int  # unix time of the hour's start
    model: str
    version: str

    @classmethod
    def of(cls, model: str, version: str, moment: float) -> Partition:
        return cls(int(moment // HOUR) * HOUR, model, version)

    @property
    def key(self) -> str:
        moment = time.gmtime(self.hour)
        return (f"{version_key(self.model, self.version)}/"
                f"date={time.strftime('%Y-%m-%d', moment)}/hour={moment.tm_hour:02d}")

    def manifests(self) -> str:
        return f"{self.key}/{MANIFESTS}/"

    def manifest_key(self, pod: str, first_id: str) -> str:
        return f"{self.key}/{MANIFESTS}/pod={segment(pod)}/{first_id}{MANIFEST_SUFFIX}"

    def image_key(self, sample_id: str, extension: str, original: bool = False) -> str:
        return f"{self.key}/{sample_id}{'.orig' if original else ''}.{extension}"


def model_key(model: str) -> str:
    return f"model={segment(model)}"


def version_key(model: str, version: str) -> str:
    return f"{model_key(model)}/version={segment(version)}"


def value_of(common_prefix: str) -> str:
    """`model=yolo%2Fv8` (the last segment of a listed prefix) -> `yolo/v8`."""
    last = common_prefix.rstrip("/").rsplit("/", 1)[-1]
    return unquote(last.partition("=")[2])


def day_hours(day_prefix: str, hours: list[str]) -> list[int]:
    """The hour starts (unix time) of a listed `date=YYYY-MM-DD` and its `hour=HH`s."""
    start = calendar.timegm(time.strptime(value_of(day_prefix), "%Y-%m-%d"))
    return [start + int(value_of(hour)) * HOUR for hour in hours]


def hours_between(since: float, until: float) -> list[int]:
    """Every hour start from the hour of `since` to that of `until`, newest first."""
    first, last = int(since // HOUR) * HOUR, int(until // HOUR) * HOUR
    return list(range(last, first - 1, -HOUR))


def id_time(sample_id: str) -> float:
    """When a sample was taken, from its id (the store's ids start with the time in
    milliseconds), so a lookup by id lists one hour."""
    return int(sample_id[:12], 16) / 1000
