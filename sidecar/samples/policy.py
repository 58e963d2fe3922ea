"""Which inputs are worth keeping: the sampling strategies and their quotas.

A policy is an ordered list of rules, written as one string so it fits an environment
variable or a pod annotation:

    error per_minute=10 per_hour=100; slow seconds=1 per_minute=5; random share=0.01 per_day=500

Each rule is a strategy with its parameters and its own per-minute/hour/day quota
(fixed calendar windows, so "10 per minute" means at most 10 between hh:mm:00 and
hh:mm:59). An input is offered to the rules in order and the first rule that matches
*and* has quota left takes it; a rule whose quota is spent lets later rules try. An
input that some rule wanted but none could take counts as a quota drop.

`random` is the exception, wherever it is written: its draw is made for every input,
whatever the other rules do, and paced so that its quota never cuts it (`inclusion.py`).
A drawn input is always taken, with the probability it had of being drawn: under the
first other rule that takes it (an error drawn at random is still filed as `error`),
else as `random`. The samples carrying a probability are the random stratum, a
probability sample of all traffic that an audit weights back to the whole
(`audit_estimates.py`).
"""

from __future__ import annotations

import random
import shlex
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from lookout.sidecar.samples.inclusion import RandomDraw

if TYPE_CHECKING:  # the configuration loader parses policies without importing numpy
    import numpy as np


class Strategy(StrEnum):
    RANDOM = "random"
    ERROR = "error"
    SLOW = "slow"
    CLOSE_TO_THRESHOLD = "close_to_threshold"
    DETECTIONS_COUNT = "detections_count"
    CLASSES = "classes"
    DISAGREEMENT = "disagreement"
    DRIFT = "drift"
    SUSPECT = "suspect"  # boxes both models agree on where both may be wrong alike


QUOTA_WINDOWS = {"per_minute": 60, "per_hour": 3600, "per_day": 86400}

# parameter -> (parser, required), per strategy
_PARAMETERS: dict[Strategy, dict[str, tuple[type, bool]]] = {
    Strategy.RANDOM: {"share": (float, True)},
    Strategy.ERROR: {},
    Strategy.SLOW: {"seconds": (float, True)},
    Strategy.CLOSE_TO_THRESHOLD: {"threshold": (float, True), "eps": (float, False)},
    Strategy.DETECTIONS_COUNT: {"above": (int, False), "below": (int, False)},
    Strategy.CLASSES: {"names": (str, True)},
    Strategy.DISAGREEMENT: {"below": (float, True)},
    Strategy.DRIFT: {},
    Strategy.SUSPECT: {},
}

DEFAULT_POLICY = (
    "error per_minute=10 per_hour=100; "
    "slow seconds=1 per_minute=5 per_hour=60; "
    "disagreement below=0.5 per_minute=5 per_hour=60; "
    "drift per_minute=2 per_hour=30; "
    "suspect per_minute=2 per_hour=30; "
    "close_to_threshold threshold=0.25 eps=0.02 per_minute=2 per_hour=20; "
    "random share=0.01 per_minute=5 per_hour=60 per_day=500"
)


class PolicyError(ValueError):
    """A sampling policy that cannot be used; the message names the rule and the key."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """What the rules see of one exchange."""

    status: int
    parse_failed: bool
    latency: float  # seconds, as the client saw it
    scores: np.ndarray | None  # the primary's confidences; None when not known
    class_names: tuple[str, ...]  # the primary's class labels
    agreement: float | None = None  # with the reference model, when it evaluated the input
    drifting: bool = False  # a drift alarm is raised
    suspects: tuple[str, ...] = ()  # why its agreed boxes may be a shared blind spot


def agreement_score(primary: int, reference: int, matched: int) -> float:
    """F1 of the primary against the reference: 1.0 when both found nothing."""
    total = primary + reference
    return 1.0 if total == 0 else 2.0 * matched / total


@dataclass(frozen=True, slots=True)
class Rule:
    strategy: Strategy
    parameters: dict[str, float | int | str] = field(default_factory=dict)
    quota: dict[str, int] = field(default_factory=dict)  # window name -> most samples

    def matches(self, candidate: Candidate, chooser: random.Random) -> bool:
        p = self.parameters
        match self.strategy:
            case Strategy.RANDOM:
                return chooser.random() < float(p["share"])
            case Strategy.ERROR:
                return candidate.status >= 500 or candidate.parse_failed
            case Strategy.SLOW:
                return candidate.latency > float(p["seconds"])
            case Strategy.CLOSE_TO_THRESHOLD:
                if candidate.scores is None or not candidate.scores.size:
                    return False
                distance = abs(candidate.scores - float(p["threshold"]))  # numpy's abs
                return bool((distance <= float(p.get("eps", 0.05))).any())
            case Strategy.DETECTIONS_COUNT:
                if candidate.scores is None:
                    return False
                count = int(candidate.scores.size)
                return ("above" in p and count > int(p["above"])) or (
                    "below" in p and count < int(p["below"]))
            case Strategy.CLASSES:
                wanted = str(p["names"]).split(",")
                return any(name in wanted for name in candidate.class_names)
            case Strategy.DISAGREEMENT:
                return candidate.agreement is not None and candidate.agreement < float(p["below"])
            case Strategy.DRIFT:
                return candidate.drifting
            case Strategy.SUSPECT:
                return bool(candidate.suspects)
        return False


def _parse_rule(text: str) -> Rule:
    try:
        words = shlex.split(text)
    except ValueError as error:  # an unclosed quote, a trailing backslash
        raise PolicyError(f"rule {text.strip()!r}: {error}") from None
    if not words:
        raise PolicyError(f"rule {text!r} is empty")
    name, settings = words[0], words[1:]
    try:
        strategy = Strategy(name)
    except ValueError:
        raise PolicyError(f"unknown strategy {name!r}; known: "
                          f"{', '.join(s.value for s in Strategy)}") from None
    allowed = _PARAMETERS[strategy]
    parameters: dict[str, float | int | str] = {}
    quota: dict[str, int] = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not value:
            raise PolicyError(f"{name}: expected key=value, got {setting!r}")
        try:
            if key in QUOTA_WINDOWS:
                quota[key] = int(value)
                if quota[key] < 0:
                    raise ValueError("a quota cannot be negative")
            elif key in allowed:
                parameters[key] = allowed[key][0](value)
            else:
                known = [*allowed, *QUOTA_WINDOWS]
                raise PolicyError(f"{name}: unknown key {key!r}; known: {', '.join(known)}")
        except ValueError as error:
            if isinstance(error, PolicyError):
                raise
            raise PolicyError(f"{name}: {key}={value!r} is not valid ({error})") from None
    missing = [key for key, (_, required) in allowed.items()
               if required and key not in parameters]
    if missing:
        raise PolicyError(f"{name}: missing {', '.join(missing)}")
    if strategy is Strategy.DETECTIONS_COUNT and not parameters:
        raise PolicyError(f"{name}: give above=N, below=N or both")
    for key in ("share", "threshold", "eps", "below"):
        value = parameters.get(key)
        if strategy is not Strategy.DETECTIONS_COUNT and isinstance(value, float) \
                and not 0.0 <= value <= 1.0:
            raise PolicyError(f"{name}: {key} must be between 0 and 1")
    if not quota:
        raise PolicyError(f"{name}: give at least one of {', '.join(QUOTA_WINDOWS)} so the "
                          f"strategy cannot fill the disk")
    return Rule(strategy, parameters, quota)


def parse_policy(text: str) -> tuple[Rule, ...]:
    """Rules from `strategy key=value ...; strategy ...` (empty: sample nothing)."""
    rules = tuple(_parse_rule(part) for part in text.split(";") if part.strip())
    seen: set[Strategy] = set()
    for rule in rules:
        if rule.strategy in seen:
            raise PolicyError(f"strategy {rule.strategy.value} appears twice")
        seen.add(rule.strategy)
    return rules


class Quota:
    """Counts per fixed calendar window (minute, hour, day) for one rule."""

    def __init__(self, limits: dict[str, int]) -> None:
        self._limits = {QUOTA_WINDOWS[name]: limit for name, limit in limits.items()}
        self._windows: dict[int, tuple[int, int]] = {}  # seconds -> (window index, used)

    def _used(self, seconds: int, now: float) -> int:
        index, used = self._windows.get(seconds, (-1, 0))
        return used if index == int(now // seconds) else 0

    def available(self, now: float) -> bool:
        return all(self._used(s, now) < limit for s, limit in self._limits.items())

    def take(self, now: float) -> None:
        for seconds in self._limits:
            self._windows[seconds] = (int(now // seconds), self._used(seconds, now) + 1)


@dataclass(frozen=True, slots=True)
class Decision:
    strategy: Strategy | None  # the rule that took the input
    wanted: bool  # some rule matched (a None strategy then means: out of quota)
    # drawn by `random` (whichever rule files it): its probability of being drawn
    inclusion_probability: float | None = None


class SamplingPolicy:
    """The ordered rules with their quotas; thread-safe."""

    def __init__(self, rules: Sequence[Rule], seed: int | None = None) -> None:
        self.rules = tuple(rules)
        self._quotas = [Quota(rule.quota) for rule in self.rules]
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.random_draw = next(
            (RandomDraw(float(rule.parameters["share"]),
                        {QUOTA_WINDOWS[name]: limit for name, limit in rule.quota.items()})
             for rule in self.rules if rule.strategy is Strategy.RANDOM), None)

    def decide(self, candidate: Candidate, now: float) -> Decision:
        wanted = False
        with self._lock:
            drawn = self.random_draw.draw(now, self._random) \
                if self.random_draw is not None else None
            for rule, quota in zip(self.rules, self._quotas, strict=True):
                if rule.strategy is Strategy.RANDOM or \
                        not rule.matches(candidate, self._random):
                    continue
                wanted = True
                if quota.available(now):
                    quota.take(now)
                    return Decision(rule.strategy, True, drawn)
        if drawn is not None:
            return Decision(Strategy.RANDOM, True, drawn)
        return Decision(None, wanted)
