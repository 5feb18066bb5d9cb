"""Every row `make bench` prints, run in its quickest mode (one run, tiny N): each row is
there with a number in every measured column, so a row that breaks (a variant that exits
non-zero, a tracer that never attaches, a table that loses a column) fails here. Times
are never asserted: the machine's load moves them.

GIVEN the bench's parts at --runs 1 and a small --scale, WHEN they run, THEN each table has
its rows (issue 18's table: the static-site rows, open, cgo, HTTP, walk, attach to the HTTP
server, attach to caddy under load; bench.percall's native and pure rows), each measured
cell a number with its unit, each verdict PASS or MISS.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

import bench.__main__ as bench
from bench import percall
from tests import preflight

pytestmark = pytest.mark.ptrace

NUMBER = re.compile(r"^[0-9]+(\.[0-9]+)?( ms| s|x| MiB| req/s)$")


def parse_table(text: str, first: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the table whose header starts with `first` (columns are two
    or more spaces apart; the table ends at the first line of another shape)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first + "  "))
    header = re.split(r" {2,}", lines[start].strip())
    rows = []
    for line in lines[start + 2:]:
        cells = re.split(r" {2,}", line.strip())
        if len(cells) != len(header):
            break
        rows.append(cells)
    return header, rows


def assert_measured(header: list[str], row: list[str], words: tuple[str, ...]) -> None:
    """Every cell but the label and the `words` columns is a number with its unit."""
    for name, cell in zip(header[1:], row[1:], strict=True):
        if name in words:
            continue
        assert NUMBER.match(cell), f"{row[0]}: column {name!r} is {cell!r}"


@pytest.fixture
def build(sample: Callable[..., Path]) -> Callable[[str], Path]:
    return lambda app: sample(app)


def test_part_b_has_a_row_per_workload_with_every_column(build: Callable[[str], Path]) -> None:
    preflight.require("strace", "hugo")
    out = bench.part_b(1, 0.01, build, [w.key for w in bench.WORKLOADS])
    header, rows = parse_table(out, "workload")
    assert header[:6] == ["workload", "untraced", "notify", "x untraced", "goal", "result"]
    for column in ("notify (Python)", "ptrace", "strace -f", "strace seccomp",
                   "notify vs seccomp", "tracer RSS"):
        assert column in header
    assert [r[0].split(" (")[0] for r in rows] == [w.label for w in bench.WORKLOADS]
    for row in rows:
        assert_measured(header, row, ("goal", "result"))
        assert row[header.index("result")] in ("PASS", "MISS")
    # the static-site rows ran Debian's hugo (installed), at 1% of their pages
    assert rows[0][0].endswith("(hugo 20 pages)") and rows[1][0].endswith("(hugo 2 pages)")
    assert [r[header.index("goal")] for r in rows] == [
        "<= seccomp", "<= 1.5x seccomp", "<= 5x", "<= 5x", "<= 1.10x", "<= seccomp"]


def test_site_rows_fall_back_to_sitegen_without_hugo(build: Callable[[str], Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    preflight.require("strace")
    which = bench.shutil.which
    monkeypatch.setattr(bench.shutil, "which", lambda cmd: None if cmd == "hugo" else which(cmd))
    out = bench.part_b(1, 0.05, build, ["hugo-200"])
    header, rows = parse_table(out, "workload")
    assert len(rows) == 1
    assert rows[0][0] == "small static site (sitegen 10 pages (hugo not installed))"
    assert_measured(header, rows[0], ("goal", "result"))


def test_attach_rows_http_and_caddy(build: Callable[[str], Path]) -> None:
    preflight.require("strace", "caddy")
    out = bench.part_attach(1, 0.04, build)  # 800 requests; caddy loaded for 0.2 s
    http_header, http = parse_table(out, "workload")
    assert len(http) == 1 and http[0][0].startswith("HTTP, 800 keep-alive requests")
    assert_measured(http_header, http[0], ("goal", "result"))
    caddy_part = out[out.index("Attach: Debian's caddy"):]
    header, rows = parse_table(caddy_part, "workload")
    assert header == ["workload", "untraced", "cgotrace attach", "x untraced",
                      "attach (Python)", "x untraced", "strace -f -p", "x untraced",
                      "attach vs strace", "goal", "result"]
    assert len(rows) == 1 and rows[0][0] == "caddy reverse proxy, throughput"
    assert_measured(header, rows[0], ("goal", "result"))
    assert rows[0][1].endswith(" req/s") and rows[0][-2:][0] == ">= 2x strace"
    assert rows[0][-1] in ("PASS", "MISS")


def test_percall_has_native_and_pure_rows(build: Callable[[str], Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    for app in ("benchopen", "benchwalk", "benchuser", "benchhttp"):
        build(app)  # built (or skipped) through the fixture, not inside percall
    assert percall.main(["--runs", "1", "-n", "200"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    figures = {}
    for line in lines:
        label, _, value = line.strip().rpartition(" ")
        figures[label.strip()] = float(value)
    for label in ("native floor (benchopen 200)",
                  "notify engine, native core (benchopen 200)",
                  "notify engine, pure Python (benchopen 200)",
                  "notify engine, native core (benchuser 50)",
                  "notify engine, pure Python (benchuser 50)",
                  "ptrace engine (benchuser 50)",
                  "attach, native core (benchhttp 200, per syscall stop)",
                  "attach, pure Python (benchhttp 200, per syscall stop)",
                  "notify engine, native core (benchwalk 30: every path new)",
                  "notify engine, pure Python (benchwalk 30)",
                  "ptrace engine (benchwalk 30: every path new)"):
        assert figures.get(label, 0) > 0, (label, lines)


def test_bench_cli_runs_one_row_only(build: Callable[[str], Path],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    build("benchload")
    preflight.require("caddy", "strace")
    assert bench.main(["--part", "attach", "--only", "caddy", "--runs", "1",
                       "--scale", "0.04"]) == 0
    out = capsys.readouterr().out
    assert "caddy reverse proxy, throughput" in out
    assert "benchhttp" not in out  # --only left the HTTP attach row out
