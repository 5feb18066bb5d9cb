"""The pytest plugin as a user gets it: cgotrace built as a wheel, installed into a fresh
virtual environment (not this checkout's editable install), and an outside project's tests
run by that environment's pytest in a subprocess. The outcomes and the failure text are
asserted: a test whose traced program has hidden dependencies fails and names them, a gate
marker fails the cgo build and passes the netgo,osusergo one, a clean build passes.

The environment is cached in .cache/plugin-venv by content: the base (pip's `pytest` and the
package's dependencies from pyproject.toml) by the dependency list and Python version, the
installed wheel by a digest of the package sources. A new checkout pays once; a change to
tracer/ or probes/ rebuilds and reinstalls the wheel only. pip installs from the package
index, as `make venv` does.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from sample_apps.build import locked

pytestmark = [pytest.mark.ptrace, pytest.mark.go, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "plugin-venv"
PACKAGE = ("pyproject.toml", "README.md", "tracer", "probes")  # what the wheel is built from

OUTSIDE_TESTS = '''
import pytest

CGO, NETGO = {cgo!r}, {netgo!r}


def test_netgo_build_is_clean(cgotrace):
    r = cgotrace(NETGO)
    assert r.exit_code == 0
    r.assert_no_hidden()
    r.assert_no_cgo()


def test_cgo_build_has_no_hidden_dependencies(cgotrace):
    cgotrace(CGO).assert_no_hidden()


@pytest.mark.cgotrace_fail_on("nss-module")
def test_gate_on_the_cgo_build(cgotrace):
    cgotrace(CGO)


@pytest.mark.cgotrace_fail_on("nss-module")
def test_gate_on_the_netgo_build(cgotrace):
    assert cgotrace(NETGO).exit_code == 0
'''
EXPECTED = {"test_netgo_build_is_clean": "passed",
            "test_cgo_build_has_no_hidden_dependencies": "failed",
            "test_gate_on_the_cgo_build": "failed",
            "test_gate_on_the_netgo_build": "passed"}


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def _package_files() -> list[Path]:
    out = []
    for name in PACKAGE:
        p = ROOT / name
        out += [f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts] \
            if p.is_dir() else [p]
    return out




def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          **kw)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"
    return proc  # type: ignore[no-any-return]


def _base_venv() -> Path:
    """A fresh venv with pytest and the package's dependencies (not the package)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    wants = ["pytest>=8", *deps]
    key = hashlib.sha256(repr((sys.version_info[:2], wants)).encode()).hexdigest()[:12]
    venv = CACHE / f"venv-{key}"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(venv)])
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *wants])
        (venv / ".complete").write_text("\n".join(wants) + "\n")
    return venv


def _install_wheel(venv: Path, tmp: Path) -> str:
    """Build the wheel from a copy of the package sources (the checkout stays clean) and
    install it into `venv`, unless the installed one has the same sources."""
    digest = _digest(_package_files())
    marker = venv / ".cgotrace-wheel"
    if marker.exists() and marker.read_text() == digest:
        return digest
    src = tmp / "src"
    for name in PACKAGE:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, src / name)
    wheels = tmp / "wheels"
    _run([str(venv / "bin" / "python"), "-m", "pip", "wheel", "-q", "--no-deps", "-w",
          str(wheels), str(src)])
    (wheel,) = wheels.glob("cgotrace-*.whl")
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
          "--force-reinstall", str(wheel)])
    marker.write_text(digest)
    return digest


@pytest.fixture(scope="session")
def plugin_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    with locked(CACHE / ".lock"):  # one builder of the environment (xdist workers)
        venv = _base_venv()
        _install_wheel(venv, tmp_path_factory.mktemp("wheel"))
    return venv


def _outside_env(engine: str) -> dict[str, str]:
    """A user's environment: nothing of this checkout on the path."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "PYTEST", "CGOTRACE_", "VIRTUAL_ENV"))}
    env["CGOTRACE_ENGINE"] = engine
    return env


@pytest.mark.parametrize("engine", ["ptrace", "notify"])
def test_installed_wheel_runs_an_outside_projects_tests(plugin_venv: Path, tmp_path: Path,
                                                        sample: Callable[..., Path],
                                                        engine: str) -> None:
    python = str(plugin_venv / "bin" / "python")
    project = tmp_path / "project"
    project.mkdir()
    env = _outside_env(engine)
    where = _run([python, "-c", "import tracer, probes; print(tracer.__file__, probes.__file__)"],
                 cwd=project, env=env).stdout.split()
    assert all(w.startswith(str(plugin_venv)) for w in where), where  # the wheel, not ours

    (project / "test_app.py").write_text(OUTSIDE_TESTS.format(
        cgo=str(sample("userlookup", "cgo")), netgo=str(sample("userlookup", "netgo"))))
    report = tmp_path / "junit.xml"
    proc = subprocess.run([python, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           f"--junitxml={report}", "test_app.py"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # tests failed, nothing else
    plugins = _run([python, "-m", "pytest", "--version", "--version"], cwd=project,
                   env=env).stdout
    assert f"cgotrace-0.1.0 at {plugin_venv}/" in plugins, plugins  # the entry point

    outcomes, messages = {}, {}
    for case in ET.parse(report).getroot().iter("testcase"):
        failure = case.find("failure")
        error = case.find("error")
        outcomes[case.get("name")] = "failed" if failure is not None else (
            "error" if error is not None else "passed")
        if failure is not None:
            messages[case.get("name")] = (failure.get("message") or "") + (failure.text or "")
    assert outcomes == EXPECTED, proc.stdout
    hidden = messages["test_cgo_build_has_no_hidden_dependencies"]
    assert "hidden dependencies:" in hidden and "/etc/nsswitch.conf" in hidden, hidden
    assert "<- os/user.Lookup" in hidden, hidden
    gate = messages["test_gate_on_the_cgo_build"]
    assert "cgotrace --fail-on nss-module: " in gate and "fails the gate" in gate, gate
    assert "nss-module: " in gate and "libnss_" in gate, gate
