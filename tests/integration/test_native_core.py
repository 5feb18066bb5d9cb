"""The native per-call core (tracer/engine/_native.c) against the pure-Python path it
replaces: the same programs traced both ways give the same records, and the set strace
sees.

Python stays the reference: the core only answers calls the collector armed. A
single-threaded C program makes the comparison exact, record by record (its calls come
in one order). Go programs run their calls on whichever thread the scheduler picks, so
records per thread differ between any two runs; for them the comparison is per (syscall,
path, flags, result): how many calls, whether one was observed, and which code made them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from probes.analysis import analyze_trace
from tests.integration.tracing_helpers import (
    cgotrace_cmd,
    compile_c,
    strace_set,
    trace,
    traced_set,
)
from tracer.attribution.attributor import Attributor
from tracer.commands.run import RunResult
from tracer.engine import native
from tracer.trace.model import Access
from tracer.trace.recorder import read_trace

pytestmark = pytest.mark.ptrace
Sample = Callable[..., Path]

# one thread, a fixed order: repeats of absolute and relative paths, a failure, probes,
# writes, and counts that cross several power-of-two samples
_LOOP_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct stat st;
    if (argc < 2 || chdir("/etc") != 0) return 2;
    for (int i = 0; i < 3000; i++) {
        int fd = open("/etc/hostname", O_RDONLY);
        if (fd >= 0 && fstat(fd, &st) == 0) close(fd);  /* glibc: newfstatat(fd, "") */
        fd = open("/etc/cgotrace-no-such-file", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) return 3;
        stat("/etc/passwd", &st);
        access("/etc/hosts", R_OK);
        if (i % 50 == 0) {  /* relative: the same key as the absolute open above */
            fd = open("hostname", O_RDONLY);
            if (fd >= 0) close(fd);
        }
        if (i % 500 == 0) {
            fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0600);
            if (fd >= 0) close(fd);
        }
    }
    return 0;
}
"""


def _available() -> None:
    module, why = native.load()
    if module is None:
        pytest.fail(f"the native core is not built: {why}")


def _run_both(monkeypatch: pytest.MonkeyPatch, argv: list[str], tmp_path: Path,
              **kw: Any) -> dict[str, tuple[RunResult, list[Access]]]:
    """Trace `argv` with the core and with CGOTRACE_NATIVE=0; the records read back from
    each trace file. The findings made while each ran (repeats counted as they were
    reported) are those `report` makes from its file."""
    _available()
    out = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("CGOTRACE_NATIVE", flag)
        trace_file = tmp_path / f"native{flag}.jsonl"
        res, _ = trace(argv, engine="notify", attributor=Attributor(), output=str(trace_file),
                       **kw)
        assert res.engine == "notify" and res.status.code == 0, res.status
        assert ("native per-call core" in res.engine_reason) is (flag == "1")
        saved = read_trace(trace_file)
        assert _answers(res.analysis) == _answers(analyze_trace(saved))
        out[flag] = res, saved.accesses
    assert _answers(out["1"][0].analysis) == _answers(out["0"][0].analysis)
    return out


def _answers(analysis: Any) -> tuple[object, ...]:
    """What report, diff and the gate read: findings, dependencies with their counts and
    callers, the program's files."""
    deps = sorted((d.path, d.result, d.cls.value, d.count,
                   tuple(sorted((c.via, c.go_api, c.c_function, c.count) for c in d.callers)))
                  for d in analysis.dependencies)
    return (sorted(f.id for f in analysis.findings), deps,
            analysis.program_files.files, dict(analysis.counts))


def _attribution(a: Access) -> tuple[object, ...] | None:
    at = a.attribution
    if at is None:
        return None
    uf = at.user_frame
    return (at.via.value, at.go_api, at.c_function, at.origin,
            (uf.function, uf.line) if uf is not None else None)


def _record(a: Access) -> tuple[object, ...]:
    return (a.seq, a.tid == a.pid, a.syscall, a.path, a.flags, a.result, a.kind.value,
            a.hidden, a.observed, a.result_of, a.repeats, a.repeats_unobserved,
            _attribution(a))


def test_one_thread_gives_the_same_records_with_and_without_the_core(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    exe = compile_c(_LOOP_C)
    runs = _run_both(monkeypatch, [str(exe), str(tmp_path / "log")], tmp_path)
    (with_core, records), (without, reference) = runs["1"], runs["0"]
    assert [_record(a) for a in records] == [_record(a) for a in reference]
    calls = {p: sum(a.calls for a in records if a.path == p)
             for p in ("/etc/hostname", "/etc/cgotrace-no-such-file", "/etc/passwd",
                       "/etc/hosts")}
    assert calls == {"/etc/hostname": 3060, "/etc/cgotrace-no-such-file": 3000,
                     "/etc/passwd": 3000, "/etc/hosts": 3000}
    assert len(records) < 40  # what is distinct, not 12,000 calls
    # the core answered the repeats; the pure-Python path answered them all itself
    assert with_core.stats["native_repeats"] >= 11_000
    assert without.stats["native_repeats"] == 0
    # the fstat(fd) calls make no record either way; the core answered them itself
    assert with_core.stats["native_dropped"] >= 3000 and without.stats["native_dropped"] == 0
    assert with_core.stats["repeats"] == without.stats["repeats"]
    assert with_core.stats["unobserved"] == without.stats["unobserved"]
    # and what strace sees of the opens is what both record
    expected = strace_set([str(exe), str(tmp_path / "log2")], "/", tmp_path)
    got = {(c, p.replace("log2", "log"), r) for c, p, r in expected}
    assert traced_set(records) == got


def _summary(accesses: list[Access]) -> dict[tuple[object, ...], list[object]]:
    """(syscall, path, flags, result) -> [calls, any observed, the code that made them]."""
    out: dict[tuple[object, ...], list[object]] = {}
    for a in accesses:
        if a.path.startswith("/proc/") and "/task/" in a.path:
            continue  # names a thread id
        entry = out.setdefault((a.syscall, a.path, a.flags, a.result), [0, False, set()])
        entry[0] += a.calls  # type: ignore[operator]
        entry[1] = bool(entry[1]) or a.observed or a.repeats > a.repeats_unobserved
        entry[2].add(_attribution(a))  # type: ignore[attr-defined]
    return out


@pytest.mark.go
@pytest.mark.parametrize("app,args", [("benchopen", ["2000"]), ("benchuser", ["500"]),
                                      ("userlookup", [])])
def test_go_samples_give_the_same_accesses_with_and_without_the_core(
        sample: Sample, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, app: str,
        args: list[str]) -> None:
    exe = str(sample(app, "cgo"))
    runs = _run_both(monkeypatch, [exe, *args], tmp_path)
    (with_core, records), (_, reference) = runs["1"], runs["0"]
    assert _summary(records) == _summary(reference)
    if app != "userlookup":  # the bench loops: thousands of repeats, answered in C
        assert with_core.stats["native_repeats"] > 0.8 * with_core.stats["repeats"] > 0
    assert traced_set(records) == strace_set([exe, *args], os.getcwd(), tmp_path)


def test_without_the_extension_the_pure_python_path_runs_and_says_why(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tracer.engine._native", None)  # as if never built
    monkeypatch.delenv("CGOTRACE_NATIVE", raising=False)
    res, acc = trace(["/bin/cat", "/etc/hostname"], engine="notify")
    assert res.status.code == 0 and res.engine == "notify"
    assert "pure-Python per-call path (the native core did not load" in res.engine_reason
    assert any(a.path == "/etc/hostname" and a.result == "ok" and a.observed for a in acc)


@pytest.mark.parametrize("flag,said", [("0", "pure-Python per-call path (CGOTRACE_NATIVE=0)"),
                                       ("1", "native per-call core")])
def test_verbose_says_which_per_call_path_ran(flag: str, said: str) -> None:
    _available()
    env = {**os.environ, "CGOTRACE_NATIVE": flag}
    env.pop("CGOTRACE_NO_NOTIFY", None)
    proc = subprocess.run(cgotrace_cmd("run", "-q", "-v", "--engine", "notify", "--",
                                       "/bin/true"),
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("cgotrace: engine")]
    assert line.startswith("cgotrace: engine notify (") and line.endswith(f", {said})")


@pytest.mark.go
def test_the_one_stop_upgrade_gives_the_records_of_the_two_notification_one(
        sample: Sample, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """WAIT_KILLABLE_RECV (the default here) reads a first sighting's result at the stop
    after the call; CGOTRACE_WAIT_KILLABLE=0 upgrades the old way. benchwalk, every path
    new: the same records (path, flags, result, observed, attribution) either way, with
    fewer stops, and strace's set."""
    _available()
    exe = str(sample("benchwalk", "cgo"))
    tree = tmp_path / "tree"
    subprocess.run([exe, "200", str(tree)], check=True, capture_output=True, timeout=60)
    runs: dict[str, tuple[RunResult, list[Access]]] = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("CGOTRACE_WAIT_KILLABLE", flag)
        res, _ = trace([exe, "200", str(tree)], engine="notify", attributor=Attributor(),
                       output=str(tmp_path / f"k{flag}.jsonl"))
        assert res.status.code == 0, res.status
        assert ("WAIT_KILLABLE_RECV on" in res.engine_reason) is (flag == "1")
        runs[flag] = res, read_trace(tmp_path / f"k{flag}.jsonl").accesses
    (one, records), (two, reference) = runs["1"], runs["0"]
    assert _summary(records) == _summary(reference)
    assert sum(a.path.startswith(str(tree)) for a in records) >= 400  # stat + open each
    assert one.stats["upgrades"] == two.stats["upgrades"] >= 400
    assert one.stats["native_upgrades"] >= 0.95 * one.stats["upgrades"]
    # one notification and one stop per upgrade, against two and three
    assert one.stats["stops"] < 0.6 * two.stats["stops"]
    assert one.stats["lost_upgrades"] == 0
    assert traced_set(records) == strace_set([exe, "200", str(tree)], os.getcwd(), tmp_path)
