"""Recording rules that read the live proxies through the newest audit: each proxy plus
the bias the audit measured for it (audited - proxy, every class, on the audit's images),
and the audit's age beside it.

The audit's proxies are the plain ones (matched / primary, matched / reference boxes),
so those are what is corrected, per model version. The age is a series of its own rather
than a label: a label that changes every second would make a new series every second.
A version never audited records nothing.
"""

from __future__ import annotations

from typing import Any

from lookout.slo import catalog, names
from lookout.slo.spec import ServiceSpec

BY = "model, version"
CORRECTED_WINDOW = "1h"
# rate -> the plain proxy's denominator (the numerator is always the matched boxes)
PROXY_DENOMINATORS = {"precision": catalog.SHADOW_PRIMARY_BOXES,
                      "recall": catalog.SHADOW_REFERENCE_BOXES}


def audited_bias(selector: str, rate: str) -> str:
    """audited - proxy of the newest audit of each model version, every class."""
    estimate = catalog.AUDIT_ESTIMATE.name
    chosen = f'{selector},class="all",rate="{rate}"'
    return (f'max by ({BY}) ({estimate}{{{chosen},quantity="audited"}})\n'
            f'- max by ({BY}) ({estimate}{{{chosen},quantity="proxy"}})')


def corrected_proxy(selector: str, rate: str) -> str:
    matched = catalog.SHADOW_MATCHED_BOXES.sample_name
    denominator = PROXY_DENOMINATORS[rate].sample_name
    proxy = (f"sum by ({BY}) (rate({matched}{{{selector}}}[{CORRECTED_WINDOW}]))\n"
             f"/ sum by ({BY}) (rate({denominator}{{{selector}}}[{CORRECTED_WINDOW}]))")
    return f"{proxy}\n+ on ({BY})\n({audited_bias(selector, rate)})"


def audit_rule_group(spec: ServiceSpec) -> dict[str, Any]:
    selector = spec.selector()
    rules: list[dict[str, Any]] = [
        {"record": names.PROXY_CORRECTED, "expr": corrected_proxy(selector, rate),
         "labels": {"rate": rate}} for rate in PROXY_DENOMINATORS]
    rules.append({"record": names.AUDIT_AGE,
                  "expr": f"time() - max by ({BY}) "
                          f"({catalog.AUDIT_TIMESTAMP.name}{{{selector}}})"})
    return {"name": f"lookout-audit-{spec.service}", "rules": rules}
