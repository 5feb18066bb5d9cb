"""The bench harness's own measuring and reporting (timings are never asserted)."""

from __future__ import annotations

import sys
from pathlib import Path

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


def test_every_variant_includes_the_pure_python_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench.shutil, "which", lambda cmd: None)  # no strace: no strace rows
    v = bench.variants("/bin/prog", ["7"])
    assert set(v) == {"untraced", "cgotrace notify", "cgotrace ptrace", bench.PURE_PYTHON}
    # the same command line as the notify row: only the environment (PURE_ENV) differs
    assert v[bench.PURE_PYTHON] == v["cgotrace notify"]
    assert bench.PURE_ENV == {"CGOTRACE_NATIVE": "0"}


def test_only_selects_a_row_by_key_or_its_first_part() -> None:
    assert bench.selected("hugo-200", [])
    assert bench.selected("hugo-200", ["hugo"]) and bench.selected("hugo-2000", ["hugo"])
    assert bench.selected("hugo-200", ["hugo-200"])
    assert not bench.selected("hugo-2000", ["hugo-200"])
    assert not bench.selected("caddy", ["benchopen"])
    assert bench.selected("attach-http", ["attach"])


def test_workloads_are_the_issue_rows_with_their_goals() -> None:
    goals = {w.key: (w.args[0], w.goal, w.against) for w in bench.WORKLOADS}
    assert goals == {"hugo-2000": ("2000", 1.0, bench.SECCOMP),
                     "hugo-200": ("200", 1.5, bench.SECCOMP),
                     "benchopen": ("20000", 5.0, "untraced"),
                     "benchuser": ("20000", 5.0, "untraced"),
                     "benchhttp": ("20000", 1.10, "untraced"),
                     "benchwalk": ("3000", 1.0, bench.SECCOMP)}
    assert bench.ATTACH_GOAL == 0.5 and bench.CADDY_GOAL == 2.0


def test_hugo_site_is_local_and_has_the_pages(tmp_path: Path) -> None:
    bench.write_hugo_site(str(tmp_path), 25)
    pages = sorted(p.relative_to(tmp_path / "content").as_posix()
                   for p in (tmp_path / "content").rglob("*.md"))
    assert len(pages) == 25
    assert pages[0] == "section-00/page-0000.md" and pages[-1] == "section-02/page-0024.md"
    config = (tmp_path / "config.toml").read_text()
    assert "theme" not in config  # no theme, no module: nothing hugo could fetch
    assert 'baseURL = "http://example.invalid/"' in config
    for layout in ("_default/single.html", "_default/list.html", "index.html"):
        assert (tmp_path / "layouts" / layout).read_text().startswith("<html>")


def test_caddy_config_stays_on_loopback_without_admin_or_tls() -> None:
    text = bench.CADDYFILE.format(data="/tmp/x/data", port=8123, backend="127.0.0.1:9000")
    lines = [line.strip() for line in text.splitlines()]
    assert {"admin off", "auto_https off", "storage file_system /tmp/x/data"} <= set(lines)
    assert "http://127.0.0.1:8123 {" in lines  # an http:// address: no ACME, no certificate
    assert "bind 127.0.0.1" in lines  # the listener too, not only the Host match
    assert "reverse_proxy 127.0.0.1:9000" in lines
