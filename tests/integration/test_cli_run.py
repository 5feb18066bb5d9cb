"""`cgotrace run PROGRAM ARGS`: where the program's command line starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.ptrace


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tracer", *args], capture_output=True,
                          text=True, timeout=120)


def test_options_after_the_program_are_the_programs() -> None:
    r = run_cli("run", "-q", "--no-stacks", "/bin/echo", "--imagee", "-x")
    assert r.returncode == 0 and r.stdout == "--imagee -x\n"
    r = run_cli("run", "-q", "--no-stacks", "--", "/bin/echo", "--rootfs")
    assert r.returncode == 0 and r.stdout == "--rootfs\n"
