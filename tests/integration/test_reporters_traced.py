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


def cgotrace(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cgotrace_cmd(*args), capture_output=True, text=True, timeout=300,
                          check=False, cwd=cwd)


def sarif_validator() -> jsonschema.protocols.Validator:
    """The official schema, with format checks (uri, uri-reference, date-time) active."""
    checker = jsonschema.FormatChecker()
    assert {"uri", "uri-reference", "date-time"} <= set(checker.checkers), \
        "install jsonschema[format] (the test extras)"
    return jsonschema.Draft4Validator(json.loads(SCHEMA.read_text()), format_checker=checker)


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
    validator = sarif_validator()
    assert [e.message for e in validator.iter_errors(log)] == []
    for mode in ("cgo", "netgo"):
        written = json.loads(traces[mode].with_suffix(".sarif").read_text())
        assert [e.message for e in validator.iter_errors(written)] == []
    assert {r["ruleId"] for r in written["runs"][0]["results"]}.isdisjoint(
        {"user-lookup-cgo", "nss-module"})  # the netgo,osusergo build's
    results = log["runs"][0]["results"]
    assert results
    located = [r["locations"][0]["physicalLocation"]["artifactLocation"] for r in results
               if r.get("locations")]
    assert {"uri": "main.go", "uriBaseId": "SRCROOT"} in located  # the module's go.mod
    assert log["runs"][0]["originalUriBaseIds"]["SRCROOT"]["uri"].endswith(
        "/sample_apps/userlookup/")
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


@pytest.mark.netns
def test_sarif_names_repository_files_under_rootfs_and_trimpath(
        sample: Callable[..., Path], tmp_path: Path) -> None:
    """Under --rootfs (the run's cwd is /) and for a -trimpath build (files are named
    `cgotrace.test/userlookup/main.go`), the user frame is main.go under the module root
    (sample_apps/userlookup/go.mod), found from the checkout; with --source-root the
    checkout, sample_apps/userlookup/main.go. Earlier: file:///... and a relative URI
    without a base."""
    from sample_apps import build as sample_build

    sample("userlookup", "cgo")  # the toolchain is there (skips with the reason if not)
    trimmed = tmp_path / "userlookup-trimpath"
    env = sample_build.go_env() | {"CGO_ENABLED": "1"}
    built = subprocess.run([str(sample_build.go_tool()), "build", "-trimpath", "-o",
                            str(trimmed), "."], cwd=sample_build.APPS_DIR / "userlookup",
                           env=env, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    checkout = Path(__file__).parents[2]
    validator = sarif_validator()
    for binary in (trimmed, sample("userlookup", "cgo")):
        sarif, trace = tmp_path / f"{binary.name}.sarif", tmp_path / f"{binary.name}.jsonl"
        proc = cgotrace("run", "-q", "--rootfs", "glibc", "-o", str(trace),
                        "--report", f"sarif={sarif}", "--", str(binary), cwd=checkout)
        assert proc.returncode == 0, proc.stderr
        log = json.loads(sarif.read_text())
        assert [e.message for e in validator.iter_errors(log)] == []
        run = log["runs"][0]
        users = [r["locations"][0]["physicalLocation"]["artifactLocation"]
                 for r in run["results"] if r["ruleId"] == "user-lookup-cgo"]
        assert users and all(u == {"uri": "main.go", "uriBaseId": "SRCROOT"} for u in users)
        assert run["originalUriBaseIds"]["SRCROOT"]["uri"].endswith("/sample_apps/userlookup/")
        if binary == trimmed:  # the standard library's names have no place on disk
            frames = [f["location"] for r in run["results"] for st in r.get("stacks", [])
                      for f in st["frames"]]
            assert any(loc["message"]["text"].startswith("os/user.") for loc in frames)
            assert all(loc["physicalLocation"]["artifactLocation"].get("uriBaseId")
                       or loc["physicalLocation"]["artifactLocation"]["uri"].startswith("file:")
                       for loc in frames if "physicalLocation" in loc)
        # from a subdirectory, and with the checkout named as the source root
        proc = cgotrace("report", "--format", "sarif", "--source-root", str(checkout),
                        str(trace), cwd=checkout / "docs")
        assert proc.returncode == 0, proc.stderr
        log = json.loads(proc.stdout)
        assert [e.message for e in validator.iter_errors(log)] == []
        users = [r["locations"][0]["physicalLocation"]["artifactLocation"]
                 for r in log["runs"][0]["results"] if r["ruleId"] == "user-lookup-cgo"]
        if binary == trimmed:
            assert users and all(u == {"uri": "sample_apps/userlookup/main.go",
                                       "uriBaseId": "SRCROOT"} for u in users)
