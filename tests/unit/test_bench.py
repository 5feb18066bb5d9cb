"""The bench harness's own measuring and reporting (timings are never asserted)."""

from __future__ import annotations

import sys

import pytest

import bench.__main__ as bench


def test_measure_reports_exit_status_and_the_child_peak_rss() -> None:
    # The child touches 64 MiB and then lingers, so the poller sees its high-water mark.
    code = "import time; b = bytearray(64 << 20); time.sleep(0.3); raise SystemExit(3)"
    s = bench.measure([sys.executable, "-c", code])
    assert s.rc == 3
    assert s.rss >= 64 * bench.MB
    assert s.wall >= 0.3


def test_median_takes_middle_time_and_worst_rss() -> None:
    samples = [bench.Sample(3.0, 10, 0), bench.Sample(1.0, 30, 0), bench.Sample(2.0, 20, 0)]
    assert bench.median_of(samples) == (2.0, 30)


def test_table_aligns_columns() -> None:
    text = bench.table([["a", "bb"], ["ccc", "d"]])
    assert text.splitlines() == ["a    bb", "---  --", "ccc  d"]


def test_part_b_says_not_available_when_run_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "engine_reason", lambda: "`cgotrace run` exited 2: no such command")

    def no_build(app: str) -> None:
        raise AssertionError("must not build when the engine is missing")

    out = bench.part_b(1, 1.0, no_build)  # type: ignore[arg-type]
    assert "not available: `cgotrace run` exited 2" in out


def test_strace_variants_use_the_watched_syscall_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from tracer.syscalls.table import WATCHED_NAMES

    # the command lines are built whether or not this machine has strace
    monkeypatch.setattr(bench.shutil, "which",
                        lambda cmd: "/usr/bin/strace" if cmd == "strace" else None)
    v = bench.variants(bench.ROOT / "x", ["5"])
    assert v["untraced"] == [str(bench.ROOT / "x"), "5"]
    for engine in ("notify", "ptrace"):
        argv = v[f"cgotrace {engine}"]
        assert argv[-3:] == ["--", str(bench.ROOT / "x"), "5"]
        assert argv[argv.index("--engine") + 1] == engine
    assert v["strace -f"][:2] == ["/usr/bin/strace", "-f"]
    assert f"trace={bench.WATCHED}" in v["strace -f"]
    assert v["strace -f"][-2:] == [str(bench.ROOT / "x"), "5"]
    assert "--seccomp-bpf" in v["strace -f --seccomp-bpf"]
    assert f"trace={bench.WATCHED}" in v["strace -f --seccomp-bpf"]
    # strace watches exactly what cgotrace watches: the comparison is like for like
    assert set(bench.WATCHED.split(",")) == WATCHED_NAMES
