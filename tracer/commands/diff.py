"""`cgotrace diff A B`: what changed between two runs, each given as a trace (JSON lines
from `run --output`) or a JSON report (`report --format json`).

Both sides are brought to the JSON report's shape first (a trace is analysed, then
rendered as that report), so a trace can be compared with a report written elsewhere.
Compared:

- dependencies, keyed by path (results of one path merge: `ENOENT x2, ok`): added,
  removed, or changed in class (hidden -> runtime-file), in the set of results, or in
  their callers (Go API, via, C function, user frame). Counts alone are not a change.
  The program's own files are compared as one count per directory.
- findings, keyed by (id, Go API): added, removed, or changed in severity, user frame,
  paths, or allow-list status.
- static facts (cgo, interpreter, NEEDED, ...): keys whose values differ.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from tracer.errors import NotFoundError, TraceFormatError

DIFF_FORMAT = "cgotrace-diff"
DIFF_VERSION = 1


@dataclass(frozen=True)
class DepView:
    """One path of one side: its classes, kind, results and callers (counts summed)."""

    path: str
    dependency_class: str
    kind: str
    results: dict[str, int]
    callers: tuple[str, ...]  # descriptions without counts, in the report's order

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "class": self.dependency_class, "kind": self.kind,
                "results": self.results, "callers": list(self.callers)}


@dataclass(frozen=True)
class FindingView:
    id: str
    severity: str
    title: str
    go_api: str | None
    user_frame: str | None
    paths: tuple[str, ...]
    allowed: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "severity": self.severity, "title": self.title,
                "go_api": self.go_api, "user_frame": self.user_frame,
                "paths": list(self.paths), "allowed": self.allowed}


@dataclass
class Side:
    """One input, reduced to what `diff` compares."""

    source: str
    label: str
    static: dict[str, Any]
    dependencies: dict[str, DepView]
    findings: dict[tuple[str, str], FindingView]
    program_files: dict[str, int]  # directory -> count


@dataclass
class Change:
    key: str
    changes: dict[str, dict[str, Any]]  # field -> {"a": ..., "b": ...}

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "changes": self.changes}


@dataclass
class Section:
    added: list[Any] = field(default_factory=list)
    removed: list[Any] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def to_dict(self) -> dict[str, Any]:
        return {"added": [x.to_dict() for x in self.added],
                "removed": [x.to_dict() for x in self.removed],
                "changed": [c.to_dict() for c in self.changed]}


@dataclass
class DiffResult:
    a: Side
    b: Side
    static: dict[str, dict[str, Any]]
    findings: Section
    dependencies: Section
    program_files: dict[str, dict[str, int]]  # directory -> {"a": n, "b": m}, changed only

    @property
    def identical(self) -> bool:
        return not (self.static or self.findings or self.dependencies or self.program_files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": DIFF_FORMAT, "version": DIFF_VERSION, "identical": self.identical,
            "a": {"source": self.a.source, "label": self.a.label},
            "b": {"source": self.b.source, "label": self.b.label},
            "static": self.static,
            "findings": self.findings.to_dict(),
            "dependencies": self.dependencies.to_dict(),
            "program_files": self.program_files,
        }


# -- loading ------------------------------------------------------------------------------


def load_side(path: str) -> Side:
    """A trace or a JSON report, as a `Side`. NotFoundError / TraceFormatError (one line)."""
    report = load_report(path)
    return side_from_report(report, source=path)


def load_report(path: str) -> dict[str, Any]:
    """The JSON report of `path`: read as is, or rendered from the trace it holds."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            first = f.readline()
    except FileNotFoundError:
        raise NotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TraceFormatError(f"{path}: is a directory, not a trace or JSON report") from None
    except PermissionError:
        from tracer.errors import PermissionDeniedError

        raise PermissionDeniedError(f"{path}: permission denied") from None
    if _is_trace_header(first):
        return report_from_trace(path)
    return _read_json_report(path)


def _is_trace_header(line: str) -> bool:
    try:
        obj = json.loads(line)
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("type") == "header"


def _read_json_report(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError):
        raise TraceFormatError(f"{path}: neither a cgotrace trace nor a JSON report "
                               "(not JSON)") from None
    from tracer.reporters.jsonreport import FORMAT, VERSION

    if isinstance(data, dict) and data.get("format") == FORMAT and int(
            data.get("version") or 0) > VERSION:
        raise TraceFormatError(f"{path}: JSON report version {data.get('version')} is newer "
                               f"than this cgotrace reads ({VERSION})")
    if not isinstance(data, dict) or not {"findings", "dependencies"} <= data.keys():
        raise TraceFormatError(f"{path}: JSON without `findings` and `dependencies`: not a "
                               "cgotrace JSON report (write one with `cgotrace report "
                               "--format json`)")
    return data


def report_from_trace(path: str) -> dict[str, Any]:
    from probes.analysis import analyze_trace
    from tracer.reporters import render
    from tracer.trace.recorder import read_trace

    report: dict[str, Any] = json.loads(render(analyze_trace(read_trace(path)), "json"))
    return report


def side_from_report(report: dict[str, Any], source: str) -> Side:
    try:
        return Side(
            source=source,
            label=_label(report, source),
            static=dict(report.get("static") or {}),
            dependencies=_dependencies(report.get("dependencies") or []),
            findings=_findings(report.get("findings") or []),
            program_files=_program_files(report.get("program_files")),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise TraceFormatError(f"{source}: malformed JSON report ({type(e).__name__}: "
                               f"{e})") from None


def _label(report: dict[str, Any], source: str) -> str:
    static = report.get("static") or {}
    binary = static.get("binary") or report.get("binary")
    return os.path.basename(str(binary)) if binary else os.path.basename(source)


def caller_text(c: dict[str, Any]) -> str:
    """'os/user.LookupId via cgo getpwuid_r at main.go:19' from a JSON caller."""
    via = str(c.get("via") or "unknown")
    if not c.get("go_api") and via in ("loader", "exec"):
        return via
    parts = [c.get("go_api") or "?", "via", via]
    if c.get("c_function"):
        parts.append(str(c["c_function"]))
    frame = _frame_text(c.get("user_frame"))
    if frame:
        parts += ["at", frame]
    return " ".join(parts)


def _frame_text(frame: Any) -> str | None:
    if not frame:
        return None
    if isinstance(frame, str):
        return frame
    if frame.get("file"):
        return f"{os.path.basename(frame['file'])}:{frame.get('line')}"
    return str(frame.get("function")) if frame.get("function") else None


def _dependencies(items: list[dict[str, Any]]) -> dict[str, DepView]:
    merged: dict[str, dict[str, Any]] = {}
    for d in items:
        cls = str(d.get("class") or d.get("dependency_class") or "")
        if cls == "program-file":
            continue
        path = str(d["path"])
        m = merged.setdefault(path, {"class": set(), "kind": set(), "results": {},
                                     "callers": {}})
        m["class"].add(cls)
        m["kind"].add(str(d.get("kind") or ""))
        result = str(d.get("result") or "")
        m["results"][result] = m["results"].get(result, 0) + int(d.get("count") or 1)
        m["callers"].update(dict.fromkeys(caller_text(c) for c in d.get("callers") or []))
    return {p: DepView(path=p, dependency_class=",".join(sorted(m["class"])),
                       kind=",".join(sorted(m["kind"])), results=dict(sorted(
                           m["results"].items())), callers=tuple(m["callers"]))
            for p, m in merged.items()}


def _findings(items: list[dict[str, Any]]) -> dict[tuple[str, str], FindingView]:
    out: dict[tuple[str, str], FindingView] = {}
    for d in items:
        view = FindingView(id=str(d["id"]), severity=str(d.get("severity") or ""),
                           title=str(d.get("title") or ""), go_api=d.get("go_api"),
                           user_frame=_frame_text(d.get("user_frame")),
                           paths=tuple(sorted(d.get("paths") or ())),
                           allowed=d.get("allowed"))
        key = (view.id, view.go_api or "")
        if key in out:  # one id reported twice for one API: fold the paths
            old = out[key]
            view = dataclasses.replace(old, paths=tuple(sorted(set(old.paths)
                                                               | set(view.paths))))
        out[key] = view
    return out


def _program_files(pf: Any) -> dict[str, int]:
    """{directory: distinct files} from the report's `program_files.by_dir`."""
    if not isinstance(pf, dict):
        return {}
    return {str(d["dir"]): int(d["files"]) for d in pf.get("by_dir") or ()}


# -- comparing ----------------------------------------------------------------------------


def diff_sides(a: Side, b: Side) -> DiffResult:
    return DiffResult(a=a, b=b, static=_diff_static(a.static, b.static),
                      findings=_diff_findings(a.findings, b.findings),
                      dependencies=_diff_dependencies(a.dependencies, b.dependencies),
                      program_files=_diff_program_files(a.program_files, b.program_files))


def diff_paths(a: str, b: str) -> DiffResult:
    """Load and compare two traces or JSON reports."""
    return diff_sides(load_side(a), load_side(b))


# static facts that differ between any two runs and say nothing about dependencies
_STATIC_NOISE = frozenset({"binary", "build_id", "mtime", "size", "sha256", "path"})


def _diff_static(a: dict[str, Any], b: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: {"a": a.get(k), "b": b.get(k)} for k in sorted(a.keys() | b.keys())
            if k not in _STATIC_NOISE and a.get(k) != b.get(k)}


def _changes(a: dict[str, Any], b: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: {"a": a[k], "b": b[k]} for k in a if a[k] != b[k]}


def _diff_dependencies(a: dict[str, DepView], b: dict[str, DepView]) -> Section:
    s = Section(added=[b[p] for p in sorted(b.keys() - a.keys())],
                removed=[a[p] for p in sorted(a.keys() - b.keys())])
    for p in sorted(a.keys() & b.keys()):
        x, y = a[p], b[p]
        ch = _changes({"class": x.dependency_class, "results": sorted(x.results),
                       "callers": sorted(x.callers)},
                      {"class": y.dependency_class, "results": sorted(y.results),
                       "callers": sorted(y.callers)})
        if ch:
            s.changed.append(Change(p, ch))
    return s


def _diff_findings(a: dict[tuple[str, str], FindingView],
                   b: dict[tuple[str, str], FindingView]) -> Section:
    s = Section(added=[b[k] for k in sorted(b.keys() - a.keys())],
                removed=[a[k] for k in sorted(a.keys() - b.keys())])
    for k in sorted(a.keys() & b.keys()):
        x, y = a[k], b[k]
        fields = ("severity", "user_frame", "paths", "allowed")
        ch = _changes({f: getattr(x, f) for f in fields}, {f: getattr(y, f) for f in fields})
        if ch:
            s.changed.append(Change(f"{k[0]} ({k[1]})" if k[1] else k[0], ch))
    return s


def _diff_program_files(a: dict[str, int], b: dict[str, int]) -> dict[str, dict[str, int]]:
    return {d: {"a": a.get(d, 0), "b": b.get(d, 0)} for d in sorted(a.keys() | b.keys())
            if a.get(d, 0) != b.get(d, 0)}


# -- rendering ----------------------------------------------------------------------------


def render_json(result: DiffResult) -> str:
    return json.dumps(result.to_dict(), indent=2) + "\n"


def _results_text(results: dict[str, int]) -> str:
    return ", ".join(f"{r} x{n}" if n > 1 else r for r, n in results.items())


def _dep_line(mark: str, d: DepView) -> str:
    via = f"  <- {d.callers[0]}" if d.callers else ""
    more = f" (+{len(d.callers) - 1} callers)" if len(d.callers) > 1 else ""
    return f"  {mark} {d.dependency_class:<12} {d.kind:<15} {d.path}  " \
           f"{_results_text(d.results)}{via}{more}"


def _finding_line(mark: str, f: FindingView) -> str:
    where = " ".join(x for x in (f.go_api, f"at {f.user_frame}" if f.user_frame else "")
                     if x)
    allowed = " [allowed]" if f.allowed else ""
    return f"  {mark} {f.severity:<7} {f.id:<24} {f.title}{allowed}" + (
        f"  <- {where}" if where else "")


def _change_lines(c: Change) -> list[str]:
    out = [f"  ~ {c.key}"]
    for name, v in c.changes.items():
        a, b = v["a"], v["b"]
        if isinstance(a, list) and isinstance(b, list):
            out += [f"      {name} - {x}" for x in a if x not in b]
            out += [f"      {name} + {x}" for x in b if x not in a]
        else:
            out.append(f"      {name}: {_show(a)} -> {_show(b)}")
    return out


def _flat(key: str, a: Any, b: Any) -> list[tuple[str, Any, Any]]:
    """Nested static facts one line per differing leaf: `loader.flavor: glibc -> none`."""
    if isinstance(a, dict) or isinstance(b, dict):
        a = a if isinstance(a, dict) else {}
        b = b if isinstance(b, dict) else {}
        return [leaf for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)
                for leaf in _flat(f"{key}.{k}", a.get(k), b.get(k))]
    return [(key, a, b)]


def _show(v: Any) -> str:
    if v is None or v == [] or v == "":
        return "none"
    if isinstance(v, list | tuple):
        return ", ".join(_name(x) for x in v)
    return str(v)


def _name(x: Any) -> str:
    if isinstance(x, dict):  # e.g. loader.libraries entries
        return str(x.get("path") or x.get("name") or x)
    return str(x)


def render_text(result: DiffResult) -> str:
    a, b = result.a, result.b
    lines = [f"cgotrace diff: A = {a.source} ({a.label})", f"               "
             f"B = {b.source} ({b.label})"]
    if result.identical:
        lines.append("no differences in dependencies, findings or static facts")
        return "\n".join(lines) + "\n"
    if result.static:
        lines.append("static facts:")
        lines += [f"  ~ {k}: {_show(a)} -> {_show(b)}"
                  for key, v in result.static.items() for k, a, b in _flat(key, v["a"], v["b"])]
    for title, section, line in (("findings", result.findings, _finding_line),
                                 ("dependencies", result.dependencies, _dep_line)):
        lines.append(f"{title}: {len(section.removed)} removed, {len(section.added)} "
                     f"added, {len(section.changed)} changed")
        lines += [line("-", x) for x in section.removed]
        lines += [line("+", x) for x in section.added]
        for c in section.changed:
            lines += _change_lines(c)
    if result.program_files:
        lines.append("program files (per directory):")
        lines += [f"  ~ {d}: {v['a']} -> {v['b']}" for d, v in result.program_files.items()]
    return "\n".join(lines) + "\n"
