"""SARIF 2.1.0: one run, one rule per finding id, one result per finding.

What goes where (SARIF 2.1.0 OASIS Standard, errata 01; tests validate the output against
the schema stored in tests/data/sarif-schema-2.1.0.json):

- `$schema`: the OASIS URI of the schema (its `id`; tests validate against the copy in
  tests/data, offline).
- `tool.driver.rules[]`: `id` = finding id, `shortDescription` = the rule's generic
  `summary` (the site belongs to each result's message), `fullDescription` = explanation,
  `help` = the fix, `defaultConfiguration.level` from the severity.
- `results[]`: `level` error / warning / note (for info); `message` = title, the Go API
  (the site only when the title does not name it), dependencies and fix; `locations` =
  the user frame (file and line) with the Go API and the user function as logical
  locations; `relatedLocations` = the dependencies (absolute `file:` URIs of the paths as
  the program saw them); `stacks` = the recorded stack of the first matching call site;
  `partialFingerprints` = a hash of id, Go API, user function and paths (no line numbers,
  so an edit above the call keeps the fingerprint); allowed findings carry an external
  `suppressions` entry with the allow-list reason; `properties` keep the evidence (trace
  `seq` numbers), missing paths and Dockerfile lines.
- Source files are relative to `SRCROOT`, the Go module root (tracer/reporters/sources.py:
  `--source-root DIR`, else the go.mod of the main module), whatever the run's working
  directory or root; files outside it stay absolute `file:` URIs, and a `-trimpath` name of
  another module (the standard library) has a logical location only.
- `invocations[0]`: `executionSuccessful` is false when the trace is incomplete (the
  tracer stopped before the program's exit), with a notification saying so;
  `toolExecutionNotifications` also carry the trace's diagnoses (exec/loader failures).
  The traced program's exit status is in `run.properties.programExit`: it is not the
  tool's.

No `informationUri`: it would name a remote host.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tracer import __version__
from tracer.reporters.graph import caller_stack, frame_text, site_text
from tracer.reporters.sources import SourceRoot, find_source_root
from tracer.trace.model import Finding, Frame, Severity

if TYPE_CHECKING:
    from probes.records import Analysis, Caller

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = ("https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/"
                "sarif-schema-2.1.0.json")
_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
FINGERPRINT_KEY = "cgotraceFinding/v1"
SRCROOT = "SRCROOT"
_URI_SAFE = "/:@!$&'()*+,;=-._~"


def render_sarif(analysis: Analysis, source_root: str | None = None) -> str:
    """The SARIF log of `analysis` as indented JSON (ends with a newline); `source_root`
    is `--source-root DIR` (None: the Go module root, tracer/reporters/sources.py)."""
    return json.dumps(sarif_log(analysis, source_root), indent=2, sort_keys=False) + "\n"


def sarif_log(analysis: Analysis, source_root: str | None = None) -> dict[str, Any]:
    sources = find_source_root(analysis, source_root)
    rules, index = _rules(analysis)
    results = [_result(f, index[f.id], analysis, sources) for f in analysis.findings]
    run: dict[str, Any] = {
        "tool": {"driver": {"name": "cgotrace", "version": __version__,
                            "semanticVersion": __version__, "rules": rules}},
        "invocations": [_invocation(analysis)],
        "results": results,
        "columnKind": "unicodeCodePoints",
        **_base_ids(sources),
        "properties": {"source": analysis.source, "static": analysis.static,
                       "programExit": analysis.exit},
    }
    return {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}


def _base_ids(sources: SourceRoot | None) -> dict[str, Any]:
    if sources is None:
        return {}
    return {"originalUriBaseIds": {SRCROOT: {
        "uri": file_uri(sources.root.rstrip("/") + "/"),
        "description": {"text": sources.how}}}}


def _rules(analysis: Analysis) -> tuple[list[dict[str, Any]], dict[str, int]]:
    known = {r.id: r for r in analysis.rules}
    rules: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for f in analysis.findings:
        if f.id in index:
            continue
        index[f.id] = len(rules)
        rule = known.get(f.id)
        rules.append({
            "id": f.id,
            "name": _rule_name(f.id),
            "shortDescription": {"text": rule.summary if rule is not None
                                 else f"cgotrace finding {f.id}"},
            "fullDescription": {"text": f.explanation or f.title},
            "help": {"text": f.fix or "(no fix)"},
            "defaultConfiguration": {"level": _LEVEL[f.severity]},
            "properties": {"docs": f"docs/findings.md#{f.id}"},
        })
    return rules, index


def _rule_name(finding_id: str) -> str:
    """SARIF rule names are PascalCase identifiers: `nss-modules` -> `NssModules`."""
    return "".join(part.capitalize() for part in finding_id.replace(".", "-").split("-")
                   if part) or finding_id


def file_uri(path: str) -> str:
    """An absolute path as a `file:` URI; a relative one (a -trimpath file) as a
    relative URI reference."""
    quoted = quote(path, safe=_URI_SAFE)
    return "file://" + quoted if path.startswith("/") else quoted


def _result(f: Finding, rule_index: int, analysis: Analysis,
            sources: SourceRoot | None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ruleId": f.id,
        "ruleIndex": rule_index,
        "level": _LEVEL[f.severity],
        "kind": "fail",
        "message": {"text": _message(f)},
        "partialFingerprints": {FINGERPRINT_KEY: fingerprint(f)},
    }
    target = _target(analysis)
    if target:
        result["analysisTarget"] = target
    location = _location(f, sources, analysis.binary)
    if location:
        result["locations"] = [location]
    related = [{"id": i, "physicalLocation": {"artifactLocation": {"uri": file_uri(p)}},
                "message": {"text": _path_note(f, p)}}
               for i, p in enumerate(f.paths) if p.startswith("/")]
    if related:
        result["relatedLocations"] = related
    stack = _stack(f, analysis, sources)
    if stack:
        result["stacks"] = [stack]
    if f.allowed is not None:
        result["suppressions"] = [{"kind": "external", "status": "accepted",
                                   "justification": f.allowed}]
    result["properties"] = {
        "fix": f.fix, "goApi": f.go_api, "cFunction": f.c_function, "origin": f.origin,
        "paths": list(f.paths), "missing": list(f.missing),
        "evidence": [e.to_dict() for e in f.evidence],
        "dockerfile": list(f.dockerfile), "source": f.source,
    }
    return result


def _message(f: Finding) -> str:
    """Title, cause, dependencies, missing, fix; the site is said once (titles name it)."""
    parts = [f.title.rstrip(".") + "."]
    if f.go_api:
        where = site_text(f.user_frame)
        said = where is not None and where in f.title
        if not (said and f.go_api in f.title):
            parts.append(f"Caused by {f.go_api}"
                         + (f" at {where}" if where and not said else "") + ".")
    if f.paths:
        shown = ", ".join(f.paths[:6]) + (f" and {len(f.paths) - 6} more"
                                          if len(f.paths) > 6 else "")
        parts.append(f"Dependencies: {shown}.")
    if f.missing:
        parts.append(f"Missing: {', '.join(f.missing)}.")
    if f.fix:
        parts.append(f"Fix: {f.fix}")
    return " ".join(parts)


def _path_note(f: Finding, path: str) -> str:
    return "missing where the program ran" if path in f.missing else "used at run time"


def fingerprint(f: Finding) -> str:
    """Stable across runs and line moves: id, Go API, user function, sorted paths."""
    func = f.user_frame.function if f.user_frame else None
    key = "\0".join([f.id, f.go_api or "", func or "", *sorted(f.paths)])
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def _logical(f: Finding) -> list[dict[str, Any]]:
    out = []
    if f.go_api:
        out.append({"fullyQualifiedName": f.go_api, "name": f.go_api.rsplit(".", 1)[-1],
                    "kind": "function"})
    if f.user_frame and f.user_frame.function:
        fn = f.user_frame.function
        out.append({"fullyQualifiedName": fn, "name": fn.rsplit(".", 1)[-1],
                    "kind": "function"})
    return out


def artifact(path: str, sources: SourceRoot | None) -> dict[str, Any] | None:
    """`{"uri": ..., "uriBaseId": "SRCROOT"}` for a file under the source root, an absolute
    `file:` URI for another absolute path, None for a relative name with no place (a
    `-trimpath` file of another module)."""
    rel = sources.relative(path) if sources is not None else None
    if rel is not None:
        return {"uri": quote(rel, safe=_URI_SAFE), "uriBaseId": SRCROOT}
    if path.startswith("/"):
        return {"uri": file_uri(path)}
    return None


def _physical(frame: Frame | None, sources: SourceRoot | None) -> dict[str, Any] | None:
    if frame is None or not frame.file:
        return None
    where = artifact(frame.file, sources)
    if where is None:
        return None
    physical: dict[str, Any] = {"artifactLocation": where}
    if frame.line and frame.line > 0:
        physical["region"] = {"startLine": frame.line}
    return physical


def _location(f: Finding, sources: SourceRoot | None,
              binary: str | None) -> dict[str, Any] | None:
    """The user frame; without one (a missing interpreter, a packed binary) the binary
    itself, since code-scanning tools want a physical location on every result."""
    location: dict[str, Any] = {}
    physical = _physical(f.user_frame, sources)
    if physical is None and binary:
        where = artifact(binary, sources)
        physical = {"artifactLocation": where} if where is not None else None
    if physical:
        location["physicalLocation"] = physical
    logical = _logical(f)
    if logical:
        location["logicalLocations"] = logical
    return location or None


def _frame_key(frame: Frame | None) -> tuple[str | None, str | None, int | None] | None:
    return None if frame is None else (frame.function, frame.file, frame.line)


def _matching_caller(f: Finding, analysis: Analysis) -> Caller | None:
    """The call site whose stack the result shows: one at the finding's user frame when
    there is one, else one of its Go API; the finding's first paths first."""
    order = {p: i for i, p in enumerate(f.paths)}
    callers = [c for d in sorted((d for d in analysis.dependencies if d.path in order),
                                 key=lambda d: order[d.path])
               for c in d.callers if caller_stack(c)]
    want = _frame_key(f.user_frame)
    for c in callers:
        if want is not None and _frame_key(c.user_frame) == want:
            return c
    return next((c for c in callers if f.go_api is None or c.go_api == f.go_api), None)


def _stack(f: Finding, analysis: Analysis,
           sources: SourceRoot | None) -> dict[str, Any] | None:
    caller = _matching_caller(f, analysis)
    if caller is None:
        return None
    frames = []
    for frame in caller_stack(caller):
        loc: dict[str, Any] = {"message": {"text": frame_text(frame)}}
        physical = _physical(frame, sources)
        if physical:
            loc["physicalLocation"] = physical
        if frame.function:
            loc["logicalLocations"] = [{"fullyQualifiedName": frame.function,
                                        "kind": "function"}]
        entry: dict[str, Any] = {"location": loc}
        if frame.module:
            entry["module"] = frame.module
        frames.append(entry)
    where = site_text(caller.user_frame) or "?"
    return {"message": {"text": f"{caller.go_api or caller.via} at {where}"},
            "frames": frames}


def _target(analysis: Analysis) -> dict[str, Any] | None:
    """The traced binary (SARIF: the artifact the tool was asked to analyse)."""
    binary = analysis.binary
    if not binary:
        return None
    return {"uri": file_uri(binary), "description": {"text": os.path.basename(binary)}}


INCOMPLETE_NOTE = ("the trace is incomplete: the tracer stopped before the program's exit "
                   "was recorded, so these results may miss what happened after")


def _invocation(analysis: Analysis) -> dict[str, Any]:
    """An incomplete trace is an unsuccessful execution (a gate cannot pass on it); the
    program's own failures (diagnoses) are notifications of a successful one."""
    notes = [{"level": "error", "message": {"text": _diagnosis_text(d)}}
             for d in analysis.diagnoses]
    if analysis.truncated:
        notes.insert(0, {"level": "error", "message": {"text": INCOMPLETE_NOTE},
                         "descriptor": {"id": "incomplete-trace"}})
    inv: dict[str, Any] = {"executionSuccessful": not analysis.truncated}
    if notes:
        inv["toolExecutionNotifications"] = notes
    return inv


def _diagnosis_text(d: dict[str, Any]) -> str:
    for key in ("message", "text", "detail"):
        if isinstance(d.get(key), str) and d[key]:
            return str(d[key])
    return json.dumps(d, sort_keys=True)


def render(analysis: Analysis, *, color: bool = False, source_root: str | None = None) -> str:
    """The `tracer.reporters.render` entry point (`color` is ignored: a file format)."""
    return render_sarif(analysis, source_root)
