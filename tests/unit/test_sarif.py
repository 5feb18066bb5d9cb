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

SCHEMA_PATH = Path(__file__).parents[1] / "data" / "sarif-schema-2.1.0.json"


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema["title"] == "Static Analysis Results Format (SARIF) Version 2.1.0 JSON Schema"
    cls = jsonschema.validators.validator_for(schema)
    assert cls is jsonschema.Draft4Validator  # the schema declares draft-04
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _errors(validator: jsonschema.protocols.Validator, log: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(log)]


def test_cgo_log_validates(validator: jsonschema.protocols.Validator) -> None:
    log = json.loads(render_sarif(cgo_analysis()))
    assert _errors(validator, log) == []


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
