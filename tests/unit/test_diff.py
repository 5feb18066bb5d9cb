"""`cgotrace diff` on JSON reports of hand-built analyses (tests/reporting_data.py): a cgo
user lookup against its -tags netgo,osusergo build. The traced version of this comparison
is tests/integration/test_diff_userlookup.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.reporting_data import cgo_analysis, pure_analysis
from tracer.cli import main
from tracer.commands.diff import diff_sides, render_json, render_text, side_from_report
from tracer.reporters import render


def report(analysis: Any) -> dict[str, Any]:
    """The JSON report, as `cgotrace report --format json` writes it."""
    data: dict[str, Any] = json.loads(render(analysis, "json"))
    return data


def _diff(a: Any, b: Any) -> Any:
    return diff_sides(side_from_report(report(a), "a.json"),
                      side_from_report(report(b), "b.json"))


def test_cgo_to_osusergo_removes_nss() -> None:
    d = _diff(cgo_analysis(), pure_analysis())
    removed = {x.path for x in d.dependencies.removed}
    assert {"/etc/nsswitch.conf", "/lib/x86_64-linux-gnu/libnss_systemd.so.2",
            "/var/run/nscd/socket", "/lib64/ld-linux-x86-64.so.2",
            "/lib/x86_64-linux-gnu/libc.so.6"} <= removed
    assert d.dependencies.added == []
    changed = {c.key: c.changes for c in d.dependencies.changed}
    assert set(changed) == {"/etc/passwd", "/etc/group"}
    passwd = changed["/etc/passwd"]
    assert passwd["class"] == {"a": "hidden", "b": "runtime-file"}
    assert passwd["callers"] == {
        "a": ["os/user.LookupId via cgo getpwuid_r at main.go:19"],
        "b": ["os/user.LookupId via go at main.go:19"]}
    assert {f.id for f in d.findings.removed} == {"nss-modules", "nscd-socket", "weird-path"}
    assert d.static["cgo"] == {"a": True, "b": False}
    assert d.program_files == {"./content/": {"a": 10, "b": 12}, "/tmp/": {"a": 2, "b": 0}}
    assert not d.identical


def test_reverse_direction_adds() -> None:
    d = _diff(pure_analysis(), cgo_analysis())
    assert "/etc/nsswitch.conf" in {x.path for x in d.dependencies.added}
    assert d.dependencies.removed == []


def test_same_input_is_identical() -> None:
    d = _diff(cgo_analysis(), cgo_analysis())
    assert d.identical
    assert "no differences" in render_text(d)


def test_text_names_removed_and_changed() -> None:
    text = render_text(_diff(cgo_analysis(), pure_analysis()))
    lines = text.splitlines()
    assert any(line.startswith("  - hidden") and "/etc/nsswitch.conf" in line
               and "<- os/user.LookupId via cgo getpwuid_r at main.go:19" in line
               for line in lines)
    assert "  ~ /etc/passwd" in lines
    assert "      class: hidden -> runtime-file" in lines
    assert "      callers + os/user.LookupId via go at main.go:19" in lines
    assert "  ~ cgo: True -> False" in lines
    assert any(line.startswith("  - warning nss-modules") for line in lines)


def test_json_is_versioned() -> None:
    data = json.loads(render_json(_diff(cgo_analysis(), pure_analysis())))
    assert data["format"] == "cgotrace-diff" and data["version"] == 1
    assert data["identical"] is False
    assert "/etc/nsswitch.conf" in [d["path"] for d in data["dependencies"]["removed"]]
    assert set(data) >= {"a", "b", "static", "findings", "dependencies", "program_files"}


def test_call_sites_fold_per_path_not_counts() -> None:
    """Counts alone do not make a change; a new call site does."""
    a = report(cgo_analysis())
    b = json.loads(json.dumps(a))
    for d in b["dependencies"]:
        if d["path"] == "/etc/passwd":
            d["count"] *= 10
            d["callers"][0]["count"] *= 10
    assert diff_sides(side_from_report(a, "a"), side_from_report(b, "b")).identical
    for d in b["dependencies"]:
        if d["path"] == "/etc/passwd":
            d["callers"].append({**d["callers"][0], "user_frame": "main.go:40"})
    changed = diff_sides(side_from_report(a, "a"), side_from_report(b, "b")).dependencies
    assert [c.key for c in changed.changed] == ["/etc/passwd"]


def test_changed_finding() -> None:
    a = report(cgo_analysis())
    b = json.loads(json.dumps(a))
    b["findings"][0]["allowed"] = "accepted risk"
    b["findings"][0]["severity"] = "error"
    d = diff_sides(side_from_report(a, "a"), side_from_report(b, "b"))
    assert [c.key for c in d.findings.changed] == ["nss-modules (os/user.LookupId)"]
    assert d.findings.changed[0].changes == {"severity": {"a": "warning", "b": "error"},
                                             "allowed": {"a": None, "b": "accepted risk"}}
    text = render_text(d)
    assert "  ~ nss-modules (os/user.LookupId)" in text
    assert "      allowed: none -> accepted risk" in text


def _write(path: Path, data: Any) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write(tmp_path / "a.json", report(cgo_analysis()))
    b = _write(tmp_path / "b.json", report(pure_analysis()))
    cases = [
        ([a, b], 0), ([a, b, "--exit-code"], 1), ([a, a, "--exit-code"], 0),
        ([a, str(tmp_path / "missing.json")], 4),
        ([a, _write(tmp_path / "x.json", {"not": "a report"})], 3),
        ([a, str(tmp_path)], 2),  # click: "is a directory"
        ([a, b, "--format", "yaml"], 2),
        ([a, _write(tmp_path / "new.json", {**report(pure_analysis()), "version": 99})], 3),
    ]
    for args, code in cases:
        with pytest.raises(SystemExit) as e:
            main(["diff", *args])
        assert e.value.code == code, args
    err = capsys.readouterr().err
    assert "missing.json: no such file" in err
    assert "not a cgotrace JSON report" in err
    assert "JSON report version 99 is newer than this cgotrace reads (1)" in err
    assert "Traceback" not in err


def test_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write(tmp_path / "a.json", report(cgo_analysis()))
    b = _write(tmp_path / "b.json", report(pure_analysis()))
    with pytest.raises(SystemExit) as e:
        main(["diff", "--format", "json", a, b])
    assert e.value.code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["a"] == {"source": a, "label": "userlookup-cgo"}


def test_a_file_read_by_go_and_by_cgo_keeps_each_callers_class() -> None:
    """Go's resolver and a cgo user lookup both read /etc/nsswitch.conf: the whole path was
    labelled hidden (the cgo caller won), resolver-go lost it, and `diff` against a run
    without the user lookup reported "resolver-go paths changed". The class and the
    finding follow the caller of each access."""
    from probes.analysis import analyze
    from tests.unit.test_findings_engine import acc, header
    from tracer.gate import apply_gate, parse_fail_on
    from tracer.trace.model import AccessKind, Via

    def go_dns() -> list[Any]:
        return [acc("/etc/nsswitch.conf", AccessKind.CONFIG, hidden=True, via=Via.GO,
                    api="net.LookupHost", line=5),
                acc("/etc/resolv.conf", AccessKind.CONFIG, hidden=True, via=Via.GO,
                    api="net.LookupHost", line=5)]

    cgo_user = [acc("/etc/nsswitch.conf", AccessKind.CONFIG, hidden=True, via=Via.CGO,
                    api="os/user.LookupId", cfn="getpwuid_r", line=9),
                acc("/etc/passwd", AccessKind.CONFIG, hidden=True, via=Via.CGO,
                    api="os/user.LookupId", cfn="getpwuid_r", line=9)]
    both, alone = analyze(header(), go_dns() + cgo_user), analyze(header(), go_dns())
    nss = sorted((d.cls.value, [c.via for c in d.callers], d.count, len(d.seqs))
                 for d in both.dependencies if d.path == "/etc/nsswitch.conf")
    assert nss == [("hidden", ["cgo"], 1, 1), ("runtime-file", ["go"], 1, 1)]
    paths = {f.id: f.paths for f in both.findings}
    assert "/etc/nsswitch.conf" in paths["resolver-go"]
    assert "/etc/nsswitch.conf" in paths["user-lookup-cgo"]
    d = _diff(alone, both)
    assert [c.key for c in d.findings.changed] == []
    assert {f.id for f in d.findings.added} == {"user-lookup-cgo"}
    # the gate's `hidden` counts the cgo caller's access only
    gate = apply_gate(both, parse_fail_on("hidden"))
    assert sorted(f.what for f in gate.failing) == ["/etc/nsswitch.conf", "/etc/passwd"]
    assert not apply_gate(alone, parse_fail_on("hidden")).failed
