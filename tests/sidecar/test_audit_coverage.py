"""The audit's 95% intervals contain the whole window's truth in about 95% of repeated
random audits of 100 images (bench/audit_power.py measures the table in
docs/QUALITY.md)."""

from __future__ import annotations

import pytest

from bench.audit_power import pool_counts, repeat_audits


@pytest.fixture(scope="module")
def pool():
    return pool_counts(scenes=120)  # the models run once per module


def test_intervals_cover_the_windows_truth_about_95_percent_of_the_time(pool) -> None:
    found = repeat_audits(pool, batches=300, size=100, seed=1)
    assert 0.88 <= found["precision_coverage"] <= 0.99
    assert 0.88 <= found["recall_coverage"] <= 0.99
    # busy frames are sampled less: unweighted, the estimate would be off
    assert abs(found["unweighted_precision_bias"]) > 0.005
