"""The proxy trust signal in the sidecar: `shadow_eval.trust` judging the reference's
own behaviour, window by window, into `lookout_proxy_trust` and the reason gauges that
the quality SLO rules, the out-of-distribution alert and the canary judge read.

Fed by the shadow worker thread, one call per evaluated image; nothing is exported
until the band is learnt, so an absent series means "not judged yet", never "bad".
What a window judged untrustworthy evaluated is added, once judged, to
`lookout_shadow_untrusted_total`, which the quality SLO rules subtract: exact, per
window, and summable across pods like every other counter.

An audit that found the proxies wrong where they were trusted narrows the band: the
lookout process publishes each model's margin factor (`samples/audit_trust.py`,
`processes/margin_file.py`) and the factor is looked up as each window closes, exported
as `lookout_proxy_trust_margin_factor` and logged when it changes.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import numpy as np
from prometheus_client import Gauge

from lookout.shadow_eval.trust import STATISTICS, Distrust, TrustJudge
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.settings import ShadowSettings
from lookout.slo import catalog

log = logging.getLogger(__name__)


class ProxyTrust:
    def __init__(self, config: ShadowSettings, metrics: SidecarMetrics,
                 margins: Callable[[str], float] | None = None) -> None:
        """`margins`: a model's margin factor now (`FollowedMargins.factor`); None: 1."""
        self._judge = TrustJudge(config.proxy_trust_window,
                                 config.proxy_trust_baseline_windows,
                                 config.proxy_trust_margin)
        self._labels = (config.model_name, config.model_version)
        self._metrics = metrics
        self._margins = margins
        self._distrusted: list[Distrust] | None = None
        self._window_counts: Counter[str] = Counter()
        self.windows = 0  # judged windows; for tests

    @property
    def trusted(self) -> bool | None:
        """The last judged window's verdict; None before the band is learnt."""
        return None if self._distrusted is None else not self._distrusted

    def observe(self, scores: np.ndarray, flip: tuple[int, int, int] | None = None,
                counts: dict[str, int] | None = None) -> None:
        """One evaluated image: the reference's confidences, for a flip-checked one
        (boxes on the frame, on its mirror, found on both), and its box counts by the
        names of `lookout_shadow_untrusted_total`'s `count` label."""
        self._window_counts.update({"images": 1, **(counts or {})})
        if self._judge.current.images == self._judge.window - 1:  # this image closes it
            self._follow_margin()
        reasons = self._judge.add(scores, flip)
        if reasons is None:
            if self._judge.window_closed:  # a window learnt from
                self._window_counts.clear()
            return
        if reasons:
            for count, value in self._window_counts.items():
                self._metrics[catalog.SHADOW_UNTRUSTED].labels(*self._labels, count).inc(value)
        self._window_counts.clear()
        self.windows += 1
        if reasons != self._distrusted:
            if reasons:
                log.warning("the reference model is out of its normal behaviour (%s): the "
                            "quality proxies are not to be believed",
                            ", ".join(r.value for r in reasons))
            elif self._distrusted:
                log.info("the reference model behaves normally again: proxies trusted")
        self._distrusted = reasons
        # the series are made here, at the first verdict: absent until then
        self._metrics[catalog.PROXY_TRUST].labels(*self._labels).set(0 if reasons else 1)
        factor = self._metrics[catalog.PROXY_TRUST_MARGIN_FACTOR]
        assert isinstance(factor, Gauge)  # as the catalog declares it
        factor.labels(*self._labels).set(self._judge.factor)
        for reason in STATISTICS:
            self._metrics[catalog.PROXY_DISTRUST].labels(*self._labels, reason.value).set(
                1 if reason in reasons else 0)

    def _follow_margin(self) -> None:
        """The factor an audit set for this model, before the window is judged."""
        if self._margins is None:
            return
        factor = self._margins(self._labels[0])
        if factor != self._judge.factor:
            if factor < 1:
                log.warning("model %s: its newest audit found a proxy outside the audited "
                            "interval that was trusted: the trust band's margin is now x%g",
                            self._labels[0], factor)
            else:
                log.info("model %s: the trust band's margin is x%g again (a newer audit "
                         "agrees)", self._labels[0], factor)
            self._judge.factor = factor
