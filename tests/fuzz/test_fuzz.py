"""Property-based fuzzing of every parser that touches user input (tests/fuzz/targets.py):
each either succeeds or raises its own declared error. A few hundred inputs per parser
here; `python tools/fuzz.py` runs hundreds of thousands (docs/RELIABILITY.md)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzz.targets import TARGETS, Target

EXAMPLES = int(os.environ.get("LOOKOUT_FUZZ_EXAMPLES", "250"))


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_parser_raises_only_its_own_errors(target: Target) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much])
    @given(target.strategy)
    def run(case) -> None:
        target.check(case)

    run()
