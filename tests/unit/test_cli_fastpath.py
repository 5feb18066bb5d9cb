"""`cgotrace run` without click (tracer/cli/fastpath.py): every command line it takes, click
parses to the same values; every other one is left to click; and a plain `run` imports no
click at all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tracer.cli.fastpath import parse_run

ROOT = Path(__file__).resolve().parents[2]

TAKEN = [
    ["run", "/bin/true"],
    ["run", "-q", "--", "/bin/true"],
    ["run", "-q", "--no-stacks", "/bin/echo", "-q", "--rootfs"],
    ["run", "--quiet", "-v", "--verbose", "--no-stacks", "--", "-x", "y"],
    ["run", "-q", "-q", "--", "--", "z"],
    ["run", "--", "/bin/echo", "--help"],
]
LEFT_TO_CLICK = [
    [], ["run"], ["run", "-q"], ["run", "--"], ["run", "--help"], ["run", "-qv", "/bin/true"],
    ["run", "--imag", "x", "/bin/true"], ["run", "-o", "t.jsonl", "/bin/true"],
    ["run", "-", "/bin/true"], ["report", "t.jsonl"], ["--debug", "run", "/bin/true"],
]


@pytest.fixture(autouse=True)
def _no_click_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CGOTRACE_DEBUG", "CGOTRACE_ENGINE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("args", TAKEN, ids=" ".join)
def test_click_parses_what_the_fast_path_takes_to_the_same_values(args: list[str]) -> None:
    from tracer.cli.run import run

    fast = parse_run(args)
    assert fast is not None
    ctx = run.make_context("run", args[1:])
    assert fast == ctx.params


@pytest.mark.parametrize("args", LEFT_TO_CLICK, ids=lambda a: " ".join(a) or "nothing")
def test_anything_else_is_left_to_click(args: list[str]) -> None:
    assert parse_run(args) is None


@pytest.mark.parametrize("name", ["CGOTRACE_DEBUG", "CGOTRACE_ENGINE"])
def test_a_variable_click_reads_sends_the_line_to_click(name: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, "1")
    assert parse_run(["run", "-q", "/bin/true"]) is None


def test_a_plain_run_imports_no_click_and_help_still_works() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CGOTRACE_DEBUG", "CGOTRACE_ENGINE")}
    env["PYTHONPATH"] = str(ROOT)
    # what run_program imports on its way to the program (tracer/cli/run_program.py)
    probe = ("import sys, tracer.cli, tracer.cli.fastpath as f, tracer.cli.run_program,"
             " tracer.cli._reporting, tracer.commands.run, tracer.attribution.policy;"
             "print(f.parse_run(['run', '-q', '/bin/true']) is not None, 'click' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["True", "False"]
    help_ = subprocess.run([sys.executable, "-m", "tracer", "run", "--help"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert help_.returncode == 0 and "--no-stacks" in help_.stdout
