"""Map request paths to a bounded set of `route` label values.

A raw path can hold ids, file names or model names, so it must never become a label.
Paths are matched against configured templates (`/v2/models/{model}/infer`); the
template itself is the label, anything else is `other`.
"""

from __future__ import annotations

import re

OTHER_ROUTE = "other"
_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


def _template_regex(template: str) -> re.Pattern[str]:
    pieces = _PLACEHOLDER.split(template)
    pattern = "[^/]+?".join(re.escape(piece) for piece in pieces)
    return re.compile(pattern + "/?")


class RouteTemplates:
    """First matching template wins; results are memoised in a bounded cache."""

    def __init__(self, templates: tuple[str, ...], cache_size: int = 4096) -> None:
        for template in templates:
            if not template.startswith("/"):
                raise ValueError(f"route template {template!r} must start with '/'")
        self._compiled = [(template, _template_regex(template)) for template in templates]
        self._cache: dict[str, str] = {}
        self._cache_size = cache_size

    def label(self, path: str) -> str:
        route = self._cache.get(path)
        if route is not None:
            return route
        route = next(
            (template for template, regex in self._compiled if regex.fullmatch(path)),
            OTHER_ROUTE,
        )
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[path] = route
        return route
