"""The image's contents: a wheel built from exactly what the Dockerfile copies (the
repository as .dockerignore trims it), installed in a fresh virtual environment, must
run `lookout serve --help` and `lookout generate`, and install nothing but `lookout`."""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tests.support.processes import REPO


def _docker_context(destination: Path) -> None:
    """The tracked files the Dockerfile's `COPY . .` sends, after .dockerignore."""
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                             cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    for name in tracked:
        parts = Path(name).parts
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(prefix, pattern.removeprefix("**/")) or
               fnmatch.fnmatch(Path(prefix).name, pattern.removeprefix("**/"))
               for prefix in prefixes for pattern in patterns):
            continue
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_symlink():  # lookout/<room> -> ../<room>: COPY keeps links
            os.symlink(os.readlink(REPO / name), destination / name)
        elif (REPO / name).is_file():
            shutil.copy2(REPO / name, destination / name)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    work = tmp_path_factory.mktemp("image")
    context, wheels = work / "context", work / "wheels"
    context.mkdir()
    _docker_context(context)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(wheels), str(context)], check=True, cwd=work)
    [wheel] = wheels.glob("*.whl")
    fresh = work / "venv"
    venv.create(fresh, with_pip=True)
    subprocess.run([fresh / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, cwd=work)
    # the dependencies come from the test environment's site-packages, whose .pth files
    # (this checkout's editable install among them) are not read from PYTHONPATH
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    return wheel, fresh, env


def test_the_wheel_installs_only_the_lookout_namespace(installed) -> None:
    wheel, _, _ = installed
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"lookout"}
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "lookout/lookout_demo/models/primary.onnx" in names
    for package in ("sidecar", "canary", "k8s", "slo", "shadow_eval", "alerts", "dashboards",
                    "runbooks", "lookout_demo", "cli"):
        assert f"lookout/{package}/__init__.py" in names, package


def test_the_installed_command_serves_and_generates(installed, tmp_path: Path) -> None:
    _, fresh, env = installed
    lookout = fresh / "bin" / "lookout"
    served = subprocess.run([lookout, "serve", "--help"], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=120)
    assert served.returncode == 0, served.stderr
    assert "--upstream" in served.stdout
    generated = subprocess.run([lookout, "generate", "--slo", str(REPO / "slo.yaml"),
                                "--out", str(tmp_path / "out")], capture_output=True,
                               text=True, env=env, cwd=tmp_path, timeout=120)
    assert generated.returncode == 0, generated.stderr
    assert (tmp_path / "out" / "prometheus").is_dir() or any((tmp_path / "out").iterdir())
    where = subprocess.run([fresh / "bin" / "python", "-c",
                            "import lookout.sidecar, lookout.canary; "
                            "print(lookout.sidecar.__file__, lookout.canary.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert str(fresh) in where.stdout and str(REPO) not in where.stdout


def test_lookout_installs_beside_a_distribution_named_k8s(installed, tmp_path: Path) -> None:
    """A stand-in for the public `k8s` distribution (a top-level `k8s` module, as it
    ships): before the namespace, lookout's own `k8s` package would have replaced it."""
    _, fresh, env = installed
    source = tmp_path / "k8s-dist"
    (source / "k8s").mkdir(parents=True)
    (source / "k8s" / "__init__.py").write_text("THIRD_PARTY = True\n")
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "k8s"\nversion = "0.0.1"\n[tool.setuptools]\npackages = ["k8s"]\n')
    subprocess.run([fresh / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-index", "--no-build-isolation", str(source)], check=True, env=env,
                   cwd=tmp_path)
    both = subprocess.run([fresh / "bin" / "python", "-c",
                           "import k8s, lookout.k8s.inject; print(k8s.THIRD_PARTY)"],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert both.returncode == 0 and both.stdout.strip() == "True", both.stderr
    assert subprocess.run([fresh / "bin" / "lookout", "--help"], capture_output=True, env=env,
                          cwd=tmp_path).returncode == 0
