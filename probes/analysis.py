"""The findings engine: static facts (the trace header) + accesses + events -> `Analysis`.

Pure functions: nothing here touches a process or the file system (the rule files aside).
`analyze` and `analyze_trace` are the entry points (docs/architecture.md "Shared seams
§2"); `AnalysisBuilder` does the same incrementally while a trace runs, so memory grows
with distinct (path, result, call site), not with accesses.

Every access lands in one of four classes (`DependencyClass`, docs/findings.md):

- program-file: under the working directory (when it is not "/"), named in argv, the
  program's own executable, anything it creates or writes, and /tmp. Counted per
  directory, never listed one by one, never flagged.
- declared: the interpreter and NEEDED closure the loader opens, which readelf/ldd show.
- hidden: a library or system file the loader, libc, NSS or a dlopen needed (and other
  programs it executes); readelf/ldd do not show it.
- runtime-file: a system file pure Go code read on its own (e.g. /etc/passwd under
  osusergo): listed and explained, not hidden.

/proc, /sys and /dev (the kernel's) and stat/access/readlink probes are counted, not listed.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from probes import knowledge
from tracer.trace.inventory import Inventory
from tracer.trace.model import (
    Access,
    AccessKind,
    DependencyClass,
    ExitStatus,
    Finding,
    Frame,
    ProcessEvent,
    Severity,
)

EVIDENCE_PER_DEPENDENCY = 8  # seq numbers kept per dependency (the trace has them all)
FOLD_MIN_DIRS = 3  # failed lookups of one name across this many directories fold into one
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")
_ABSENT = ("ENOENT", "ENOTDIR", "ELOOP")
_LOADER_CONFIG = ("/etc/ld.so.cache", "/etc/ld.so.preload")


@dataclass(frozen=True)
class Caller:
    """One call site behind a dependency: (Go API, user frame) with its own count."""

    via: str
    go_api: str | None
    user_frame: Frame | None
    c_function: str | None
    origin: str | None
    count: int
    first_seq: int
    pid: int
    # the stack of this site's first access (innermost first): what the HTML graph shows
    # when a node is expanded, and SARIF's `stacks`; not in to_dict (the trace has them all)
    stack: tuple[Frame, ...] = ()

    @property
    def site(self) -> str:
        """'main.go:19' (basename:line), the function name, or '' without a user frame."""
        return frame_label(self.user_frame)

    def to_dict(self) -> dict[str, Any]:
        return {"via": self.via, "go_api": self.go_api, "user_frame": self.site or None,
                "user_frame_detail": self.user_frame.to_dict() if self.user_frame else None,
                "c_function": self.c_function, "origin": self.origin, "count": self.count,
                "first_seq": self.first_seq, "pid": self.pid}


@dataclass(frozen=True)
class Dependency:
    """One (path, result) the program needed, with its class and every call site."""

    path: str
    result: str
    cls: DependencyClass
    kind: str
    count: int
    callers: tuple[Caller, ...] = ()
    feature: str | None = None  # knowledge-base feature (nss-user, resolver, tls-roots...)
    host_path: str | None = None
    absent: bool = False  # failed with ENOENT-like errors and not found elsewhere
    seqs: tuple[int, ...] = ()  # the first EVIDENCE_PER_DEPENDENCY accesses
    pids: tuple[int, ...] = ()
    syscalls: tuple[str, ...] = ()
    searched: tuple[str, ...] = ()  # folded failed lookups of the same name
    misses: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "result": self.result, "class": self.cls.value,
                "kind": self.kind, "count": self.count, "feature": self.feature,
                "host_path": self.host_path, "absent": self.absent,
                "callers": [c.to_dict() for c in self.callers], "seqs": list(self.seqs),
                "pids": list(self.pids), "syscalls": list(self.syscalls),
                "searched": list(self.searched), "misses": self.misses}


@dataclass(frozen=True)
class ProgramFiles:
    """The program's own files: counted per directory, never listed one by one."""

    files: int = 0  # distinct paths
    accesses: int = 0
    written: int = 0  # distinct paths created or written
    by_dir: tuple[tuple[str, int], ...] = ()  # (directory, distinct files), most first
    by_reason: tuple[tuple[str, int], ...] = ()  # cwd, argv, written, tmp, executable

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files, "accesses": self.accesses, "written": self.written,
                "by_dir": [{"dir": d, "files": n} for d, n in self.by_dir],
                "by_reason": dict(self.by_reason)}


@dataclass(frozen=True)
class Analysis:
    """Everything a reporter, the gate, diff and matrix read (docs/architecture.md §2)."""

    findings: tuple[Finding, ...]
    dependencies: tuple[Dependency, ...]
    program_files: ProgramFiles
    static: dict[str, Any]
    exit: dict[str, Any] | None
    diagnoses: tuple[dict[str, Any], ...] = ()
    source: str = "trace"
    # added fields (context for reporters)
    counts: dict[str, int] = field(default_factory=dict)  # accesses per kind
    argv: tuple[str, ...] = ()
    binary: str | None = None
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    truncated: bool = False
    unsymbolized: tuple[str, ...] = ()
    gate: dict[str, Any] | None = None  # set by tracer.gate.apply_gate
    sandbox: str | None = None  # the run's sandbox label (rootfs preset or image), if any
    executables: tuple[str, ...] = ()  # the program's own executable, as each view names it
    # the probes.ruleset.Rule objects that ran (SARIF's rule list); not in to_dict()
    rules: tuple[Any, ...] = field(default=(), repr=False, compare=False)
    # the used paths' OS packages, resolved in the run's root before an SBOM is rendered
    # (tracer.commands.sbom.attach_inventory); None until then. Not in to_dict()
    inventory: Inventory | None = field(default=None, repr=False, compare=False)

    @property
    def accesses(self) -> int:
        return sum(self.counts.values())

    def of_class(self, cls: DependencyClass) -> tuple[Dependency, ...]:
        return tuple(d for d in self.dependencies if d.cls == cls)

    def static_view(self) -> dict[str, Any]:
        """What readelf -d / ldd show: PT_INTERP, DT_NEEDED and their resolved paths."""
        loader = self.static.get("loader") or {}
        return {"interpreter": self.static.get("interpreter"),
                "needed": list(self.static.get("needed") or ()),
                "libraries": [lib.get("path") or f"{lib.get('name')} (not found)"
                              for lib in loader.get("libraries", ())],
                "static": self.static.get("static")}

    def runtime_view(self) -> dict[str, Any]:
        """What the program needed at run time that the static view does not show."""
        def paths(cls: DependencyClass) -> list[str]:
            return sorted({d.path for d in self.of_class(cls) if not d.absent})
        return {"hidden": paths(DependencyClass.HIDDEN),
                "runtime_files": paths(DependencyClass.RUNTIME_FILE),
                "absent": sorted({d.path for d in self.dependencies if d.absent
                                  and d.cls != DependencyClass.PROGRAM_FILE}),
                "program_files": self.program_files.files}

    def to_dict(self) -> dict[str, Any]:
        return {"findings": [f.to_dict() for f in self.findings],
                "dependencies": [d.to_dict() for d in self.dependencies],
                "program_files": self.program_files.to_dict(), "static": self.static,
                "views": {"static": self.static_view(), "runtime": self.runtime_view()},
                "exit": self.exit, "diagnoses": list(self.diagnoses), "source": self.source,
                "counts": dict(self.counts), "argv": list(self.argv), "binary": self.binary,
                "cwd": self.cwd, "env": dict(self.env), "truncated": self.truncated,
                "unsymbolized": list(self.unsymbolized), "verdict": verdict(self).to_dict(),
                "gate": self.gate, "sandbox": self.sandbox}


def frame_label(frame: Frame | None) -> str:
    if frame is None:
        return ""
    if frame.file:
        return f"{os.path.basename(frame.file)}:{frame.line}"
    return frame.function or ""


# === aggregation ============================================================================

@dataclass
class _CallerAgg:
    via: str
    go_api: str | None
    frame: Frame | None
    c_function: str | None
    origin: str | None
    count: int
    first_seq: int
    pid: int
    stack: tuple[Frame, ...] = ()


@dataclass
class _Agg:
    path: str
    result: str
    kind: str
    hidden: bool = False
    count: int = 0
    host_path: str | None = None
    written: bool = False
    seqs: list[int] = field(default_factory=list)
    pids: dict[int, None] = field(default_factory=dict)
    syscalls: dict[str, None] = field(default_factory=dict)
    callers: dict[tuple[Any, ...], _CallerAgg] = field(default_factory=dict)


def _is_write(a: Access) -> bool:
    if a.syscall == "creat":
        return True
    flags = a.flags or ""
    return any(f in flags.split("|") for f in _WRITE_FLAGS)


class AnalysisBuilder:
    """Feed accesses and events as they happen; `finish()` gives the Analysis."""

    def __init__(self, header: dict[str, Any] | None = None, rules: Any = None) -> None:
        header = header or {}
        self.header = header
        self.exes: dict[str, None] = {}  # the traced program's own exec paths
        self.rules = rules
        self.static: dict[str, Any] = dict(header.get("static") or {})
        self.argv = tuple(str(x) for x in header.get("argv") or ())
        self.binary = header.get("binary")
        for exe in (self.binary, header.get("binary_realpath")):
            if exe:
                self.exes[str(exe)] = None
        cwd = header.get("cwd")
        self.cwd = str(cwd) if cwd else None
        self.env = dict(header.get("env") or {})
        self.sandbox = header.get("sandbox")
        self.counts: Counter[str] = Counter()
        self.aggs: dict[tuple[str, str], _Agg] = {}
        self.events: list[ProcessEvent] = []
        self.first_pid: int | None = None
        self.unsymbolized: dict[str, None] = {}
        self.written: set[str] = set()

    def add(self, a: Access) -> None:
        first = not self.counts
        self.counts[a.kind.value] += 1
        if self.first_pid is None:
            self.first_pid = a.pid
        if first and a.kind == AccessKind.EXECUTABLE:  # the traced program's own exec
            self.exes[a.path] = None
            if a.host_path:
                self.exes[a.host_path] = None
        if a.kind in (AccessKind.RUNTIME, AccessKind.PROBE):
            return
        key = (a.path, a.result)
        agg = self.aggs.get(key)
        if agg is None:
            agg = self.aggs[key] = _Agg(a.path, a.result, a.kind.value)
        agg.count += 1
        agg.hidden = agg.hidden or a.hidden
        agg.host_path = agg.host_path or a.host_path
        if _is_write(a):
            agg.written = True
            if a.result == "ok":
                self.written.add(a.path)
        if len(agg.seqs) < EVIDENCE_PER_DEPENDENCY:
            agg.seqs.append(a.seq)
        agg.pids.setdefault(a.pid)
        agg.syscalls.setdefault(a.syscall)
        at = a.attribution
        if at is not None:
            if a.same_as is None:
                for note in at.unsymbolized:
                    self.unsymbolized.setdefault(note)
            origin = getattr(at, "origin", None)
            ckey = (at.via.value, at.go_api, _frame_key(at.user_frame), at.c_function, origin)
            via, go_api, frame, cfn = at.via.value, at.go_api, at.user_frame, at.c_function
        else:
            ckey = ("unknown", None, None, None, None)
            via, go_api, frame, cfn, origin = "unknown", None, None, None, None
        if a.kind == AccessKind.INTERPRETER or (a.kind == AccessKind.STARTUP_LIBRARY
                                                and at is None):
            via = "loader"
            ckey = ("loader", None, None, None, None)
        c = agg.callers.get(ckey)
        if c is None:
            agg.callers[ckey] = _CallerAgg(via, go_api, frame, cfn, origin, 1, a.seq, a.pid,
                                           at.stack if at is not None else ())
        else:
            c.count += 1

    def event(self, e: ProcessEvent) -> None:
        if e.event != "fork":
            self.events.append(e)

    def finish(self, exit: dict[str, Any] | ExitStatus | None = None,
               diagnoses: Iterable[dict[str, Any]] = (), truncated: bool = False,
               source: str = "trace") -> Analysis:
        from probes import checks, ruleset

        deps, program = self._classify()
        ex = exit.to_dict() if isinstance(exit, ExitStatus) else exit
        base = Analysis(findings=(), dependencies=tuple(deps), program_files=program,
                        static=self.static, exit=ex, diagnoses=tuple(diagnoses),
                        source=source, counts=dict(sorted(self.counts.items())),
                        argv=self.argv, binary=self.binary, cwd=self.cwd, env=self.env,
                        truncated=truncated, unsymbolized=tuple(self.unsymbolized),
                        sandbox=str(self.sandbox) if self.sandbox else None,
                        executables=tuple(self.exes))
        rules = self.rules if self.rules is not None else ruleset.default_rules()
        findings = checks.run_rules(rules, base, tuple(self.events))
        return Analysis(**{**base.__dict__, "findings": tuple(findings),
                           "rules": tuple(rules)})

    # --- classification ------------------------------------------------------------------
    def _program_reason(self, agg: _Agg) -> str | None:
        p = agg.path
        if p in self.exes or (agg.host_path and agg.host_path in self.exes) \
                or (self.binary and p == self.binary):
            # a failed exec of the program itself is evidence (missing interpreter), kept
            return "executable" if agg.result == "ok" else None
        if p in self.written or agg.written:
            return "written"
        if p == "/tmp" or p.startswith("/tmp/"):
            return "tmp"
        if p in self._argv_paths():
            return "argv"
        rule = knowledge.classify_path(p)
        system = rule is not None and rule.feature not in ("runtime",)
        cwd = self.cwd
        if cwd and cwd != "/" and not system and (p == cwd or p.startswith(cwd.rstrip("/") + "/")):
            via = {c.via for c in agg.callers.values()}
            if not via & {"cgo", "loader"}:
                return "cwd"
        return None

    def _argv_paths(self) -> frozenset[str]:
        cache: frozenset[str] | None = getattr(self, "_argv_cache", None)
        if cache is None:
            out: set[str] = set()
            for arg in self.argv[1:]:
                if "/" in arg or (self.cwd and not arg.startswith("-")):
                    base = self.cwd or "/"
                    out.add(os.path.normpath(os.path.join(base, arg)))
            cache = frozenset(out)
            self._argv_cache = cache
        return cache

    def _class_of(self, agg: _Agg) -> DependencyClass | None:
        kind = agg.kind
        vias = {c.via for c in agg.callers.values()}
        if kind in ("interpreter", "startup-library") and not agg.hidden:
            return DependencyClass.DECLARED
        if agg.path in _LOADER_CONFIG and not agg.hidden:
            return DependencyClass.DECLARED
        if agg.path in (self.static.get("loader") or {}).get("config_files", ()) \
                and not agg.hidden:
            return DependencyClass.DECLARED
        if kind == "executable":  # the program re-executing itself is no new dependency
            itself = agg.path == "/proc/self/exe" or agg.path in self.exes
            return DependencyClass.HIDDEN if agg.hidden and not itself \
                else DependencyClass.DECLARED
        if vias and vias <= {"go"}:
            return DependencyClass.RUNTIME_FILE
        if agg.hidden or kind in ("dlopen-library", "socket", "config", "data"):
            return DependencyClass.HIDDEN
        return DependencyClass.RUNTIME_FILE if agg.result == "ok" or vias <= {"go"} else None

    def _classify(self) -> tuple[list[Dependency], ProgramFiles]:
        deps: list[Dependency] = []
        prog_paths: dict[str, str] = {}
        prog_accesses = 0
        for agg in self.aggs.values():
            reason = self._program_reason(agg)
            if reason is not None:
                if agg.result == "ok" or reason == "written":
                    prog_paths.setdefault(agg.path, reason)
                prog_accesses += agg.count
                continue
            cls = self._class_of(agg)
            if cls is None:
                continue
            rule = knowledge.classify_path(agg.path)
            callers = tuple(sorted(
                (Caller(c.via, c.go_api, c.frame, c.c_function, c.origin, c.count,
                        c.first_seq, c.pid, c.stack) for c in agg.callers.values()),
                key=lambda c: c.first_seq))
            deps.append(Dependency(
                path=agg.path, result=agg.result, cls=cls, kind=agg.kind, count=agg.count,
                callers=callers, feature=rule.feature if rule else None,
                host_path=agg.host_path, absent=agg.result in _ABSENT,
                seqs=tuple(agg.seqs), pids=tuple(agg.pids), syscalls=tuple(agg.syscalls)))
        return fold_search_paths(deps), self._program_files(prog_paths, prog_accesses)

    def _program_files(self, paths: dict[str, str], accesses: int) -> ProgramFiles:
        by_dir: Counter[str] = Counter()
        cwd = self.cwd if self.cwd and self.cwd != "/" else None
        for p in paths:
            by_dir[_dir_bucket(p, cwd)] += 1
        reasons = Counter(paths.values())
        return ProgramFiles(files=len(paths), accesses=accesses,
                            written=sum(1 for r in paths.values() if r == "written"),
                            by_dir=tuple(sorted(by_dir.items(), key=lambda kv: (-kv[1], kv[0]))),
                            by_reason=tuple(sorted(reasons.items())))


def _frame_key(f: Frame | None) -> tuple[Any, ...] | None:
    return None if f is None else (f.function, f.file, f.line)


def _dir_bucket(path: str, cwd: str | None) -> str:
    """'./content/' for files under the working directory (first level), else the parent."""
    if cwd and (path == cwd or path.startswith(cwd.rstrip("/") + "/")):
        rel = os.path.relpath(path, cwd)
        head = rel.split("/", 1)[0]
        return "./" if "/" not in rel else f"./{head}/"
    return os.path.dirname(path) + "/"


def fold_search_paths(deps: list[Dependency]) -> list[Dependency]:
    """Fold the failed lookups of one (class, kind, file name) that span FOLD_MIN_DIRS or
    more directories: into the successful dependency of that name (`searched`, `misses`),
    or into one absent entry named by the file name. Sorted by class, kind, path."""
    groups: dict[tuple[str, str, str], list[Dependency]] = {}
    for d in deps:
        if d.result != "ok" and d.result in _ABSENT:
            groups.setdefault((d.cls.value, d.kind, os.path.basename(d.path.rstrip("/"))),
                              []).append(d)
    hits = {(d.cls.value, d.kind, os.path.basename(d.path.rstrip("/"))): d
            for d in deps if d.result == "ok"}
    drop: set[int] = set()
    out: list[Dependency] = []
    for key, misses in groups.items():
        dirs = {os.path.dirname(d.path.rstrip("/")) for d in misses}
        if len(dirs) < FOLD_MIN_DIRS:
            continue
        drop.update(id(d) for d in misses)
        searched = tuple(sorted(d.path for d in misses))
        count = sum(d.count for d in misses)
        hit = hits.get(key)
        if hit is not None:
            drop.add(id(hit))
            out.append(Dependency(**{**hit.__dict__, "searched": searched, "misses": count}))
            continue
        first = min(misses, key=lambda d: d.seqs[0] if d.seqs else 0)
        callers = _merge_callers(c for d in misses for c in d.callers)
        out.append(Dependency(**{**first.__dict__, "path": key[2], "count": count,
                                 "callers": callers, "searched": searched, "misses": count,
                                 "seqs": tuple(sorted(s for d in misses for s in d.seqs))[
                                     :EVIDENCE_PER_DEPENDENCY]}))
    out.extend(d for d in deps if id(d) not in drop)
    order = {c: i for i, c in enumerate(DependencyClass)}
    return sorted(out, key=lambda d: (order[d.cls], d.kind, d.path, d.result))


def _merge_callers(callers: Iterable[Caller]) -> tuple[Caller, ...]:
    merged: dict[tuple[Any, ...], Caller] = {}
    for c in callers:
        key = (c.via, c.go_api, _frame_key(c.user_frame), c.c_function, c.origin)
        old = merged.get(key)
        if old is None:
            merged[key] = c
        else:
            first = old if old.first_seq <= c.first_seq else c
            merged[key] = Caller(c.via, c.go_api, c.user_frame, c.c_function, c.origin,
                                 old.count + c.count, first.first_seq, old.pid, first.stack)
    return tuple(sorted(merged.values(), key=lambda c: c.first_seq))


# === entry points ===========================================================================

def analyze(header: dict[str, Any], accesses: Iterable[Access],
            events: Iterable[ProcessEvent] = (), exit: dict[str, Any] | None = None,
            diagnoses: Iterable[dict[str, Any]] = (), rules: Any = None,
            truncated: bool = False) -> Analysis:
    """Findings, dependencies and program files from one trace's parts."""
    b = AnalysisBuilder(header, rules)
    for a in accesses:
        b.add(a)
    for e in events:
        b.event(e)
    return b.finish(exit, diagnoses, truncated)


def analyze_trace(trace: Any, rules: Any = None) -> Analysis:
    """`analyze` over a `tracer.trace.recorder.Trace` (diagnosis lines, when the trace has them,
    come from its `diagnoses` attribute)."""
    return analyze(trace.header, trace.accesses, trace.events, trace.exit,
                   getattr(trace, "diagnoses", ()) or (), rules, bool(trace.truncated))


# === verdict ================================================================================

@dataclass(frozen=True)
class Verdict:
    """works | degraded | fails, with the reasons (one line each)."""

    status: str
    reasons: tuple[str, ...]

    def __str__(self) -> str:
        return self.status

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.status, "reasons": list(self.reasons)}


def verdict(analysis: Analysis) -> Verdict:
    """fails: the program did not run to a clean exit (exec/loader failure, a diagnosis, a
    crash, a non-zero status) or an error finding names something missing; degraded: it
    exited 0 but a needed dependency was absent (a finding lists `missing`); else works."""
    fails: list[str] = []
    degraded: list[str] = []
    for d in analysis.diagnoses:
        fails.append(str(d.get("message") or d.get("reason") or d))
    ex = analysis.exit or {}
    if analysis.source == "trace" and analysis.truncated and not ex:
        fails.append("the trace is incomplete: the program's exit status is unknown")
    if ex.get("signal") is not None:
        fails.append(f"killed by {ex.get('signal_name') or ex.get('signal')}")
    elif ex.get("exit_code") not in (None, 0):
        fails.append(f"exit status {ex.get('exit_code')}")
    for f in analysis.findings:
        if f.allowed or not f.missing:
            continue
        line = f"{f.id}: {', '.join(f.missing)} missing"
        (fails if f.severity == Severity.ERROR else degraded).append(line)
    if fails:
        return Verdict("fails", tuple(dict.fromkeys(fails)))
    if degraded:
        return Verdict("degraded", tuple(dict.fromkeys(degraded)))
    return Verdict("works", ())
