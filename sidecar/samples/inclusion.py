"""The `random` stratum's draw, paced so that its quota never cuts it, and the
probability it recorded for each exchange.

An audit weights each random sample by 1/p (Horvitz-Thompson) to estimate precision
and recall over *all* traffic. That needs p to be the exchange's true probability of
entering the stratum, for every exchange:

- The draw is made for every exchange, independently of the other rules (an error or a
  slow request is as likely to be drawn as an easy one), and an exchange it draws is
  always stored with its probability, under whichever rule files it (policy.py).
- A quota that cuts the draws when traffic is high would make p depend on how many
  others were drawn in the same window, which is only known when the window ends. So the
  draw is paced instead: p is the share, lowered to spend `HEADROOM` of each window's
  remaining quota evenly over the exchanges the window is still expected to see
  (traffic rate: the last calendar minute's, or the current one's so far when it is
  busier, so a burst slows the draw within seconds). p depends
  only on what came before, so E[1{drawn}/p] = 1 for every exchange however p moves
  (an estimate weighted by 1/p stays unbiased), and a drawn exchange always has quota
  left: p is 0 once a window's quota is spent, never a draw that is then thrown away.

What it cannot do: exchanges seen while some window's quota is spent have p = 0 and no
estimate covers them (`unreachable` counts them; the headroom keeps them rare), and a
sample dropped after the decision (queue full, byte quota, a full volume) is lost at
random to the audit as to everything else.
"""

from __future__ import annotations

import random

MINUTE = 60
HEADROOM = 0.8  # of a window's remaining quota paced over its expected traffic
SHORTEST_SPAN = 5.0  # seconds: a minute's first seconds are not extrapolated from less


class RandomDraw:
    """Not thread-safe: the policy calls it under its lock."""

    def __init__(self, share: float, limits: dict[int, int]) -> None:
        self.share = share
        self._limits = dict(limits)  # window seconds -> most samples
        self._used: dict[int, tuple[int, int]] = {}  # seconds -> (window index, used)
        self._minute, self._this_minute, self._last_minute = -1, 0, 0
        self.unreachable = 0  # exchanges seen while a quota was spent (p = 0)

    def _used_in(self, seconds: int, now: float) -> int:
        index, used = self._used.get(seconds, (-1, 0))
        return used if index == int(now // seconds) else 0

    def _arrive(self, now: float) -> float:
        """Count this exchange; the rate (per second) its probability is paced by."""
        minute = int(now // MINUTE)
        if minute != self._minute:
            self._last_minute = self._this_minute if minute == self._minute + 1 else 0
            self._minute, self._this_minute = minute, 0
        elapsed = max(now - minute * MINUTE, SHORTEST_SPAN)
        rate = max(self._last_minute / MINUTE, self._this_minute / elapsed)
        self._this_minute += 1
        return rate

    def probability(self, now: float, rate: float) -> float:
        """The chance this exchange is drawn, from the share and the quotas in force."""
        p = self.share
        for seconds, limit in self._limits.items():
            left = limit - self._used_in(seconds, now)
            if left <= 0:
                return 0.0
            expected = rate * ((int(now // seconds) + 1) * seconds - now)
            # traffic counted a little high (1/HEADROOM), never under one exchange: a
            # quiet window keeps the share, a busy one is paced with room to spare
            p = min(p, left / max(expected / HEADROOM, 1.0))
        return p

    def draw(self, now: float, chooser: random.Random) -> float | None:
        """The probability when this exchange is drawn (its quota already taken), else
        None. Called once for every exchange."""
        p = self.probability(now, self._arrive(now))
        if p <= 0.0:
            self.unreachable += 1
            return None
        if chooser.random() >= p:
            return None
        for seconds in self._limits:
            self._used[seconds] = (int(now // seconds), self._used_in(seconds, now) + 1)
        return p
