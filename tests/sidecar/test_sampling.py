"""The sampling policy: the rule grammar, each strategy, order and quotas."""

from __future__ import annotations

import numpy as np
import pytest

from lookout.sidecar.config import ConfigError, load_config
from lookout.sidecar.samples.policy import (
    DEFAULT_POLICY,
    Candidate,
    PolicyError,
    SamplingPolicy,
    Strategy,
    agreement_score,
    parse_policy,
)

T0 = 1_800_000_000.0  # a whole day, hour and minute boundary (divisible by 86400)


def candidate(status: int = 200, latency: float = 0.01, scores=(0.9,), classes=("car",),
              agreement: float | None = None, drifting: bool = False,
              parse_failed: bool = False, suspects: tuple[str, ...] = ()) -> Candidate:
    return Candidate(status, parse_failed, latency,
                     None if scores is None else np.array(scores, np.float32),
                     tuple(classes), agreement, drifting, suspects)


def policy(text: str) -> SamplingPolicy:
    return SamplingPolicy(parse_policy(text), seed=1)


def test_the_default_policy_parses_and_configures() -> None:
    rules = parse_policy(DEFAULT_POLICY)
    assert [r.strategy for r in rules][:2] == [Strategy.ERROR, Strategy.SLOW]
    assert load_config({}, env={}).sample_strategies == DEFAULT_POLICY


@pytest.mark.parametrize(("text", "message"), [
    ("often per_minute=1", "unknown strategy 'often'"),
    ("slow per_minute=1", "slow: missing seconds"),
    ("slow seconds=fast per_minute=1", "slow: seconds='fast' is not valid"),
    ("error", "give at least one of per_minute"),
    ("error per_fortnight=3", "unknown key 'per_fortnight'"),
    ("error per_minute=-1", "error: per_minute='-1' is not valid"),
    ("random share=2 per_minute=1", "share must be between 0 and 1"),
    ("detections_count per_minute=1", "give above=N, below=N or both"),
    ("error per_minute=1; error per_hour=2", "appears twice"),
    ("error per_minute", "expected key=value"),
])
def test_bad_rules_are_refused_naming_the_rule_and_key(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(text)


def test_a_bad_policy_stops_start_up_naming_the_option() -> None:
    with pytest.raises(ConfigError, match=r"LOOKOUT_SAMPLE_STRATEGIES.*slow: missing seconds"):
        load_config({}, env={"LOOKOUT_SAMPLE_STRATEGIES": "slow per_minute=1"})


def test_a_yaml_list_of_rules_is_one_policy(tmp_path) -> None:
    path = tmp_path / "lookout.yaml"
    path.write_text("sample_strategies:\n  - error per_minute=3\n  - slow seconds=2 per_hour=9\n")
    config = load_config({}, env={}, config_file=path)
    assert [r.strategy for r in parse_policy(config.sample_strategies)] == [
        Strategy.ERROR, Strategy.SLOW]


@pytest.mark.parametrize(("rule", "matching", "not_matching"), [
    ("error", candidate(status=503), candidate(status=404)),
    ("error", candidate(parse_failed=True), candidate()),
    ("slow seconds=0.5", candidate(latency=0.6), candidate(latency=0.5)),
    ("close_to_threshold threshold=0.25 eps=0.05", candidate(scores=(0.9, 0.28)),
     candidate(scores=(0.9, 0.31))),
    ("close_to_threshold threshold=0.25", candidate(scores=(0.2,)), candidate(scores=())),
    ("detections_count above=2", candidate(scores=(0.5,) * 3), candidate(scores=(0.5,) * 2)),
    ("detections_count below=1", candidate(scores=()), candidate(scores=None)),
    ("classes names=person,forklift", candidate(classes=("car", "forklift")),
     candidate(classes=("car",))),
    ("disagreement below=0.5", candidate(agreement=0.4), candidate(agreement=None)),
    ("drift", candidate(drifting=True), candidate()),
    ("suspect", candidate(suspects=("low_texture",)), candidate()),
])
def test_each_strategy_takes_what_it_describes(rule: str, matching: Candidate,
                                               not_matching: Candidate) -> None:
    chosen = policy(f"{rule} per_minute=100")
    assert chosen.decide(matching, T0).strategy is parse_policy(f"{rule} per_minute=1")[
        0].strategy
    assert chosen.decide(not_matching, T0).strategy is None


def test_random_takes_its_share() -> None:
    chosen = policy("random share=0.2 per_day=100000")  # one a second: the quota never paces
    taken = sum(chosen.decide(candidate(), T0 + i).strategy is Strategy.RANDOM
                for i in range(20_000))
    assert 0.18 < taken / 20_000 < 0.22


def test_first_matching_rule_with_quota_wins() -> None:
    chosen = policy("error per_minute=2; slow seconds=1 per_minute=1")
    slow_error = candidate(status=500, latency=3.0)
    decisions = [chosen.decide(slow_error, T0 + i).strategy for i in range(4)]
    # error first while it has quota, then slow takes over, then nothing is left
    assert decisions == [Strategy.ERROR, Strategy.ERROR, Strategy.SLOW, None]
    spent = chosen.decide(slow_error, T0 + 5)
    assert spent.strategy is None and spent.wanted  # wanted, but out of quota


def test_nothing_matching_is_not_a_quota_drop() -> None:
    decision = policy("error per_minute=1").decide(candidate(), T0)
    assert decision.strategy is None and not decision.wanted


def test_quotas_are_per_calendar_window() -> None:
    chosen = policy("error per_minute=2 per_hour=3 per_day=4")
    error = candidate(status=500)
    taken = [chosen.decide(error, T0 + s).strategy is not None
             for s in (0, 1, 2,  # minute 0: 2 of 3
                       60,  # minute 1: the hour's third
                       120,  # minute 2: the hour is spent
                       3600, 3601,  # next hour: the day's fourth, then the day is spent
                       86400)]  # next day
    assert taken == [True, True, False, True, False, True, False, True]


def test_agreement_score_is_f1_and_one_when_both_found_nothing() -> None:
    assert agreement_score(0, 0, 0) == 1.0
    assert agreement_score(4, 4, 4) == 1.0
    assert agreement_score(4, 2, 2) == pytest.approx(2 * 2 / 6)
    assert agreement_score(3, 0, 0) == 0.0
