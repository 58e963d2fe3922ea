"""`lookout generate` on the shipped slo.yaml: golden files, promtool and amtool.

Regenerate the golden files after an intended change with
`LOOKOUT_UPDATE_GOLDEN=1 pytest tests/alerts/test_generated.py`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lookout.cli.generate import ALERTMANAGER, OPERATIONAL, RULE_TESTS, RULES
from lookout.slo import catalog
from tests.support.processes import require_tool

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "slo"


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    result = subprocess.run([sys.executable, "-m", "lookout", "generate", "--slo",
                             str(REPO / "slo.yaml"), "--out", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return out


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_generated_files_match_the_golden_files(generated: Path) -> None:
    if os.environ.get("LOOKOUT_UPDATE_GOLDEN"):
        for relative, content in _files(generated).items():
            (GOLDEN / relative).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / relative).write_text(content)
    assert _files(generated) == _files(GOLDEN)


def test_promtool_accepts_the_rules(generated: Path) -> None:
    promtool = require_tool("promtool")
    for rules in (RULES, OPERATIONAL):
        result = subprocess.run([promtool, "check", "rules", str(generated / rules)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr


# the shipped spec's promtool scenarios (the golden copy is what `generated` must equal),
# one test each so xdist spreads the ~3 CPU minutes promtool spends on them
SCENARIOS = [test["name"] for test in yaml.safe_load(
    (GOLDEN / RULE_TESTS).read_text())["tests"]]


def promtool_test(promtool: str, test_file: Path, names: list[str]) -> str:
    """Runs `names` of `test_file`'s scenarios alone: a file of their own beside it, so
    its relative rule_files still resolve. Returns promtool's output."""
    document = yaml.safe_load(test_file.read_text())
    chosen = [test for test in document["tests"] if test["name"] in names]
    assert {test["name"] for test in chosen} == set(names)  # each model's, of a shared name
    part = test_file.with_name(f"part-{abs(hash(tuple(names)))}-{test_file.name}")
    part.write_text(yaml.safe_dump({**document, "tests": chosen}, sort_keys=False))
    result = subprocess.run([promtool, "test", "rules", str(part)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert "SUCCESS" in result.stdout
    return result.stdout


def test_every_event_slo_has_promtool_scenarios() -> None:
    assert len(SCENARIOS) >= 15


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_promtool_unit_tests_pass(generated: Path, scenario: str) -> None:
    promtool_test(require_tool("promtool"), generated / RULE_TESTS, [scenario])


def test_amtool_accepts_the_alertmanager_config(generated: Path) -> None:
    amtool = require_tool("amtool")
    result = subprocess.run([amtool, "check-config", str(generated / ALERTMANAGER)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_complete_and_has_its_runbook(generated: Path) -> None:
    alerts = [rule for path in (RULES, OPERATIONAL)
              for group in yaml.safe_load((generated / path).read_text())["groups"]
              for rule in group["rules"] if "alert" in rule]
    assert {a["labels"]["severity"] for a in alerts} == {"page", "ticket"}
    for alert in alerts:
        annotations = alert["annotations"]
        assert annotations["summary"] and annotations["description"], alert["alert"]
        runbook = annotations["runbook_url"].rsplit("/", 1)[1]
        assert runbook == f"{alert['alert']}.md"
        text = (generated / "runbooks" / runbook).read_text()
        for heading in ("## What it means", "## First checks", "## Likely causes",
                        "## Mitigation", "## Rollback"):
            assert heading in text, (runbook, heading)
    burn = [a for a in alerts if "burn_tier" in a["labels"]]
    assert len(burn) == 5 * 4  # every SLO, every tier


def test_rules_only_name_metrics_from_the_catalog(generated: Path) -> None:
    import re

    text = (generated / RULES).read_text() + (generated / OPERATIONAL).read_text()
    known = {name for spec in catalog.ALL for name in (
        spec.name, spec.sample_name, spec.bucket_name, spec.count_name, spec.sum_name)}
    used = set(re.findall(r"\blookout_[a-z_]+", text))
    assert used and used <= known, used - known


EXPRESSION_GOOD = "sum(lookout_requests_total{code!~\"5..\"})"


@pytest.mark.parametrize("good", ['lookout_requests_total{code="200"}', EXPRESSION_GOOD])
def test_openslo_ratio_slos_generate_rules_promtool_accepts(tmp_path: Path, good: str) -> None:
    """A selector or an aggregation of one: the rate goes inside, where PromQL needs it
    (`rate(sum(...)[5m])` is what promtool refuses)."""
    from tests.slo.test_spec import OPENSLO

    promtool = require_tool("promtool")
    spec = tmp_path / "openslo.yaml"
    spec.write_text(OPENSLO.replace("""query: 'lookout_requests_total{code="200"}'""",
                                    f"query: '{good}'"))
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "lookout", "generate", "--slo",
                             str(spec), "--out", str(out)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    rules = (out / RULES).read_text()
    selector = good.removeprefix("sum(").removesuffix(")")
    assert f"sum(rate({selector}[5m]))" in rules
    assert "* 3600" in rules  # the 1h window's event count for the low-traffic guard
    checked = subprocess.run([promtool, "check", "rules", str(out / RULES)],
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _rendered(rule: dict, labels: dict[str, str], evaluated: int,
              value: float | None = None) -> dict[str, str]:
    """The rule's annotations as Prometheus renders them for these labels at `evaluated`
    seconds (the gallery link's window ends then)."""
    def render(text: str) -> str:
        text = re.sub(r'\{\{ with query "time\(\) - (\d+)" \}\}.*?\{\{ end \}\}',
                      lambda m: str(evaluated - int(m[1])), text)
        if value is not None:
            text = text.replace("{{ $value | humanizePercentage }}", f"{value * 100:.4g}%")
        return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m[1], ""), text)

    return {key: render(text) for key, text in rule["annotations"].items()}


def _operational_rule(generated: Path, name: str) -> dict:
    [rule] = [r for group in yaml.safe_load((generated / OPERATIONAL).read_text())["groups"]
              for r in group["rules"] if r.get("alert") == name]
    return rule


def _promtool_test(promtool: str, generated: Path, tmp_path: Path, tests: list) -> None:
    path = tmp_path / "operational_test.yaml"
    path.write_text(yaml.safe_dump({"rule_files": [str(generated / OPERATIONAL)],
                                    "evaluation_interval": "1m", "tests": tests}))
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_the_gpu_memory_alert_pages_for_a_pod_whose_processes_fill_the_gpu(
        generated: Path, tmp_path: Path) -> None:
    """80 GiB GPUs. Pod a's processes hold 66 GiB and take 300 MiB a minute: over 85% and
    full within the hour, so it pages. Pod b holds 75 GiB, flat (full but not rising: the
    near-full ticket's business); pod c rises as fast from 20 GiB (nowhere near)."""
    from lookout.slo import names

    promtool = require_tool("promtool")
    gib, step = 1024**3, 300 * 1024**2

    def pod(instance: str, start: int, growth: int) -> list[dict]:
        labels = f'instance="{instance}",job="lookout",gpu="0"'
        return [{"series": f"{catalog.GPU_PROCESS_MEMORY.name}{{{labels}}}",
                 "values": f"{start}+{growth}x40"},
                {"series": f"{catalog.GPU_MEMORY_TOTAL.name}{{{labels}}}",
                 "values": f"{80 * gib}+0x40"}]

    rule = _operational_rule(generated, names.GPU_PROCESS_MEMORY_RISING)
    alert = {"alertname": names.GPU_PROCESS_MEMORY_RISING, **rule["labels"], "instance": "a",
             "gpu": "0"}
    evaluated = 30 * 60
    held = (66 * gib + 30 * step) / (80 * gib)
    _promtool_test(promtool, generated, tmp_path, [{
        "interval": "1m",
        "input_series": [*pod("a", 66 * gib, step), *pod("b", 75 * gib, 0),
                         *pod("c", 20 * gib, step)],
        "alert_rule_test": [
            {"eval_time": "5m", "alertname": names.GPU_PROCESS_MEMORY_RISING, "exp_alerts": []},
            {"eval_time": "30m", "alertname": names.GPU_PROCESS_MEMORY_RISING,
             "exp_alerts": [{"exp_labels": alert,
                             "exp_annotations": _rendered(rule, alert, evaluated, held)}]}]}])


def test_the_served_version_alert_fires_for_the_pod_serving_what_was_not_deployed(
        generated: Path, tmp_path: Path) -> None:
    """Pod a is deployed as version 4 and its server answers as 3; pod b is deployed as
    and serves 3. Only pod a is stale, and a roll-out (both deployed, both served) is not."""
    from lookout.slo import names

    promtool = require_tool("promtool")
    served = catalog.SERVED_RESPONSES.sample_name

    def series(instance: str, deployed: str, answered: str) -> dict:
        labels = (f'instance="{instance}",model="yolo11n",version="{deployed}",'
                  f'served_version="{answered}"')
        return {"series": f"{served}{{{labels}}}", "values": "0+60x30"}

    rule = _operational_rule(generated, names.SERVED_VERSION_MISMATCH)
    alert = {"alertname": names.SERVED_VERSION_MISMATCH, **rule["labels"], "instance": "a",
             "model": "yolo11n", "version": "4", "served_version": "3"}
    evaluated = 25 * 60  # the gallery link's window ends at the evaluation's time
    annotations = _rendered(rule, alert, evaluated)
    assert annotations["gallery_url"].endswith(
        f"/ui/samples?model=yolo11n&since={evaluated - 3600}&until={evaluated}")
    _promtool_test(promtool, generated, tmp_path, [
        {"interval": "1m", "input_series": [series("a", "4", "3"), series("b", "3", "3")],
         "alert_rule_test": [{"eval_time": "25m", "alertname": names.SERVED_VERSION_MISMATCH,
                              "exp_alerts": [{"exp_labels": alert,
                                              "exp_annotations": annotations}]}]},
        {"interval": "1m", "input_series": [series("a", "4", "4"), series("b", "3", "3")],
         "alert_rule_test": [{"eval_time": "25m", "alertname": names.SERVED_VERSION_MISMATCH,
                              "exp_alerts": []}]}])


MULTI_MODEL_SPEC = """
service: shelf-detector
model: [primary, coarse]      # a pod serving two models: every SLO holds for each
period: 28d
slos:
  - {name: availability, kind: availability, objective: 0.995}
  - {name: precision, kind: quality, proxy: precision, objective: 0.9}
"""


def test_a_multi_model_spec_gives_each_model_its_rules_tests_and_canary(
        tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    spec = tmp_path / "slo.yaml"
    spec.write_text(MULTI_MODEL_SPEC)
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "lookout", "generate", "--slo", str(spec),
                             "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    groups = yaml.safe_load((out / RULES).read_text())["groups"]
    assert [g["name"] for g in groups] == [
        "lookout-slo-shelf-detector-primary-recording", "lookout-slo-shelf-detector-primary-alerts",
        "lookout-slo-shelf-detector-coarse-recording", "lookout-slo-shelf-detector-coarse-alerts"]
    for group, model in zip(groups[::2], ("primary", "coarse"), strict=True):
        assert {rule["labels"]["model"] for rule in group["rules"]} == {model}
        assert all(f'model="{model}"' in rule["expr"] for rule in group["rules"]
                   if "lookout_" in rule["expr"] and "vector(" not in rule["expr"])
    operational = (out / OPERATIONAL).read_text()
    assert 'model=~"primary|coarse"' in operational
    for rules in (RULES, OPERATIONAL):
        checked = subprocess.run([promtool, "check", "rules", str(out / rules)],
                                 capture_output=True, text=True, timeout=120)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    tests = yaml.safe_load((out / RULE_TESTS).read_text())["tests"]
    # each model's availability fast burn on its own series, beside the other model's
    # rules (the scenarios themselves are the single-model spec's, run in full above)
    fast_burn = [test["name"] for test in tests
                 if test["name"].startswith("availability") and "clean hours" in test["name"]]
    assert len(fast_burn) == 2
    promtool_test(promtool, out / RULE_TESTS, fast_burn[:1])
    models = {model for test in tests for series in test["input_series"]
              for model in re.findall(r'model="(\w+)"', series["series"])}
    assert models == {"primary", "coarse"}
    for model in ("primary", "coarse"):
        argo = yaml.safe_load((out / f"canary/argo-analysistemplate-{model}.yaml").read_text())
        assert argo["metadata"]["name"] == f"lookout-shelf-detector-{model}"
        assert all(f'model="{model}"' in m["provider"]["prometheus"]["query"]
                   for m in argo["spec"]["metrics"])
