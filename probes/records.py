"""The findings' record types: what the aggregator (`probes.analysis`) builds, the detectors
(`probes.checks`) read, the rule loader (`probes.ruleset`) validates, and every reporter,
the gate, diff and matrix consume. A leaf: it imports only the trace model.
"""

from __future__ import annotations

import os
import string
from dataclasses import dataclass, field
from typing import Any

from tracer.errors import BadBinaryError
from tracer.trace.inventory import Inventory
from tracer.trace.model import DependencyClass, Finding, Frame, Severity

# What a placeholder stands for in a rule's generic summary (one derived from its title)
_GENERIC = {"go_api": "Go code", "c_function": "a C function", "interpreter": "the ELF "
            "interpreter", "libraries": "libraries", "modules": "NSS modules",
            "packages": "packages", "children": "other programs"}


class RuleError(BadBinaryError):
    """A finding rule file that cannot be used (exit 3, one line: file, rule, key)."""


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    title: str
    explanation: str
    fix: str
    check: str | None = None  # a built-in detector in probes.checks
    match: dict[str, Any] = field(default_factory=dict)  # declarative form
    params: dict[str, Any] = field(default_factory=dict)  # for the check
    per: str = "site"  # "site": one finding per (Go API, user frame); "rule": one in all
    file: str = ""
    summary_text: str = ""  # `summary`: the rule in general, no placeholders

    @property
    def summary(self) -> str:
        """What the rule is about, without any one finding's site (SARIF's rule
        shortDescription): `summary`, else the title with its placeholders in words."""
        if self.summary_text:
            return self.summary_text
        text = self.title.replace(" at {user_frame}", "")
        for name in {n for _, n, _, _ in string.Formatter().parse(text) if n}:
            text = text.replace("{" + name + "}", _GENERIC.get(name, "..."))
        return " ".join(text.split())

    @property
    def help_uri(self) -> str:
        """Where the id is documented (relative to the project root)."""
        return f"docs/findings.md#{self.id}"


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
class Connection:
    """The program's own connects to one address (kind `network`): counted, not a dependency."""

    address: str
    count: int
    results: tuple[tuple[str, int], ...] = ()  # (result, count), most first; EINPROGRESS is ok

    @property
    def failures(self) -> tuple[tuple[str, int], ...]:
        return tuple((r, n) for r, n in self.results if r != "ok")

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "count": self.count, "results": dict(self.results)}


@dataclass(frozen=True)
class Analysis:
    """Everything a reporter, the gate, diff and matrix read (docs/architecture.md, "Seams" 4)."""

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
    # the program's own connects (kind `network`), most first; `connections_more` counts the
    # accesses to addresses past the first MAX_CONNECTIONS
    connections: tuple[Connection, ...] = ()
    connections_more: int = 0
    # an attach: the window (pid, start_time, end_time, ended, detached, tracer_died);
    # None for a program cgotrace launched (docs/trace-format.md)
    attach: dict[str, Any] | None = None
    # calls whose result cgotrace did not see: repeats the notify engine let run without a
    # stop (their result copied from an observed call of the same key), or a thread gone
    # before its call returned (docs/trace-format.md, `observed`)
    unobserved: int = 0
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
                "gate": self.gate, "sandbox": self.sandbox,
                "connections": [c.to_dict() for c in self.connections],
                "connections_more": self.connections_more, "attach": self.attach,
                "unobserved": self.unobserved}


def frame_label(frame: Frame | None) -> str:
    if frame is None:
        return ""
    if frame.file:
        return f"{os.path.basename(frame.file)}:{frame.line}"
    return frame.function or ""


# === verdict ================================================================================

@dataclass(frozen=True)
class Verdict:
    """works | degraded | fails, with the reasons (one line each); `notes` say what the
    verdict could not see (an attach's window)."""

    status: str
    reasons: tuple[str, ...]
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.status

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.status, "reasons": list(self.reasons), "notes": list(self.notes)}


def verdict(analysis: Analysis) -> Verdict:
    """fails: the program did not run to a clean exit (exec/loader failure, a diagnosis, a
    crash, a non-zero status) or an error finding names something missing; degraded: it
    exited 0 but a needed dependency was absent (a finding lists `missing`); else works.

    An attach sees a window of a program that was already running: a process still running
    at detach, or one the kernel detached because cgotrace died (no exit line), has no exit
    status, and the verdict is about what was seen in the window, never about the tracer."""
    fails: list[str] = []
    degraded: list[str] = []
    for d in analysis.diagnoses:
        fails.append(str(d.get("message") or d.get("reason") or d))
    ex = analysis.exit or {}
    notes = _attach_notes(analysis.attach)
    exited = analysis.attach is None or not (analysis.attach.get("detached")
                                             or analysis.attach.get("tracer_died"))
    if analysis.attach is None and analysis.source == "trace" and analysis.truncated \
            and not ex:
        fails.append("the trace is incomplete: the program's exit status is unknown")
    if not exited:
        pass
    elif ex.get("signal") is not None:
        fails.append(f"killed by {ex.get('signal_name') or ex.get('signal')}")
    elif ex.get("exit_code") not in (None, 0):
        fails.append(f"exit status {ex.get('exit_code')}")
    for f in analysis.findings:
        if f.allowed or not f.missing:
            continue
        line = f"{f.id}: {', '.join(f.missing)} missing"
        (fails if f.severity == Severity.ERROR else degraded).append(line)
    if fails:
        return Verdict("fails", tuple(dict.fromkeys(fails)), notes)
    if degraded:
        return Verdict("degraded", tuple(dict.fromkeys(degraded)), notes)
    return Verdict("works", (), notes)


def _attach_notes(attach: dict[str, Any] | None) -> tuple[str, ...]:
    if attach is None:
        return ()
    if attach.get("tracer_died"):
        return ("cgotrace died while attached (no exit line; the kernel detached the "
                "process): the verdict covers what was seen until then",)
    if attach.get("detached"):
        return ("still running at detach: the verdict covers what was seen while attached",)
    return ()
