"""`lookout generate --slo slo.yaml --out DIR`: every artefact Prometheus, Alertmanager,
Grafana, on-call and canary controllers (Argo Rollouts, Flagger) need, from one spec.
The command is where the generators meet; each lives
in its own package (alerts/, runbooks/) and reads only the spec and the catalog."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

RULES = "prometheus/slo-rules.yaml"
OPERATIONAL = "prometheus/operational-rules.yaml"
RULE_TESTS = "prometheus/slo-rules.test.yaml"
ALERTMANAGER = "alertmanager/alertmanager.yml"
PROVISIONING = "grafana/provisioning/dashboards.yaml"
CONFIGMAP = "grafana/configmap.yaml"
ARGO_ANALYSIS = "canary/argo-analysistemplate.yaml"
FLAGGER_TEMPLATES = "canary/flagger-metrictemplates.yaml"
FLAGGER_ANALYSIS = "canary/flagger-canary-analysis.yaml"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL, descriptions) as literal blocks, so the files read
    like hand-written ones and diff line by line."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def dump(document: Any) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=100,
                     allow_unicode=True)


def artefacts(spec: Any) -> dict[str, str]:
    """Relative path -> file content, for a parsed spec."""
    from lookout.alerts.alertmanager import alertmanager_config
    from lookout.alerts.audit_rules import audit_rule_group
    from lookout.alerts.operational import operational_rule_group
    from lookout.alerts.promtool_tests import promtool_tests
    from lookout.alerts.rules import slo_rule_groups
    from lookout.canary.templates import analysis_template, flagger_analysis, metric_templates
    from lookout.dashboards.build import configmap, dashboards, provisioning
    from lookout.runbooks.generate import runbooks

    files = {
        RULES: dump({"groups": slo_rule_groups(spec)}),
        OPERATIONAL: dump({"groups": [operational_rule_group(spec), audit_rule_group(spec)]}),
        RULE_TESTS: dump(promtool_tests(spec, [Path(RULES).name, Path(OPERATIONAL).name])),
        ALERTMANAGER: dump(alertmanager_config(spec)),
    }
    files.update({f"runbooks/{name}": text for name, text in runbooks(spec).items()})
    boards = dashboards(spec)
    files.update({f"grafana/dashboards/{name}": text for name, text in boards.items()})
    files[PROVISIONING] = dump(provisioning())
    files[CONFIGMAP] = dump(configmap(spec, boards))
    # canary templates per model: each model of a multi-model pod rolls out on its own
    several = bool(spec.models)
    for model in spec.all_models:
        one = spec.for_model(model)
        suffix = f"-{model}" if several else ""
        files[ARGO_ANALYSIS.replace(".yaml", f"{suffix}.yaml")] = \
            dump(analysis_template(one, several))
        files[FLAGGER_TEMPLATES.replace(".yaml", f"{suffix}.yaml")] = "---\n".join(
            dump(t) for t in metric_templates(one, several))
        files[FLAGGER_ANALYSIS.replace(".yaml", f"{suffix}.yaml")] = \
            dump(flagger_analysis(one, per_model=several))
    return files


def add_commands(commands: argparse._SubParsersAction) -> None:
    generate = commands.add_parser(
        "generate", help="Prometheus rules, rule tests, Alertmanager config, runbooks and "
                         "Grafana dashboards from an SLO spec")
    generate.add_argument("--slo", type=Path, required=True,
                          help="slo.yaml (lookout format) or OpenSLO v1 SLO objects")
    generate.add_argument("--out", type=Path, required=True, help="output directory")
    generate.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from lookout.slo.spec import SpecError, load_spec

    try:
        spec = load_spec(args.slo)
    except SpecError as error:
        print(f"lookout: invalid SLO spec: {error}", file=sys.stderr)
        return 2
    files = artefacts(spec)
    for relative, content in files.items():
        path = args.out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    print(f"wrote {len(files)} files to {args.out} for {len(spec.slos)} SLO(s) of "
          f"{spec.service}")
    return 0
