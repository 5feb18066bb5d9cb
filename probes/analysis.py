"""The findings engine: static facts (the trace header) + accesses + events -> `Analysis`.

Pure functions: nothing here touches a process or the file system (the rule files aside).
`analyze` and `analyze_trace` are the entry points (docs/architecture.md, "Seams"
4); `AnalysisBuilder` does the same incrementally while a trace runs, so memory grows
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

The class follows the caller of each access, never the path alone: /etc/nsswitch.conf read
by Go's resolver and by a cgo user lookup is two dependencies, a runtime file (the Go
caller) and a hidden one (the cgo caller), so each finding sees the accesses of its own.

/proc, /sys and /dev (the kernel's) and stat/access/readlink probes are counted, not listed.
A connect that is not to a name server or an NSS daemon (kind `network`: an upstream, a
database, a peer) is the program's own traffic: counted per address (`Analysis.connections`),
never a dependency. A connect's kind is decided again here from the header's recorded name
servers (`probes.knowledge.connect_kind`), so a trace recorded before that rule reads the same.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from probes import checks, knowledge, ruleset
from probes.records import Analysis, Caller, Connection, Dependency, ProgramFiles
from tracer.trace.model import (
    Access,
    AccessKind,
    DependencyClass,
    ExitStatus,
    Frame,
    ProcessEvent,
    Repeats,
)

EVIDENCE_PER_DEPENDENCY = 8  # seq numbers kept per dependency (the trace has them all)
FOLD_MIN_DIRS = 3  # failed lookups of one name across this many directories fold into one
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")
_ABSENT = ("ENOENT", "ENOTDIR", "ELOOP")
_LOADER_CONFIG = ("/etc/ld.so.cache", "/etc/ld.so.preload")
MAX_CONNECTIONS = 256  # distinct addresses of the program's own traffic kept by address
TRACER_DIED = "cgotrace died while attached (killed, or it crashed); the kernel detached it"




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
    seqs: list[int] = field(default_factory=list)  # its first EVIDENCE_PER_DEPENDENCY
    pids: dict[int, None] = field(default_factory=dict)


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
        self.nameservers = knowledge.nameservers_of(header)
        self.connections: dict[str, Counter[str]] = {}
        self.connections_more = 0
        attach = header.get("attach") if header.get("mode") == "attach" else None
        # kept by reference: attach fills in start_time once every thread is seized
        self.attach: dict[str, Any] | None = attach if isinstance(attach, dict) else None
        self.last_time = 0.0  # of the last access or event (seconds since the start)
        self.unobserved = 0  # calls whose result was not seen (docs/trace-format.md)

    def add(self, a: Access) -> None:
        """One access record; it counts as `a.calls` calls (itself and its repeats)."""
        n = a.calls
        first = not self.counts
        kind = self._kind(a)
        self.counts[kind.value] += n
        self.unobserved += (0 if a.observed else 1) + a.repeats_unobserved
        self.last_time = max(self.last_time, a.last_time or a.time)
        if self.first_pid is None:
            self.first_pid = a.pid
        if first and kind == AccessKind.EXECUTABLE:  # the traced program's own exec
            self.exes[a.path] = None
            if a.host_path:
                self.exes[a.host_path] = None
        key = self._listed(a, kind, n)
        if key is None:
            return
        result = key[1]
        agg = self.aggs.get(key)
        if agg is None:
            agg = self.aggs[key] = _Agg(a.path, result, kind.value)
        agg.count += n
        agg.hidden = agg.hidden or a.hidden
        agg.host_path = agg.host_path or a.host_path
        if _is_write(a):
            agg.written = True
            if result == "ok":
                self.written.add(a.path)
        if len(agg.seqs) < EVIDENCE_PER_DEPENDENCY:
            agg.seqs.append(a.seq)
        agg.pids.setdefault(a.pid)
        agg.syscalls.setdefault(a.syscall)
        at = a.attribution
        if at is not None and a.same_as is None:
            for note in at.unsymbolized:
                self.unsymbolized.setdefault(note)
        ckey, via = _caller_key(a, kind)
        c = agg.callers.get(ckey)
        if c is None:
            if at is None:
                c = agg.callers[ckey] = _CallerAgg(via, None, None, None, None, 0, a.seq,
                                                   a.pid)
            else:
                c = agg.callers[ckey] = _CallerAgg(via, at.go_api, at.user_frame,
                                                   at.c_function, getattr(at, "origin", None),
                                                   0, a.seq, a.pid, at.stack)
        c.count += n
        if len(c.seqs) < EVIDENCE_PER_DEPENDENCY:
            c.seqs.append(a.seq)
        c.pids.setdefault(a.pid)

    def add_repeats(self, a: Access, added: Repeats) -> None:
        """`added.count` more calls folded into access `a`, which was added before (a
        `repeats` report while the trace runs): counted where `a` was."""
        n = added.count
        kind = self._kind(a)
        self.counts[kind.value] += n
        self.unobserved += added.unobserved
        self.last_time = max(self.last_time, added.last_time)
        key = self._listed(a, kind, n)
        if key is None:
            return
        agg = self.aggs.get(key)
        if agg is None:
            return
        agg.count += n
        c = agg.callers.get(_caller_key(a, kind)[0])
        if c is not None:
            c.count += n

    def _listed(self, a: Access, kind: AccessKind, n: int) -> tuple[str, str] | None:
        """The (path, result) key `n` calls of `a` aggregate under; None for what is only
        counted: the kernel's files and probes, and the program's own traffic (per address)."""
        if kind in (AccessKind.RUNTIME, AccessKind.PROBE):
            return None
        result = knowledge.access_result(a.syscall, a.result)
        if kind is AccessKind.NETWORK:
            self._connection(a.path, result, n)
            return None
        return a.path, result

    def _kind(self, a: Access) -> AccessKind:
        """The access's kind, a connect's from the name servers in force."""
        if a.syscall == "connect" and a.kind is not AccessKind.RUNTIME:
            return knowledge.connect_kind(a.path, self.nameservers)
        return a.kind

    def _connection(self, address: str, result: str, n: int = 1) -> None:
        results = self.connections.get(address)
        if results is None:
            if len(self.connections) >= MAX_CONNECTIONS:
                self.connections_more += 1
                return
            results = self.connections[address] = Counter()
        results[result] += n

    def event(self, e: ProcessEvent) -> None:
        self.last_time = max(self.last_time, e.time)
        if e.event != "fork":
            self.events.append(e)

    def finish(self, exit: dict[str, Any] | ExitStatus | None = None,
               diagnoses: Iterable[dict[str, Any]] = (), truncated: bool = False,
               source: str = "trace") -> Analysis:
        deps, program = self._classify()
        ex = exit.to_dict() if isinstance(exit, ExitStatus) else exit
        attach = self._attach_window(ex)
        base = Analysis(findings=(), dependencies=tuple(deps), program_files=program,
                        static=self.static, exit=ex, diagnoses=tuple(diagnoses),
                        source=source, counts=dict(sorted(self.counts.items())),
                        argv=self.argv, binary=self.binary, cwd=self.cwd, env=self.env,
                        truncated=truncated, unsymbolized=tuple(self.unsymbolized),
                        sandbox=str(self.sandbox) if self.sandbox else None,
                        executables=tuple(self.exes), connections=self._connections(),
                        connections_more=self.connections_more, attach=attach,
                        unobserved=self.unobserved)
        rules = self.rules if self.rules is not None else ruleset.default_rules()
        findings = checks.run_rules(rules, base, tuple(self.events))
        return Analysis(**{**base.__dict__, "findings": tuple(findings),
                           "rules": tuple(rules)})

    def _connections(self) -> tuple[Connection, ...]:
        out = [Connection(addr, sum(r.values()), tuple(r.most_common()))
               for addr, r in self.connections.items()]
        return tuple(sorted(out, key=lambda c: (-c.count, c.address)))

    def _attach_window(self, ex: dict[str, Any] | None) -> dict[str, Any] | None:
        """The attach window of an attach's trace: the header's (pid, start_time, ...) and
        the exit line's (end_time, ended, detached). No exit line: cgotrace died while
        attached (`tracer_died`), and the window ends at the last record seen."""
        if self.attach is None:
            return None
        window = {k: v for k, v in self.attach.items() if k != "nspid"}
        end = (ex or {}).get("attach")
        if isinstance(end, dict):
            window.update({k: v for k, v in end.items() if k != "nspid"})
            window.setdefault("tracer_died", False)
        elif ex is None:
            start = window.get("start_time")
            window.update({"ended": TRACER_DIED, "detached": True, "tracer_died": True,
                           "end_time": None,
                           "last_seen": start + self.last_time
                           if isinstance(start, (int, float)) else None})
        return window

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

    def _class_of(self, agg: _Agg, vias: set[str]) -> DependencyClass | None:
        """The class of `agg`'s accesses made by callers with these vias (one caller's)."""
        kind = agg.kind
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
            feature = knowledge.connect_feature(agg.path, agg.kind) \
                if "connect" in agg.syscalls else None
            if feature is None:
                rule = knowledge.classify_path(agg.path)
                feature = rule.feature if rule else None
            groups = self._by_class(agg)
            for cls, group in groups.items():
                callers = tuple(sorted(
                    (Caller(c.via, c.go_api, c.frame, c.c_function, c.origin, c.count,
                            c.first_seq, c.pid, c.stack) for c in group),
                    key=lambda c: c.first_seq))
                whole = len(groups) == 1  # the usual case: every access of the path
                seqs = agg.seqs if whole else sorted(s for c in group for s in c.seqs)[
                    :EVIDENCE_PER_DEPENDENCY]
                pids = agg.pids if whole else {p: None for c in group for p in c.pids}
                deps.append(Dependency(
                    path=agg.path, result=agg.result, cls=cls, kind=agg.kind,
                    count=sum(c.count for c in group), callers=callers, feature=feature,
                    host_path=agg.host_path, absent=agg.result in _ABSENT,
                    seqs=tuple(seqs), pids=tuple(pids), syscalls=tuple(agg.syscalls)))
        return fold_search_paths(deps), self._program_files(prog_paths, prog_accesses)

    def _by_class(self, agg: _Agg) -> dict[DependencyClass, list[_CallerAgg]]:
        """`agg`'s callers grouped by the class each one's accesses get (module docstring:
        the class follows the caller); callers whose accesses are not listed are left out."""
        groups: dict[DependencyClass, list[_CallerAgg]] = {}
        for c in agg.callers.values():
            cls = self._class_of(agg, {c.via})
            if cls is not None:
                groups.setdefault(cls, []).append(c)
        return groups

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


def _caller_key(a: Access, kind: AccessKind) -> tuple[tuple[Any, ...], str]:
    """(the key of the caller an access counts for, its `via`)."""
    at = a.attribution
    if kind == AccessKind.INTERPRETER or (kind == AccessKind.STARTUP_LIBRARY and at is None):
        return ("loader", None, None, None, None), "loader"
    if at is None:
        return ("unknown", None, None, None, None), "unknown"
    origin = getattr(at, "origin", None)
    return (at.via.value, at.go_api, _frame_key(at.user_frame), at.c_function, origin), \
        at.via.value


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
