"""Oracle: what we record for open/exec calls equals what `strace -f -y` records.

For every sample app (discovered with sample_apps.build.apps() and the first [[run]] argv
of its app.toml) in modes cgo, pure, static, musl and pie, both tracers run the program in
a private network namespace (nothing up: no packet can leave) from the same cwd, and the
sets of (open|exec, absolute path, ok|errno) must be equal.

What may legitimately differ, and how it is handled:
- sets, not sequences: the Go runtime's thread count and scheduling vary between runs,
  so the number of times a path is opened may too, while the set does not;
- temporary names and pids in paths (/tmp/openmany-123, /proc/456/...) are normalised;
- the interpreter record (flags PT_INTERP) is synthesised from the exec, not a syscall;
- apps waiting for a signal (lifecycle = "ready-file") and the bench apps are left out;
- glibc's malloc reads /sys/devices/system/cpu/online only when threads contend for an
  arena, so whether a run opens it depends on scheduling: it is left out of both sets
  (seen once in ~130 runs, static glibc, `parallel`).

Both engines run every case: the notify engine lets repeats run without a stop and copies
their result from an observed access, so its set must still equal strace's.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from sample_apps import build as sample_build
from tests.integration.tracing_helpers import strace_set, trace, traced_set

MODES = ("cgo", "pure", "static", "musl", "pie")
ENGINES = ("ptrace", "notify")
_NOISE = [(re.compile(r"/tmp/([A-Za-z_.]+)-?[0-9]+"), r"/tmp/\1-N"),
          (re.compile(r"/proc/[0-9]+/(task/[0-9]+/)?"), "/proc/PID/")]


def _cases() -> list[tuple[str, str, list[str]]]:
    out = []
    for app in sample_build.apps():
        toml = sample_build.APPS_DIR / app / "app.toml"
        meta = tomllib.loads(toml.read_text()) if toml.exists() else {}
        if app.startswith("bench") or meta.get("lifecycle"):
            continue
        runs = meta.get("run") or [{"argv": []}]
        argv = [str(a) for a in runs[0].get("argv", [])]
        modes = sample_build.supported_modes(app)
        for mode in MODES:
            if mode in modes:
                out.append((app, mode, argv))
    return out


_SCHEDULING_DEPENDENT = frozenset({"/sys/devices/system/cpu/online"})


def _normalise(s: set[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
    out = set()
    for cls, path, result in s:
        if path in _SCHEDULING_DEPENDENT:
            continue
        for rx, rep in _NOISE:
            path = rx.sub(rep, path)
        out.add((cls, path, result))
    return out


@pytest.mark.ptrace
@pytest.mark.go
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("app", "mode", "argv"), _cases(),
                         ids=[f"{a}-{m}" for a, m, _ in _cases()])
def test_open_exec_set_matches_strace(sample: Callable[..., Path], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch, app: str, mode: str,
                                      argv: list[str], engine: str) -> None:
    if __import__("shutil").which("strace") is None:
        pytest.skip("strace not installed (make system-deps)")
    binary = str(sample(app, mode))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    expected = _normalise(strace_set([binary, *argv], str(cwd), tmp_path))
    monkeypatch.chdir(cwd)
    result, accesses = trace([binary, *argv], engine=engine)
    assert result.engine == engine
    got = _normalise(traced_set(accesses))
    assert ("exec", binary, "ok") in got
    assert got == expected, (f"only strace: {sorted(expected - got)}\n"
                             f"only cgotrace: {sorted(got - expected)}")
