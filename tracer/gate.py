"""The CI gate: `--fail-on` and `--allow` (docs/findings.md "The gate", exit codes in
docs/exit-codes.md).

`--fail-on` is a comma-separated list of
- finding ids (or globs: `nss-*`),
- severities, as thresholds: `error`; `warning` (warnings and errors); `info` (any),
- `hidden`: any hidden dependency the program used (docs/findings.md "Classes"),
- `cgo`: any access made through cgo,
- `missing`: a needed dependency that was absent (a finding's `missing`).

`--allow FILE` is TOML: `[[allow]]` tables with `id` (a finding id or a glob; `hidden`
and `cgo` name those shorthands), an optional `path` glob and a required `reason`. An
allowed finding is still reported, marked with its reason; it no longer fails the gate.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tracer.errors import BadBinaryError, CgotraceError, ExitCode, NotFoundError
from tracer.trace.model import DependencyClass, Finding, Severity

if TYPE_CHECKING:
    from probes.records import Analysis

SHORTHANDS = ("hidden", "cgo", "missing")
_RANK = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


class GateSpecError(CgotraceError):
    """A --fail-on value that cannot be parsed (usage error, exit 2)."""

    exit_code = ExitCode.USAGE


class AllowListError(BadBinaryError):
    """An allow-list file that cannot be used (exit 3): one line naming file, entry, key."""


@dataclass(frozen=True)
class FailOn:
    spec: str
    ids: tuple[str, ...] = ()  # ids or globs
    severity: Severity | None = None  # threshold: this severity or worse
    hidden: bool = False
    cgo: bool = False
    missing: bool = False


@dataclass(frozen=True)
class AllowEntry:
    id: str
    reason: str
    path: str | None = None

    def matches(self, name: str, paths: Iterable[str] = ()) -> bool:
        if not fnmatch.fnmatchcase(name, self.id):
            return False
        return self.path is None or any(fnmatch.fnmatchcase(p, self.path) for p in paths)


@dataclass(frozen=True)
class AllowList:
    entries: tuple[AllowEntry, ...] = ()
    file: str | None = None

    def reason_for(self, name: str, paths: Iterable[str] = ()) -> str | None:
        paths = tuple(paths)
        for e in self.entries:
            if e.matches(name, paths):
                return e.reason
        return None


@dataclass(frozen=True)
class Failure:
    """One thing that fails the gate: a finding, or a dependency under hidden/cgo."""

    rule: str  # what in --fail-on matched: an id, a severity, hidden, cgo, missing
    what: str  # finding id or dependency path
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class GateResult:
    failed: bool
    failing: tuple[Failure, ...]
    allowed: tuple[Failure, ...]
    analysis: Analysis  # with allowed findings marked and `gate` filled in

    def summary_line(self) -> str:
        if not self.failed:
            extra = f" ({len(self.allowed)} allowed)" if self.allowed else ""
            return f"cgotrace: gate passed{extra}"
        first = "; ".join(f"{f.rule}: {f.what}" for f in self.failing[:3])
        more = f" and {len(self.failing) - 3} more" if len(self.failing) > 3 else ""
        return f"cgotrace: gate failed: {first}{more}"


def parse_fail_on(spec: str) -> FailOn:
    """'hidden,error,nss-module' -> FailOn; GateSpecError for an empty or odd word."""
    words = [w.strip() for w in spec.replace(" ", ",").split(",") if w.strip()]
    if not words:
        raise GateSpecError("--fail-on: empty list (give finding ids, error/warning/info, "
                            "hidden, cgo or missing)")
    ids: list[str] = []
    severity: Severity | None = None
    flags = {k: False for k in SHORTHANDS}
    for w in words:
        if w in flags:
            flags[w] = True
        elif w in Severity.__members__.values() or w in {s.value for s in Severity}:
            sev = Severity(w)
            severity = sev if severity is None or _RANK[sev] > _RANK[severity] else severity
        elif all(ch.isalnum() or ch in "-_.*?[]" for ch in w):
            ids.append(w)
        else:
            raise GateSpecError(f"--fail-on: {w!r} is not a finding id, a severity "
                                "(error, warning, info), hidden, cgo or missing")
    return FailOn(spec=",".join(words), ids=tuple(ids), severity=severity, **flags)


def load_allow(path: str | os.PathLike[str]) -> AllowList:
    """Read an allow-list; NotFoundError (4) or AllowListError (3) with one line."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise NotFoundError(f"{name}: no such allow-list file") from None
    except OSError as e:
        raise AllowListError(f"{name}: cannot read allow-list ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise AllowListError(f"{name}: not valid TOML ({e})") from None
    unknown = sorted(set(data) - {"allow"})
    if unknown:
        raise AllowListError(f"{name}: unknown top-level key {unknown[0]!r} (only [[allow]])")
    tables = data.get("allow", [])
    if not isinstance(tables, list):
        raise AllowListError(f"{name}: key 'allow' must be an array of tables ([[allow]])")
    entries = []
    for i, t in enumerate(tables, 1):
        where = f"{name}: [[allow]] #{i}"
        if not isinstance(t, dict):
            raise AllowListError(f"{where}: must be a table")
        for key in t:
            if key not in ("id", "path", "reason"):
                raise AllowListError(f"{where}: unknown key {key!r} (id, path, reason)")
        for key in ("id", "reason"):
            if not isinstance(t.get(key), str) or not t[key].strip():
                raise AllowListError(f"{where}: key {key!r} is required (a non-empty string)")
        if "path" in t and (not isinstance(t["path"], str) or not t["path"]):
            raise AllowListError(f"{where}: key 'path' must be a non-empty string (a glob)")
        entries.append(AllowEntry(id=t["id"], reason=t["reason"].strip(), path=t.get("path")))
    return AllowList(tuple(entries), name)


def _finding_failures(f: Finding, fail_on: FailOn) -> list[Failure]:
    out = []
    if any(fnmatch.fnmatchcase(f.id, pat) for pat in fail_on.ids):
        out.append(Failure(f.id, f.id, f.title))
    if fail_on.severity is not None and _RANK[f.severity] <= _RANK[fail_on.severity]:
        out.append(Failure(fail_on.severity.value, f.id, f.title))
    if fail_on.missing and f.missing:
        out.append(Failure("missing", f.id, f"missing: {', '.join(f.missing)}"))
    return out


def apply_gate(analysis: Analysis, fail_on: FailOn, allow: AllowList | None = None) -> GateResult:
    """Which findings/dependencies fail the gate, which are allowed; the analysis comes back
    with allowed findings marked (`Finding.allowed` = the reason) and `gate` set."""
    allow = allow or AllowList()
    findings: list[Finding] = []
    failing: list[Failure] = []
    allowed: list[Failure] = []
    for f in analysis.findings:
        reason = allow.reason_for(f.id, f.paths)
        fails = _finding_failures(f, fail_on)
        if reason is not None:
            f = dataclasses.replace(f, allowed=reason)
            allowed.extend(fails)
        else:
            failing.extend(fails)
        findings.append(f)
    covered: dict[str, list[Finding]] = {}
    for f in findings:
        for p in f.paths:
            covered.setdefault(p, []).append(f)
    for d in analysis.dependencies:
        for word in ("hidden", "cgo"):
            if not getattr(fail_on, word):
                continue
            if word == "hidden" and (d.cls != DependencyClass.HIDDEN or d.result != "ok"):
                continue
            if word == "cgo" and not any(c.via == "cgo" for c in d.callers):
                continue
            item = Failure(word, d.path, f"{d.cls.value} {d.kind}")
            by_finding = covered.get(d.path, [])
            if allow.reason_for(word, [d.path]) is not None or (
                    by_finding and all(f.allowed for f in by_finding)):
                allowed.append(item)
            else:
                failing.append(item)
    failing = list(dict.fromkeys(failing))
    allowed = list(dict.fromkeys(a for a in allowed if a not in failing))
    gate = {"fail_on": fail_on.spec, "failed": bool(failing),
            "failing": [x.to_dict() for x in failing], "allowed": [x.to_dict() for x in allowed],
            "allow_file": allow.file}
    marked = dataclasses.replace(analysis, findings=tuple(findings), gate=gate)
    return GateResult(bool(failing), tuple(failing), tuple(allowed), marked)


def rules_for(probes: Iterable[str]) -> Any:
    """The packaged rules plus --probes DIRs (None: the packaged ones, loaded when used)."""
    dirs = tuple(probes)
    if not dirs:
        return None
    from probes.ruleset import load_rules

    return load_rules(dirs)


def gate(analysis: Analysis, fail_on: str | None, allow: str | None) -> GateResult | None:
    """The gate from the command-line strings (--fail-on, --allow); None when neither is set."""
    if fail_on is None and allow is None:
        return None
    spec = parse_fail_on(fail_on) if fail_on is not None else None
    allow_list = load_allow(allow) if allow is not None else None
    if spec is None:  # --allow alone: mark findings, fail on nothing
        spec = FailOn(spec="")
    return apply_gate(analysis, spec, allow_list)
