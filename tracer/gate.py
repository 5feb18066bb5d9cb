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

The gate never passes because it did not understand its input: a word of `--fail-on` or an
allow-list `id` that names no known finding id (the loaded rules, `--probes` included), and
a glob that matches none, are refused with the nearest known word; an incomplete trace (the
tracer died before the program's exit was recorded) fails every gate (`incomplete`).
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import os
import tomllib
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tracer.errors import BadBinaryError, CgotraceError, ExitCode, NotFoundError
from tracer.trace.model import DependencyClass, Finding, Severity

if TYPE_CHECKING:
    from probes.records import Analysis, Dependency

SHORTHANDS = ("hidden", "cgo", "missing")
SEVERITIES = tuple(s.value for s in Severity)
ALLOW_SHORTHANDS = ("hidden", "cgo")  # what an [[allow]] id may name besides finding ids
_RANK = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
_GLOB = frozenset("*?[")


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


def known_ids(rules: Iterable[Any] | None = None) -> frozenset[str]:
    """The finding ids a gate may name: those of `rules` (`probes.ruleset.Rule`s, e.g. the
    packaged rules plus `--probes` ones), the packaged rules when None."""
    if rules is None:
        from probes.ruleset import default_rules

        rules = default_rules()
    return frozenset(r.id for r in rules)


def nearest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate spelled most like `word` (difflib), or None when there are none."""
    pool = sorted(set(candidates))
    close = difflib.get_close_matches(word, pool, n=1, cutoff=0.6) or \
        difflib.get_close_matches(word, pool, n=1, cutoff=0.0)
    return close[0] if close else None


def _is_glob(word: str) -> bool:
    return any(ch in _GLOB for ch in word)


def unknown_id(word: str, ids: Collection[str], extra: Iterable[str] = ()) -> str | None:
    """Why `word` names no finding: None when it is a known id or a glob matching one,
    else the reason with the nearest known word (`extra`: the keywords also allowed)."""
    if word in ids:
        return None
    if _is_glob(word):
        if any(fnmatch.fnmatchcase(i, word) for i in ids):
            return None
        near = nearest(word.replace("*", "").replace("?", ""), ids)
        return f"{word!r} matches no finding id" + (f" (nearest: {near!r})" if near else "")
    near = nearest(word, [*ids, *extra])
    return f"{word!r} is not a known finding id" + (
        f" (did you mean {near!r}?)" if near else "")


def parse_fail_on(spec: str, ids: Collection[str] | None = None) -> FailOn:
    """'hidden,error,nss-module' -> FailOn. GateSpecError (usage, exit 2) for an empty
    list, a word that is neither a keyword (hidden, cgo, missing), a severity (error,
    warning, info) nor a finding id of `ids` (default: the packaged rules' ids), and a glob
    that matches none of them; the message names the nearest known word."""
    words = [w.strip() for w in spec.replace(" ", ",").split(",") if w.strip()]
    if not words:
        raise GateSpecError("--fail-on: empty list (give finding ids, error/warning/info, "
                            "hidden, cgo or missing)")
    known = known_ids() if ids is None else ids
    found: list[str] = []
    severity: Severity | None = None
    flags = {k: False for k in SHORTHANDS}
    for w in words:
        if w in flags:
            flags[w] = True
        elif w in SEVERITIES:
            sev = Severity(w)
            severity = sev if severity is None or _RANK[sev] > _RANK[severity] else severity
        elif not all(ch.isalnum() or ch in "-_.*?[]" for ch in w):
            raise GateSpecError(f"--fail-on: {w!r} is not a finding id, a severity "
                                "(error, warning, info), hidden, cgo or missing")
        else:
            why = unknown_id(w, known, (*SHORTHANDS, *SEVERITIES))
            if why is not None:
                raise GateSpecError(f"--fail-on: {why}; give finding ids (docs/findings.md), "
                                    "error, warning, info, hidden, cgo or missing")
            found.append(w)
    return FailOn(spec=",".join(words), ids=tuple(found), severity=severity, **flags)


def load_allow(path: str | os.PathLike[str], ids: Collection[str] | None = None) -> AllowList:
    """Read an allow-list; NotFoundError (4) or AllowListError (3) with one line. An `id`
    that names no finding of `ids` (default: the packaged rules' ids) nor `hidden`/`cgo`,
    or a glob matching none, is refused with the nearest known id."""
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
    known = known_ids() if ids is None else ids
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
        if t["id"] not in ALLOW_SHORTHANDS:
            why = unknown_id(t["id"], known, ALLOW_SHORTHANDS)
            if why is not None:
                raise AllowListError(f"{where}: key 'id': {why} (finding ids: "
                                     "docs/findings.md; or hidden, cgo)")
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


def is_hidden_use(d: Dependency) -> bool:
    """What `--fail-on hidden` (and the pytest plugin's `assert_no_hidden`) count: a hidden
    dependency the program used (opened, loaded, connected: result ok). A failed lookup
    (ENOENT) is evidence, not a dependency the image must ship."""
    return d.cls == DependencyClass.HIDDEN and d.result == "ok"


INCOMPLETE = "incomplete"


def incomplete_failure(analysis: Analysis) -> Failure | None:
    """An incomplete trace (the tracer died or was stopped before the program's exit was
    recorded, or its last line is cut) cannot pass a gate: what it did not record might
    have failed it. Never allowed by an allow-list."""
    if not analysis.truncated:
        return None
    return Failure(INCOMPLETE, "the trace ends before the program's exit",
                   "an incomplete trace cannot pass a gate: trace the program to its end")


def apply_gate(analysis: Analysis, fail_on: FailOn, allow: AllowList | None = None) -> GateResult:
    """Which findings/dependencies fail the gate, which are allowed; the analysis comes back
    with allowed findings marked (`Finding.allowed` = the reason) and `gate` set. Any gate
    (a non-empty `--fail-on`) fails on an incomplete trace."""
    allow = allow or AllowList()
    findings: list[Finding] = []
    failing: list[Failure] = []
    allowed: list[Failure] = []
    incomplete = incomplete_failure(analysis) if fail_on.spec else None
    if incomplete is not None:
        failing.append(incomplete)
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
            if word == "hidden" and not is_hidden_use(d):
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


def check_options(fail_on: str | None, allow: str | None, rules: Any = None
                  ) -> tuple[FailOn | None, AllowList | None]:
    """--fail-on and --allow parsed and checked against the finding ids of `rules` (the
    packaged ones when None), before anything runs: GateSpecError (2), AllowListError (3),
    NotFoundError (4)."""
    ids = known_ids(rules)
    spec = parse_fail_on(fail_on, ids) if fail_on is not None else None
    allow_list = load_allow(allow, ids) if allow is not None else None
    return spec, allow_list


def gate(analysis: Analysis, fail_on: str | None, allow: str | None) -> GateResult | None:
    """The gate from the command-line strings (--fail-on, --allow); None when neither is set.
    Ids are checked against the rules the analysis ran (`--probes` ones included)."""
    if fail_on is None and allow is None:
        return None
    spec, allow_list = check_options(fail_on, allow, analysis.rules or None)
    if spec is None:  # --allow alone: mark findings, fail on nothing
        spec = FailOn(spec="")
    return apply_gate(analysis, spec, allow_list)
