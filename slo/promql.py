"""Counter queries from an OpenSLO spec turned into rates over a window.

A query is one of three things: PromQL that writes `{{window}}` where the range goes
(used as it is), a counter selector (`lookout_requests_total{code!~"5.."}`, wrapped in
`sum(rate(...[window]))`), or `sum` of one (`sum by (model) (...)`), whose rate goes
inside the aggregation: `rate(sum(x)[5m])` is not PromQL. Anything else cannot be given
a range mechanically and is refused when the spec is read.
"""

from __future__ import annotations

import re

WINDOW = "{{window}}"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_MATCHERS = rf"\{{(?:[^{{}}\"]|{_QUOTED})*\}}"
SELECTOR = re.compile(rf"\s*(?:[a-zA-Z_:][a-zA-Z0-9_:]*\s*(?:{_MATCHERS})?|{_MATCHERS})\s*")
_GROUPING = r"(?:by|without)\s*\([a-zA-Z0-9_,\s]*\)"
_NO_PARENS = rf"(?:[^()\"]|{_QUOTED})*"
SUM = re.compile(rf"\s*sum\s*(?P<before>{_GROUPING})?\s*\((?P<inner>{_NO_PARENS})\)\s*"
                 rf"(?P<after>{_GROUPING})?\s*")


class QueryError(ValueError):
    """The query cannot be turned into a rate; the message says what would work."""


def rate_over(query: str, window: str) -> str:
    """The per-second rate of the events `query` counts, over `window`."""
    if WINDOW in query:
        return query.replace(WINDOW, window)
    if SELECTOR.fullmatch(query):
        return f"sum(rate({query.strip()}[{window}]))"
    aggregation = SUM.fullmatch(query)
    if aggregation and SELECTOR.fullmatch(aggregation["inner"]):
        grouping = aggregation["before"] or aggregation["after"] or ""
        return f"sum {grouping} (rate({aggregation['inner'].strip()}[{window}]))".replace(
            "sum  (", "sum(")
    raise QueryError(
        f"{query!r} is neither a counter selector nor sum() of one, so lookout cannot put "
        f"the rate in it; write the range yourself as {WINDOW}, for example "
        f"sum(rate(my_events_total[{WINDOW}]))")


def check_counter_query(query: str) -> None:
    """Raise QueryError now for a query `rate_over` could not turn into PromQL."""
    rate_over(query, "5m")
