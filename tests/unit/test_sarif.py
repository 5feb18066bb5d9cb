"""SARIF 2.1.0 output, validated against the official schema (OASIS SARIF 2.1.0 errata 01,
stored as published in tests/data/sarif-schema-2.1.0.json: the tests run offline)."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.reporting_data import MAIN, WEIRD, cgo_analysis, empty_analysis
from tracer.reporters.sarif import fingerprint, render_sarif
from tracer.trace.model import Frame

SCHEMA_PATH = Path(__file__).parents[1] / "data" / "sarif-schema-2.1.0.json"


# The SARIF schema's formats. jsonschema checks a format only when the library for it is
# installed (`jsonschema[format]`, the test extras); without it every URI "validates".
FORMATS = ("uri", "uri-reference", "date-time")


def format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker()
    missing = [f for f in FORMATS if f not in checker.checkers]
    assert not missing, f"format checks not active (install jsonschema[format]): {missing}"
    return checker


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema["title"] == "Static Analysis Results Format (SARIF) Version 2.1.0 JSON Schema"
    cls = jsonschema.validators.validator_for(schema)
    assert cls is jsonschema.Draft4Validator  # the schema declares draft-04
    cls.check_schema(schema)
    return cls(schema, format_checker=format_checker())


def test_format_checks_are_active(validator: jsonschema.protocols.Validator) -> None:
    """A malformed URI, URI reference and date-time are each refused: the checks run."""
    log = json.loads(render_sarif(cgo_analysis()))
    log["$schema"] = "not a uri"
    log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"][
        "uri"] = "has space%zz"
    log["runs"][0]["invocations"][0]["startTimeUtc"] = "yesterday"
    errors = _errors(validator, log)
    assert any("$schema" in e and "uri" in e for e in errors), errors
    assert any("artifactLocation/uri" in e for e in errors), errors
    assert any("startTimeUtc" in e for e in errors), errors


def _errors(validator: jsonschema.protocols.Validator, log: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(log)]


def test_cgo_log_validates(validator: jsonschema.protocols.Validator) -> None:
    log = json.loads(render_sarif(cgo_analysis()))
    assert _errors(validator, log) == []
    schema = json.loads(SCHEMA_PATH.read_text())
    assert log["$schema"] == schema["id"]  # the OASIS URI the stored schema names itself by


def test_empty_log_validates(validator: jsonschema.protocols.Validator) -> None:
    log = json.loads(render_sarif(empty_analysis()))
    assert _errors(validator, log) == []
    assert log["runs"][0]["results"] == []


def test_schema_rejects_what_sarif_forbids(validator: jsonschema.protocols.Validator) -> None:
    """The stored schema really constrains: a wrong level, a line 0 and an unknown
    top-level key are each reported."""
    log = json.loads(render_sarif(cgo_analysis()))
    bad = copy.deepcopy(log)
    bad["runs"][0]["results"][0]["level"] = "fatal"
    bad["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] = 0
    bad["extra"] = True
    errors = _errors(validator, bad)
    assert any("fatal" in e for e in errors)
    assert any("startLine" in e for e in errors)
    assert any("extra" in e for e in errors)


def test_rule_descriptions_are_generic_and_messages_say_the_site_once() -> None:
    """shortDescription was the first finding's title ("... at main.go:19"); the result
    message then said "at main.go:19" a second time."""
    from probes.analysis import analyze
    from tests.unit.test_findings_engine import cgo_user_trace, header

    analysis = analyze(header(), cgo_user_trace())
    run = json.loads(render_sarif(analysis))["runs"][0]
    rules = {r["id"]: r["shortDescription"]["text"] for r in run["tool"]["driver"]["rules"]}
    assert rules["user-lookup-cgo"] == ("os/user goes through glibc NSS (cgo): nsswitch.conf, "
                                        "passwd/group files, NSS modules")
    assert not [t for t in rules.values() if "main.go" in t or "{" in t]
    sites = [r for r in run["results"] if "main.go:" in r["message"]["text"]]
    assert len(sites) >= 3
    for r in sites:
        text = r["message"]["text"]
        site = text[text.index("main.go:"):].split()[0].rstrip(".:,")
        assert text.count(site) == 1, text
        assert text.count("os/user.Lookup") == 1, text


def test_rules_and_results_carry_the_findings() -> None:
    run = json.loads(render_sarif(cgo_analysis()))["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == ["nss-modules", "nscd-socket", "weird-path"]
    assert rules[0]["name"] == "NssModules"
    assert rules[0]["help"]["text"] == "build with -tags osusergo (or CGO_ENABLED=0)"
    levels = {r["ruleId"]: r["level"] for r in run["results"]}
    assert levels == {"nss-modules": "warning", "nscd-socket": "note", "weird-path": "error"}
    nss = run["results"][0]
    assert nss["ruleIndex"] == 0
    loc = nss["locations"][0]
    assert loc["physicalLocation"]["artifactLocation"]["uri"] == "file://" + MAIN
    assert loc["physicalLocation"]["region"]["startLine"] == 22
    assert loc["logicalLocations"][0]["fullyQualifiedName"] == "os/user.LookupId"
    assert "Fix: build with -tags osusergo" in nss["message"]["text"]
    assert "libnss_systemd.so.2" in nss["message"]["text"]
    assert [r["physicalLocation"]["artifactLocation"]["uri"] for r in nss["relatedLocations"]
            ] == ["file:///lib/x86_64-linux-gnu/libnss_systemd.so.2",
                  "file:///etc/nsswitch.conf"]
    assert nss["properties"]["evidence"][0]["seq"] == 30
    assert nss["analysisTarget"]["uri"] == "file:///build/userlookup-cgo"


def test_stack_of_the_call_site() -> None:
    nss = json.loads(render_sarif(cgo_analysis()))["runs"][0]["results"][0]
    frames = nss["stacks"][0]["frames"]
    names = [f["location"]["logicalLocations"][0]["fullyQualifiedName"] for f in frames]
    assert names == ["__GI___open64_nocancel", "getpwuid_r", "runtime.asmcgocall",
                     "os/user.LookupId", "main.main"]
    assert frames[-1]["location"]["physicalLocation"]["region"]["startLine"] == 22
    assert frames[0]["module"] == "libc.so.6"


def test_allowed_finding_is_suppressed_not_dropped() -> None:
    results = json.loads(render_sarif(cgo_analysis()))["runs"][0]["results"]
    nscd = next(r for r in results if r["ruleId"] == "nscd-socket")
    assert nscd["suppressions"] == [{"kind": "external", "status": "accepted",
                                     "justification": "no nscd in our images"}]
    assert all("suppressions" not in r for r in results if r["ruleId"] != "nscd-socket")


def test_odd_paths_are_escaped_uris() -> None:
    results = json.loads(render_sarif(cgo_analysis()))["runs"][0]["results"]
    weird = next(r for r in results if r["ruleId"] == "weird-path")
    uri = weird["relatedLocations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == "file:///etc/we%22ird%3C/script%3E%3Cb%3E%C3%A9.conf"
    assert WEIRD in weird["properties"]["paths"]


def test_fingerprint_ignores_line_moves() -> None:
    a = cgo_analysis().findings[0]
    moved = a.__class__(**{**a.__dict__, "user_frame": a.user_frame.__class__(
        "main.main", MAIN, 99)})
    other = a.__class__(**{**a.__dict__, "paths": ("/etc/other",)})
    assert fingerprint(a) == fingerprint(moved)
    assert fingerprint(a) != fingerprint(other)


def test_diagnoses_become_notifications() -> None:
    run = json.loads(render_sarif(cgo_analysis()))["runs"][0]
    notes = run["invocations"][0]["toolExecutionNotifications"]
    assert notes == [{"level": "error", "message": {"text": "a loader diagnosis"}}]
    assert run["properties"]["programExit"] == {"exit_code": 0, "code": 0}


def test_sources_under_the_working_directory_are_relative(
        validator: jsonschema.protocols.Validator) -> None:
    """Run from the checkout (as CI does), the user frame becomes a repository path under
    SRCROOT; system paths stay absolute."""
    analysis = dataclasses.replace(cgo_analysis(), cwd="/src")
    log = json.loads(render_sarif(analysis))
    assert _errors(validator, log) == []
    run = log["runs"][0]
    assert run["originalUriBaseIds"]["SRCROOT"]["uri"] == "file:///src/"
    nss = run["results"][0]
    assert nss["locations"][0]["physicalLocation"]["artifactLocation"] == {
        "uri": "userlookup/main.go", "uriBaseId": "SRCROOT"}
    assert nss["relatedLocations"][1]["physicalLocation"]["artifactLocation"] == {
        "uri": "file:///etc/nsswitch.conf"}
    weird = next(r for r in run["results"] if r["ruleId"] == "weird-path")  # no user frame
    assert weird["locations"][0]["physicalLocation"]["artifactLocation"] == {
        "uri": "file:///build/userlookup-cgo"}
    assert "originalUriBaseIds" not in json.loads(render_sarif(
        dataclasses.replace(cgo_analysis(), cwd="/")))["runs"][0]


def test_an_incomplete_trace_is_an_unsuccessful_execution(
        validator: jsonschema.protocols.Validator) -> None:
    log = json.loads(render_sarif(dataclasses.replace(cgo_analysis(), truncated=True)))
    assert _errors(validator, log) == []
    inv = log["runs"][0]["invocations"][0]
    assert inv["executionSuccessful"] is False
    assert inv["toolExecutionNotifications"][0]["message"]["text"].startswith(
        "the trace is incomplete")
    assert json.loads(render_sarif(cgo_analysis()))["runs"][0]["invocations"][0][
        "executionSuccessful"] is True


def _module_tree(tmp_path: Path) -> Path:
    """A repository with the Go module one level down: repo/app/go.mod, cmd/tool/main.go."""
    mod = tmp_path / "repo" / "app"
    (mod / "cmd" / "tool").mkdir(parents=True)
    (mod / "go.mod").write_text("module corp.test/app // the main module\n\ngo 1.21\n")
    (mod / "cmd" / "tool" / "main.go").write_text("package main\n")
    return mod


def _with_frame(file: str, cwd: str, module: str | None = "corp.test/app") -> Any:
    """cgo_analysis() with its user frames in `file` and stack frames of the standard
    library, as a -trimpath build (relative names) or not would record them."""
    base = cgo_analysis()
    std = "os/user/cgo_lookup_unix.go" if not file.startswith("/") else \
        "/usr/lib/go/src/os/user/cgo_lookup_unix.go"

    def frame(f: Frame | None) -> Frame | None:
        if f is None or f.file is None:
            return f
        return dataclasses.replace(f, file=file if f.file == MAIN else std)

    deps = tuple(dataclasses.replace(d, callers=tuple(
        dataclasses.replace(c, user_frame=frame(c.user_frame),
                            stack=tuple(frame(x) for x in c.stack))  # type: ignore[misc]
        for c in d.callers)) for d in base.dependencies)
    findings = tuple(dataclasses.replace(f, user_frame=frame(f.user_frame))
                     for f in base.findings)
    return dataclasses.replace(base, findings=findings, dependencies=deps, cwd=cwd,
                               static={**base.static, "main_module": module})


def _user_location(log: dict[str, Any]) -> Any:
    return log["runs"][0]["results"][0]["locations"][0]["physicalLocation"][
        "artifactLocation"]


@pytest.mark.parametrize("where", ["rootfs", "subdirectory", "module root", "elsewhere"])
def test_sources_are_relative_to_the_go_module_root(
        tmp_path: Path, validator: jsonschema.protocols.Validator,
        monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """Under --rootfs the recorded cwd is / (the URIs were absolute); from a subdirectory
    they were relative to it. Now: the go.mod of the main module, whatever the cwd."""
    mod = _module_tree(tmp_path)
    main = str(mod / "cmd" / "tool" / "main.go")
    cwd = {"rootfs": "/", "subdirectory": str(mod / "cmd"), "module root": str(mod),
           "elsewhere": str(tmp_path)}[where]
    monkeypatch.chdir(tmp_path)
    log = json.loads(render_sarif(_with_frame(main, cwd)))
    assert _errors(validator, log) == []
    assert _user_location(log) == {"uri": "cmd/tool/main.go", "uriBaseId": "SRCROOT"}
    base = log["runs"][0]["originalUriBaseIds"]["SRCROOT"]
    assert base["uri"] == f"file://{mod}/"
    assert base["description"]["text"] == "the Go module root (go.mod of corp.test/app)"
    frames = log["runs"][0]["results"][0]["stacks"][0]["frames"]
    std = [f for f in frames if "os/user" in f["location"]["message"]["text"]]
    assert std[0]["location"]["physicalLocation"]["artifactLocation"] == {
        "uri": "file:///usr/lib/go/src/os/user/cgo_lookup_unix.go"}  # outside: absolute


def test_trimpath_names_map_through_the_module_path(
        tmp_path: Path, validator: jsonschema.protocols.Validator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A -trimpath build records `corp.test/app/cmd/tool/main.go` (module path + path in
    the module), and `os/user/...` for the standard library: the first maps under the
    module's go.mod (found from the working directory, or --source-root), the second has no
    place on disk (a logical location only, never a relative URI without a base)."""
    mod = _module_tree(tmp_path)
    analysis = _with_frame("corp.test/app/cmd/tool/main.go", "/")
    monkeypatch.chdir(tmp_path / "repo")  # the checkout: the module is one level down
    log = json.loads(render_sarif(analysis))
    assert _errors(validator, log) == []
    assert _user_location(log) == {"uri": "cmd/tool/main.go", "uriBaseId": "SRCROOT"}
    assert log["runs"][0]["originalUriBaseIds"]["SRCROOT"]["uri"] == f"file://{mod}/"
    frames = log["runs"][0]["results"][0]["stacks"][0]["frames"]
    std = [f for f in frames if "os/user" in f["location"]["message"]["text"]]
    assert std and all("physicalLocation" not in f["location"] for f in std)
    # --source-root names the repository: the module's directory is part of the path
    log = json.loads(render_sarif(analysis, str(tmp_path / "repo")))
    assert _errors(validator, log) == []
    assert _user_location(log) == {"uri": "app/cmd/tool/main.go", "uriBaseId": "SRCROOT"}
    assert log["runs"][0]["originalUriBaseIds"]["SRCROOT"] == {
        "uri": f"file://{tmp_path}/repo/", "description": {"text": "--source-root"}}
    # without a go.mod anywhere near, the name is not passed off as a relative URI without
    # a base: the result points at the binary, as for a finding without a user frame
    monkeypatch.chdir("/")
    log = json.loads(render_sarif(analysis))
    assert _errors(validator, log) == []
    assert _user_location(log) == {"uri": "file:///build/userlookup-cgo"}
    assert "originalUriBaseIds" not in log["runs"][0]
