"""Reporters and `diff` on real traces: userlookup built with cgo and with
-tags netgo,osusergo, traced by `cgotrace run --output` (two traced runs for the module)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.integration.chromium import dump_dom, parse
from tests.integration.tracing_helpers import cgotrace_cmd

pytestmark = [pytest.mark.ptrace, pytest.mark.go]
SCHEMA = Path(__file__).parents[1] / "data" / "sarif-schema-2.1.0.json"


def cgotrace(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cgotrace_cmd(*args), capture_output=True, text=True, timeout=300,
                          check=False)


@pytest.fixture(scope="module")
def traces(sample: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
           ) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("traces")
    paths = {}
    for mode in ("cgo", "netgo"):
        trace = out / f"userlookup-{mode}.jsonl"
        proc = cgotrace("run", "-q", "--output", str(trace),
                        "--report", f"sarif={out / f'userlookup-{mode}.sarif'}", "--",
                        str(sample("userlookup", mode)))
        assert proc.returncode == 0, proc.stderr
        paths[mode] = trace
    return paths


def _diff_json(a: Path, b: Path) -> dict[str, Any]:
    proc = cgotrace("diff", "--format", "json", str(a), str(b))
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def test_diff_cgo_vs_osusergo_removes_nss(traces: dict[str, Path]) -> None:
    data = _diff_json(traces["cgo"], traces["netgo"])
    removed = {d["path"]: d for d in data["dependencies"]["removed"]}
    assert "/etc/nsswitch.conf" in removed
    assert removed["/etc/nsswitch.conf"]["class"] == "hidden"
    nss = [p for p in removed if "/libnss_" in p]
    assert nss, sorted(removed)  # Debian's "passwd: files systemd" -> libnss_systemd
    assert all(removed[p]["kind"] == "dlopen-library" for p in nss)
    # nothing the netgo build needs is new, and the NSS files are gone from it entirely
    added = [d["path"] for d in data["dependencies"]["added"]]
    assert not [p for p in added if "nss" in p]
    changed = {c["key"]: c["changes"] for c in data["dependencies"]["changed"]}
    assert changed["/etc/passwd"]["class"] == {"a": "hidden", "b": "runtime-file"}
    assert data["static"]["cgo"] == {"a": True, "b": False}
    # text: the same, one "-" line per removed path
    text = cgotrace("diff", str(traces["cgo"]), str(traces["netgo"])).stdout
    minus = [line.split()[3] for line in text.splitlines() if line.startswith("  - hidden")]
    assert "/etc/nsswitch.conf" in minus and set(nss) <= set(minus)


def test_diff_reads_a_json_report_too(traces: dict[str, Path], tmp_path: Path) -> None:
    report = tmp_path / "cgo.json"
    proc = cgotrace("report", "--format", "json", "-o", str(report), str(traces["cgo"]))
    assert proc.returncode == 0, proc.stderr
    from_trace = _diff_json(traces["cgo"], traces["netgo"])
    from_report = _diff_json(report, traces["netgo"])
    assert from_report["dependencies"] == from_trace["dependencies"]
    assert from_report["findings"] == from_trace["findings"]
    same = cgotrace("diff", "--exit-code", str(report), str(traces["cgo"]))
    assert same.returncode == 0, same.stdout
    assert "no differences" in same.stdout


def test_sarif_of_a_real_trace_validates(traces: dict[str, Path]) -> None:
    """`report --format sarif` of the saved trace, and `run --report sarif=FILE` written
    while it ran, both validate against the official schema."""
    proc = cgotrace("report", "--format", "sarif", str(traces["cgo"]))
    assert proc.returncode == 0, proc.stderr
    log = json.loads(proc.stdout)
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft4Validator(
        schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
    assert [e.message for e in validator.iter_errors(log)] == []
    for mode in ("cgo", "netgo"):
        written = json.loads(traces[mode].with_suffix(".sarif").read_text())
        assert [e.message for e in validator.iter_errors(written)] == []
    assert {r["ruleId"] for r in written["runs"][0]["results"]}.isdisjoint(
        {"user-lookup-cgo", "nss-module"})  # the netgo,osusergo build's
    results = log["runs"][0]["results"]
    assert results
    located = [r for r in results if r.get("locations")]
    assert any(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
               .endswith("/userlookup/main.go") for r in located)
    frames = [f["location"]["message"]["text"] for r in results for s in r.get("stacks", [])
              for f in s["frames"]]
    assert any(f.startswith("main.main main.go:") for f in frames)
    assert any(f.startswith("getpwuid_r") for f in frames)


def test_html_of_a_real_trace_in_chromium(traces: dict[str, Path], tmp_path: Path) -> None:
    page = tmp_path / "cgo.html"
    proc = cgotrace("report", "--format", "html", "-o", str(page), str(traces["cgo"]))
    assert proc.returncode == 0, proc.stderr
    nodes = parse(dump_dom(page, tmp_path))
    for node in ("api:os/user.LookupId", "api:os/user.LookupGroup", "c:getpwuid_r",
                 "c:getgrnam_r", "dep:/etc/nsswitch.conf", "dep:/etc/passwd"):
        assert node in nodes, sorted(nodes)
    assert any(n.startswith("dep:") and "/libnss_" in n for n in nodes)
