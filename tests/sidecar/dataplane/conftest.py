"""A counters segment of two Envoy threads, eight slots each, as the tap writes them."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from lookout.sidecar.dataplane.tap_counters import TapCounters
from lookout.slo import catalog


@pytest.fixture
def counters() -> Iterator[TapCounters]:
    segment = TapCounters(f"/lookout-test-{secrets.token_hex(4)}", 2, 8,
                          catalog.LATENCY_BUCKETS, catalog.BYTES_BUCKETS)
    yield segment
    segment.close()
