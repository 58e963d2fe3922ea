"""Audit records: one small JSON document per audit batch, beside the samples.

A local store keeps them in `<store dir>/audits/<batch id>.json`; the fleet's object
store under `audits/<batch id>.json` at the URL's prefix. The draw writes the record
(which samples, how they were drawn), the import rewrites it with the estimates, so the
gallery, dashboards and the canary judge read one place for "what was audited, and what
did it find". The document is plain JSON (`AUDIT_FORMAT` names its version) so a
reader need not import this code.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lookout.sidecar.samples.fleet_store import FleetStore
    from lookout.sidecar.samples.store import SampleStore

AUDITS = "audits"
AUDIT_FORMAT = 1
ALL_CLASSES = "all"  # the estimates' every-class row
RATES = ("precision", "recall")  # each estimates row's rates
BATCH_ID = re.compile(r"[0-9a-z][0-9a-z-]{0,63}")


class AuditRecordError(ValueError):
    """A batch id that is not one, or a record that cannot be read."""


def _name(batch_id: str) -> str:
    if BATCH_ID.fullmatch(batch_id) is None:
        raise AuditRecordError(f"batch id {batch_id!r}: expected lower-case letters, digits "
                               f"and dashes")
    return f"{batch_id}.json"


class AuditRecords:
    """The records of one store, local or the fleet's; the same calls for both."""

    def __init__(self, store: SampleStore | FleetStore) -> None:
        self._store = store

    def _fleet(self) -> FleetStore | None:
        from lookout.sidecar.samples.fleet_store import FleetStore

        return self._store if isinstance(self._store, FleetStore) else None

    def _directory(self) -> Path:
        return Path(self._store.directory) / AUDITS

    def write(self, record: dict[str, Any]) -> None:
        name = _name(str(record["batch_id"]))
        data = json.dumps(record, indent=1, sort_keys=True).encode()
        fleet = self._fleet()
        if fleet is not None:
            fleet.write_object(f"{AUDITS}/{name}", data)
            return
        directory = self._directory()
        directory.mkdir(mode=0o700, exist_ok=True)
        temporary = directory / f".{name}.tmp"
        temporary.write_bytes(data)
        os.replace(temporary, directory / name)

    def read(self, batch_id: str) -> dict[str, Any] | None:
        name = _name(batch_id)
        fleet = self._fleet()
        try:
            data = fleet.read_object(f"{AUDITS}/{name}") if fleet is not None \
                else (self._directory() / name).read_bytes()
        except FileNotFoundError:
            return None
        return _decode(data, name)

    def all(self) -> list[dict[str, Any]]:
        """Every record, newest first."""
        fleet = self._fleet()
        records = []
        if fleet is not None:
            for key in fleet.object_keys(f"{AUDITS}/"):
                if key.endswith(".json"):
                    records.append(_decode(fleet.read_object(key), key))
        elif self._directory().is_dir():
            for path in self._directory().glob("*.json"):
                records.append(_decode(path.read_bytes(), path.name))
        return sorted(records, key=lambda r: (-float(r.get("created", 0)), r["batch_id"]))


def _decode(data: bytes, name: str) -> dict[str, Any]:
    try:
        record = json.loads(data)
    except ValueError as error:
        raise AuditRecordError(f"audit record {name}: not JSON ({error})") from None
    if not isinstance(record, dict) or "batch_id" not in record:
        raise AuditRecordError(f"audit record {name}: no batch_id")
    return record
