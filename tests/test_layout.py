"""The layout's law: which package may import which, as ARCHITECTURE.md's table says, and
the `lookout.` namespace that holds them all."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOT_INSTALLED = {"tests", "bench", "tools"}


def _table() -> dict[str, set[str] | None]:
    """folder -> the modules it may import (None: everything)."""
    architecture = (REPO / "ARCHITECTURE.md").read_text()
    section = architecture[architecture.index("## Layout"):]
    rules: dict[str, set[str] | None] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        folder = cells[0].strip("`/")
        allowed = cells[2]
        rules[folder] = None if allowed == "everything" else set(
            re.findall(r"`([a-z0-9_.]+)`", allowed))
    return rules


RULES = _table()
PACKAGES = sorted(path.parent.name for path in REPO.glob("*/__init__.py")
                  if path.parent.name not in NOT_INSTALLED)


def _lookout_imports(path: Path) -> list[tuple[int, str]]:
    """Every `lookout.*` module a file imports, at the top or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name.startswith("lookout.")]


def test_every_package_folder_has_a_row_and_installs_under_lookout() -> None:
    assert set(PACKAGES) <= set(RULES), set(PACKAGES) - set(RULES)
    for package in PACKAGES:
        name = package if package == "lookout" else f"lookout.{package}"
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        # found at lookout/<room>/, the link to the room at the top: what mypy and
        # editors resolve `lookout.<room>` to without an import hook
        assert Path(spec.origin).parent == REPO / "lookout" / package or \
            package == "lookout", spec.origin
        assert Path(spec.origin).resolve().parent == REPO / package


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_follow_the_table(package: str) -> None:
    allowed = RULES[package]
    if allowed is None:
        return
    wrong = []
    for path in sorted((REPO / package).rglob("*.py")):
        for line, module in _lookout_imports(path):
            target = module.split(".")[1] if package != "lookout" else "lookout"
            if target == package or module in ("lookout", "lookout.cli"):
                continue
            inner = module.removeprefix("lookout.")
            if not any(inner == rule or inner.startswith(rule + ".") or rule.startswith(
                    inner + ".") for rule in allowed):
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {module}")
            if inner.startswith("cli") or module.startswith("lookout.cli"):
                wrong.append(f"{path.relative_to(REPO)}:{line} imports the command line")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_nothing_imports_a_bare_top_level_package() -> None:
    parts = [package for package in PACKAGES if package != "lookout"]
    bare = re.compile(rf"^\s*(from|import) ({'|'.join(parts)})\b", re.M)
    offenders = [str(path.relative_to(REPO)) for folder in [*PACKAGES, *NOT_INSTALLED]
                 for path in (REPO / folder).rglob("*.py") if bare.search(path.read_text())]
    assert not offenders, offenders


# The process wiring lives in one room, and the whole configuration stays in the lookout
# process: only the composition (the lifecycle, `sidecar/server.py`, and the cut of each
# part's settings, `sidecar/composition.py`) receives a `Config`, besides its loader.

PROCESS_ROOM = "sidecar/processes"
COMPOSITION = {"sidecar/server.py", "sidecar/composition.py"}
LOADER = {"sidecar/config.py", "sidecar/preflight.py"}  # reads and checks the options
SERIALISATION = "sidecar/processes/wire.py"

SPAWNING_MODULES = {"subprocess", "pty", "multiprocessing", "multiprocessing.pool",
                    "multiprocessing.context", "multiprocessing.popen_spawn_posix",
                    "multiprocessing.popen_fork", "multiprocessing.popen_forkserver"}
# what multiprocessing also holds that starts nothing: shared memory and pipes
PROCESS_FREE = {"multiprocessing.shared_memory", "multiprocessing.connection",
                "multiprocessing.process"}
SPAWNING_CALLS = re.compile(
    r"^(fork|forkpty|system|popen|posix_spawnp?|exec[lv]p?e?|spawn[lv]p?e?|Popen|Process|"
    r"Pool|get_context|ProcessPoolExecutor|create_subprocess_(exec|shell)|"
    r"subprocess_(exec|shell))$")
CONFIG_NAMES = {"Config", "per_model", "load_config"}
SERIALISERS = {"pickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle"}


def _installed_files() -> list[Path]:
    return [path for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))]


def _where(path: Path) -> str:
    return str(path.relative_to(REPO))


def _spawns(tree: ast.AST) -> list[tuple[int, str]]:
    """Where a module starts a process, or imports what starts one."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {alias.name}") for alias in node.names
                      if alias.name in SPAWNING_MODULES or (alias.name.startswith(
                          "multiprocessing.") and alias.name not in PROCESS_FREE)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [alias.name for alias in node.names]
            if node.module == "multiprocessing":
                names = [name for name in names if f"multiprocessing.{name}" not in PROCESS_FREE]
            elif node.module in PROCESS_FREE:
                names = []
            elif node.module not in SPAWNING_MODULES:
                names = [name for name in names if SPAWNING_CALLS.match(name)]
            found += [(node.lineno, f"from {node.module} import {name}") for name in names]
        elif isinstance(node, ast.Attribute) and SPAWNING_CALLS.match(node.attr):
            found.append((node.lineno, f".{node.attr}"))
    return found


def _annotations(tree: ast.AST) -> list[ast.expr]:
    found: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
            found.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns:
            found.append(node.returns)
    return found


def _names_in(annotation: ast.expr) -> set[str]:
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        annotation = ast.parse(annotation.value, mode="eval").body  # a quoted annotation
    return {node.id if isinstance(node, ast.Name) else node.attr
            for node in ast.walk(annotation) if isinstance(node, ast.Name | ast.Attribute)}


def _receives_config(tree: ast.AST) -> list[tuple[int, str]]:
    """Where a module takes the whole configuration: imports it (or `per_model`, or the
    loader), names `Config` in an annotation, or takes a `config` typed `Any` or not at
    all (the configuration in disguise)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "lookout.sidecar.config":
            found += [(node.lineno, f"imports {alias.name}") for alias in node.names
                      if alias.name in CONFIG_NAMES]
        elif isinstance(node, ast.ImportFrom) and node.module == "lookout.sidecar":
            found += [(node.lineno, "imports the config module") for alias in node.names
                      if alias.name == "config"]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, "imports the config module") for alias in node.names
                      if alias.name == "lookout.sidecar.config"]
        elif isinstance(node, ast.arg) and node.arg == "config" and (
                node.annotation is None or _names_in(node.annotation) == {"Any"}):
            found.append((node.lineno, "takes a `config` of no type"))
    found += [(annotation.lineno, "annotates Config") for annotation in _annotations(tree)
              if "Config" in _names_in(annotation)]
    return found


def test_nothing_outside_the_process_room_starts_a_process() -> None:
    spawners: dict[str, list[tuple[int, str]]] = {}
    for path in _installed_files():
        found = _spawns(ast.parse(path.read_text()))
        if found:
            spawners[_where(path)] = found
    outside = [f"{where}:{line} {what}" for where, found in spawners.items()
               if not where.startswith(PROCESS_ROOM + "/") for line, what in found]
    assert not outside, "\n".join(outside)
    # and the room is where Envoy and the analysis workers are in fact started
    assert {f"{PROCESS_ROOM}/envoy.py", f"{PROCESS_ROOM}/supervisor.py"} <= set(spawners)


def test_only_the_composition_receives_the_whole_configuration() -> None:
    receivers: dict[str, list[tuple[int, str]]] = {}
    for path in sorted((REPO / "sidecar").rglob("*.py")):
        found = _receives_config(ast.parse(path.read_text()))
        if found:
            receivers[_where(path)] = found
    others = [f"{where}:{line} {what}" for where, found in receivers.items()
              if where not in COMPOSITION | LOADER for line, what in found]
    assert not others, "\n".join(others)
    assert set(receivers) >= COMPOSITION  # the check sees a receiver when there is one


def test_the_composition_is_named_where_it_is() -> None:
    for where in COMPOSITION | LOADER | {SERIALISATION}:
        assert (REPO / where).is_file(), where


def test_one_serialisation_between_processes() -> None:
    """pickle, in `processes/wire.py`; no module reaches for it (or marshal) itself."""
    users = []
    for path in _installed_files():
        for node in ast.walk(ast.parse(path.read_text())):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) \
                else [node.module] if isinstance(node, ast.ImportFrom) and node.module \
                else []
            users += [(_where(path), node.lineno) for module in modules
                      if module.split(".")[0] in SERIALISERS]
    assert [where for where, _ in users] == [SERIALISATION], users


def _row(folder: str) -> str:
    architecture = (REPO / "ARCHITECTURE.md").read_text()
    section = architecture[architecture.index("## Layout"):]
    return next(line for line in section.splitlines()
                if line.startswith(f"| `{folder}/` |"))


def test_the_sidecar_row_names_every_subpackage_and_top_level_module() -> None:
    """The layout table's `sidecar/` row lists what is there, and nothing that is not."""
    job = _row("sidecar").split("|")[2]
    named = set(re.findall(r"`([a-z_]+(?:/|\.py))`", job))
    sidecar = REPO / "sidecar"
    present = {f"{path.parent.name}/" for path in sidecar.glob("*/__init__.py")}
    present |= {path.name for path in sidecar.glob("*.py")} - {"__init__.py"}
    assert present <= named, sorted(present - named)
    anywhere = {path.name for path in sidecar.rglob("*.py")} | {
        f"{path.parent.name}/" for path in sidecar.rglob("__init__.py")}
    assert named <= anywhere, sorted(named - anywhere)  # nothing moved or deleted


def test_the_chains_stages_are_the_declared_list() -> None:
    """Every class of sidecar/ with a stage's `offer(analysis)` has its place in
    `chain.STAGES`, and STAGES holds nothing else: a stage cannot be wired in beside the
    declared list (the chain refuses one out of order at run time, test_chain.py)."""
    from lookout.sidecar.chain import STAGES

    declared = {kind.__name__ for place in STAGES for kind in place}
    stages = set()
    for path in sorted((REPO / "sidecar").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef) or any(
                    isinstance(base, ast.Name) and base.id == "Protocol" for base in node.bases):
                continue
            if any(isinstance(item, ast.FunctionDef) and item.name == "offer"
                   and [a.arg for a in item.args.args][1:2] == ["analysis"]
                   for item in node.body):
                stages.add(node.name)
    assert stages == declared, (stages - declared, declared - stages)
