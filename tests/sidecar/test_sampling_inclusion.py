"""The `random` stratum as a probability sample: drawn before the other rules, paced
under its quotas, and weighted by the recorded probability back to all the traffic."""

from __future__ import annotations

import numpy as np
import pytest

from lookout.sidecar.samples.inclusion import HEADROOM
from lookout.sidecar.samples.policy import Candidate, SamplingPolicy, Strategy, parse_policy

T0 = 1_800_000_000.0  # a day, hour and minute boundary


def exchange(error: bool) -> Candidate:
    return Candidate(500 if error else 200, False, 0.01, np.array([0.9], np.float32),
                     ("car",))


def test_an_input_an_earlier_rule_takes_is_still_drawn_at_the_share() -> None:
    chosen = SamplingPolicy(parse_policy(
        "error per_minute=10; random share=0.1 per_day=1000000"), seed=3)
    decisions = [chosen.decide(exchange(True), T0 + i / 10) for i in range(20_000)]
    drawn = [d for d in decisions if d.inclusion_probability is not None]
    assert 0.09 < len(drawn) / len(decisions) < 0.11
    assert {d.inclusion_probability for d in drawn} == {0.1}
    # filed as errors while the error rule has quota, as random once it has none
    strategies = {d.strategy for d in drawn}
    assert strategies == {Strategy.ERROR, Strategy.RANDOM}
    assert all(d.strategy is Strategy.ERROR for d in decisions
               if d.inclusion_probability is None and d.strategy is not None)


def test_the_quota_paces_the_draw_instead_of_cutting_it() -> None:
    chosen = SamplingPolicy(parse_policy("random share=0.5 per_minute=10"), seed=4)
    per_minute = 600  # ten a second: the share alone would want 300 a minute
    decisions = [chosen.decide(exchange(False), T0 + i / 10) for i in range(per_minute * 5)]
    probabilities = [d.inclusion_probability for d in decisions
                     if d.inclusion_probability is not None]
    taken = np.bincount([int(i / per_minute) for i, d in enumerate(decisions)
                         if d.strategy is Strategy.RANDOM], minlength=5)
    assert taken.max() <= 10  # never over the quota...
    assert not any(d.wanted and d.strategy is None for d in decisions)  # ...never cut
    # once the rate is known, p is about the headroom's share of the quota per exchange
    assert taken[1:].mean() == pytest.approx(HEADROOM * 10, abs=3)
    assert min(probabilities) < 0.05 and max(probabilities) <= 0.5


def simulate(seed: int) -> tuple[float, float, float, float]:
    """Ten minutes of traffic: calm, a burst of hard images with errors, calm again,
    through a default-like policy (error and slow before random, random last; random's
    quota paces it ten times harder in the burst). Returns, over the whole window, the
    Horvitz-Thompson estimates (sum of 1/p over the random samples) of the hard images'
    count and of the traffic, each divided by the truth, the true share of hard images,
    and the unweighted share among the random samples."""
    rng = np.random.default_rng(seed)
    chosen = SamplingPolicy(parse_policy(
        "error per_minute=10; slow seconds=1 per_minute=5; "
        "random share=0.2 per_minute=20 per_hour=1000"), seed=seed)
    hard_total = count = 0
    weighted = weights = unweighted = drawn = 0.0
    for minute in range(10):
        burst = 4 <= minute < 7
        rate = 30 if burst else 3  # a second
        times = T0 + minute * 60 + np.sort(rng.uniform(0, 60, rate * 60))
        hard = rng.random(len(times)) < (0.6 if burst else 0.1)
        for moment, is_hard in zip(times.tolist(), hard.tolist(), strict=True):
            error = is_hard and rng.random() < 0.5  # hard images fail more often
            decision = chosen.decide(Candidate(
                500 if error else 200, False, 2.0 if is_hard else 0.01, None, ()), moment)
            hard_total += is_hard
            count += 1
            if decision.inclusion_probability is not None:  # filed under any rule
                assert decision.strategy is not None
                weight = 1.0 / decision.inclusion_probability
                weighted += weight * is_hard
                weights += weight
                unweighted += is_hard
                drawn += 1
    return weighted / hard_total, weights / count, hard_total / count, unweighted / drawn


def test_weighting_by_the_recorded_probability_is_unbiased_for_all_traffic() -> None:
    runs = np.array([simulate(seed) for seed in range(30)])
    hard, traffic, share, naive = runs.mean(axis=0)
    error = runs.std(axis=0) / np.sqrt(len(runs))
    assert max(error[:2]) < 0.05  # the check below has teeth
    assert abs(hard - 1.0) < 4 * error[0]
    assert abs(traffic - 1.0) < 4 * error[1]
    # unweighted, the random samples miss the burst's hard images: it was paced harder
    assert share - naive > 0.2
