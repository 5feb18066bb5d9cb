"""The data every layer shares: frozen dataclasses, no behaviour beyond (de)serialisation.

Probes and reporters read only this module. `to_dict` output is the JSON contract
documented in docs/trace-format.md; add fields freely, never rename.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class AccessKind(StrEnum):
    """What a recorded access is, from the program's point of view."""

    INTERPRETER = "interpreter"  # the ELF interpreter named by PT_INTERP
    STARTUP_LIBRARY = "startup-library"  # loaded by ld.so before the entry point (NEEDED closure)
    DLOPEN_LIBRARY = "dlopen-library"  # a shared object opened after start (NSS modules, plugins)
    CONFIG = "config"  # /etc/nsswitch.conf, /etc/passwd, resolv.conf, ...
    DATA = "data"  # CA bundles, zoneinfo, locale, mime
    SOCKET = "socket"  # connect() to a name server of resolv.conf (port 53), nscd, userdb
    NETWORK = "network"  # any other connect(): the program's own traffic (counted, no finding)
    EXECUTABLE = "executable"  # execve of a program
    PROBE = "probe"  # stat/access/readlink of a path
    RUNTIME = "runtime"  # /proc, /sys, /dev: runtime-internal
    OTHER = "other"


class Via(StrEnum):
    """How the program reached an access."""

    CGO = "cgo"  # C code called from Go (libc getpwuid_r, getaddrinfo, ...)
    GO = "go"  # pure Go (os.Open, net's Go resolver, ...)
    LOADER = "loader"  # the dynamic loader, before main
    EXEC = "exec"  # the exec itself
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Frame:
    """One stack frame; `module` is the ELF image the PC lies in (basename)."""

    function: str | None
    file: str | None = None
    line: int | None = None
    module: str | None = None
    pc: int | None = None
    inlined: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pc"] = None if self.pc is None else hex(self.pc)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Frame:
        pc = d.get("pc")
        return cls(
            function=d.get("function"),
            file=d.get("file"),
            line=d.get("line"),
            module=d.get("module"),
            pc=int(pc, 16) if isinstance(pc, str) else pc,
            inlined=bool(d.get("inlined", False)),
        )


@dataclass(frozen=True)
class Attribution:
    """Which Go code caused an access."""

    via: Via
    go_api: str | None = None  # os/user.LookupId, net.(*Resolver).LookupHost, ...
    user_frame: Frame | None = None  # innermost frame of the application (its main module)
    c_function: str | None = None  # the C API the Go code called: getpwuid_r, getaddrinfo, ...
    stack: tuple[Frame, ...] = ()
    goroutine: int | None = None
    parent_goroutine: int | None = None  # for lookups run in a helper goroutine
    creator_frame: Frame | None = None  # the go statement that started this goroutine
    unsymbolized: tuple[str, ...] = ()  # "libfoo.so (reason)"
    # the standard-library / knowledge-base function that decides the dependency
    # (time.LoadLocation, os/user.lookupUserId, crypto/x509.loadSystemRoots, ...)
    origin: str | None = None
    # user_frame (and go_api) come from the goroutine that started this one (creator chain)
    via_goroutine: bool = False
    # no application frame at all: why ("init of corp.test/lib", "goroutine started by F")
    no_user_frame: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "via": self.via.value,
            "go_api": self.go_api,
            "user_frame": self.user_frame.to_dict() if self.user_frame else None,
            "c_function": self.c_function,
            "stack": [f.to_dict() for f in self.stack],
            "goroutine": self.goroutine,
            "parent_goroutine": self.parent_goroutine,
            "creator_frame": self.creator_frame.to_dict() if self.creator_frame else None,
            "unsymbolized": list(self.unsymbolized),
            "origin": self.origin,
            "via_goroutine": self.via_goroutine,
            "no_user_frame": self.no_user_frame,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Attribution:
        uf, cf = d.get("user_frame"), d.get("creator_frame")
        return cls(
            via=Via(d.get("via", "unknown")),
            go_api=d.get("go_api"),
            user_frame=Frame.from_dict(uf) if uf else None,
            c_function=d.get("c_function"),
            stack=tuple(Frame.from_dict(f) for f in d.get("stack", [])),
            goroutine=d.get("goroutine"),
            parent_goroutine=d.get("parent_goroutine"),
            creator_frame=Frame.from_dict(cf) if cf else None,
            unsymbolized=tuple(d.get("unsymbolized", [])),
            origin=d.get("origin"),
            via_goroutine=bool(d.get("via_goroutine", False)),
            no_user_frame=d.get("no_user_frame"),
        )


@dataclass(frozen=True)
class Access:
    """One watched syscall, decoded.

    `path` is absolute as the tracee saw it (inside its rootfs); `host_path` is the same
    file seen from the tracer when a sandbox maps it elsewhere. For connect, `path` is the
    unix socket path or "address:port". `result` is "ok", an errno name, or "unknown"
    (thread killed before the syscall returned).
    """

    seq: int
    time: float  # seconds since the trace started
    pid: int
    tid: int
    syscall: str
    path: str
    result: str
    kind: AccessKind = AccessKind.OTHER
    hidden: bool = False
    host_path: str | None = None
    flags: str | None = None  # O_RDONLY|O_CLOEXEC, AT_SYMLINK_NOFOLLOW, X_OK, ...
    retval: int | None = None
    argv: tuple[str, ...] | None = None  # execve
    family: str | None = None  # connect: AF_UNIX, AF_INET, AF_INET6, AF_NETLINK
    attribution: Attribution | None = None
    # seq of an earlier access whose attribution applies to this one: the JSON line then
    # carries "same_as" instead of the attribution fields (readers fill `attribution` back in)
    same_as: int | None = None
    # False: the call ran without a stop at its exit (a repeat the notify engine let run);
    # `result`/`retval` are then those of the access `result_of` (seq), whose result was
    # observed, or "unknown" when there is none. Flushed accesses ("unknown") are unobserved.
    observed: bool = True
    result_of: int | None = None
    # Further calls folded into this one (trace format 2): same pid, tid, syscall, path,
    # flags, result, kind, hidden and attribution. `repeats_unobserved` of them ran without
    # their result being seen (it was copied from an observed call of the same key, or is
    # unknown); `last_time` is the latest one's entry. `retval` and `observed` describe
    # this access alone. A trace line is written with 0; `repeats` lines raise it
    # (docs/trace-format.md, "Repeats").
    repeats: int = 0
    repeats_unobserved: int = 0
    last_time: float | None = None

    @property
    def calls(self) -> int:
        """How many syscalls this record stands for: itself and its repeats."""
        return 1 + self.repeats

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "type": "access",
            "seq": self.seq,
            "time": round(self.time, 6),
            "pid": self.pid,
            "tid": self.tid,
            "syscall": self.syscall,
            "path": self.path,
            "result": self.result,
            "kind": self.kind.value,
            "hidden": self.hidden,
        }
        for key in ("host_path", "flags", "retval", "family"):
            value = getattr(self, key)
            if value is not None:
                d[key] = value
        if self.argv is not None:
            d["argv"] = list(self.argv)
        if not self.observed:
            d["observed"] = False
            if self.result_of is not None:
                d["result_of"] = self.result_of
        if self.repeats:
            d["repeats"] = self.repeats
            d["repeats_unobserved"] = self.repeats_unobserved
            if self.last_time is not None:
                d["last_time"] = round(self.last_time, 6)
        if self.same_as is not None:
            d["same_as"] = self.same_as
        elif self.attribution is not None:
            d.update(self.attribution.to_dict())
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Access:
        attribution = Attribution.from_dict(d) if "via" in d else None
        argv = d.get("argv")
        return cls(
            seq=int(d.get("seq", 0)),
            time=float(d.get("time", 0.0)),
            pid=int(d["pid"]),
            tid=int(d["tid"]),
            syscall=str(d["syscall"]),
            path=str(d["path"]),
            result=str(d["result"]),
            kind=AccessKind(d.get("kind", "other")),
            hidden=bool(d.get("hidden", False)),
            host_path=d.get("host_path"),
            flags=d.get("flags"),
            retval=d.get("retval"),
            argv=tuple(argv) if argv is not None else None,
            family=d.get("family"),
            attribution=attribution,
            same_as=int(d["same_as"]) if d.get("same_as") is not None else None,
            observed=bool(d.get("observed", True)),
            result_of=int(d["result_of"]) if d.get("result_of") is not None else None,
            repeats=int(d.get("repeats") or 0),
            repeats_unobserved=int(d.get("repeats_unobserved") or 0),
            last_time=float(d["last_time"]) if d.get("last_time") is not None else None,
        )


@dataclass(frozen=True)
class Repeats:
    """A `repeats` line: the running totals of the calls folded into access `of` (seq).

    Written as the run goes (cumulative, so the last line for an access is the answer and
    a trace cut short loses at most the calls since the previous one)."""

    of: int
    count: int
    unobserved: int
    first_time: float
    last_time: float

    def to_dict(self) -> dict[str, Any]:
        return {"type": "repeats", "of": self.of, "count": self.count,
                "unobserved": self.unobserved, "first_time": round(self.first_time, 6),
                "last_time": round(self.last_time, 6)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Repeats:
        return cls(of=int(d["of"]), count=int(d["count"]),
                   unobserved=int(d.get("unobserved") or 0),
                   first_time=float(d.get("first_time") or 0.0),
                   last_time=float(d.get("last_time") or 0.0))


@dataclass(frozen=True)
class ProcessEvent:
    """exec/fork/exit of a traced process, kept in the trace for context."""

    event: str  # "exec", "fork", "exit", "signal", "crash"
    pid: int
    tid: int
    time: float
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "event", "event": self.event, "pid": self.pid, "tid": self.tid,
                "time": round(self.time, 6), **self.detail}


@dataclass(frozen=True)
class ExitStatus:
    """How the traced program ended: an exit code, or a signal."""

    code: int | None = None
    signal: int | None = None
    signal_name: str | None = None
    core_dumped: bool = False
    fault_address: int | None = None  # for SIGSEGV/SIGBUS: si_addr

    @property
    def shell_code(self) -> int:
        """The code a shell would report: the exit code, or 128+N for signal N."""
        if self.signal is not None:
            return 128 + self.signal
        return self.code if self.code is not None else 0

    @property
    def known(self) -> bool:
        """Whether the program's own end was seen (False: an attach that detached from a
        process still running, or a tracee lost without a status)."""
        return self.code is not None or self.signal is not None

    def to_dict(self) -> dict[str, Any]:
        # exit_code null, not 0, when no end was seen: 0 would claim a clean exit
        d: dict[str, Any] = {"exit_code": self.shell_code if self.known else None}
        if self.code is not None:
            d["code"] = self.code
        if self.signal is not None:
            d["signal"] = self.signal
            d["signal_name"] = self.signal_name
            d["core_dumped"] = self.core_dumped
        if self.fault_address is not None:
            d["fault_address"] = hex(self.fault_address)
        return d


# -- findings: what probes.analysis derives from accesses + static facts --------------------
# The contract between the findings engine (probes/), the reporters (tracer/reporters/),
# the gate (--fail-on/--allow), `diff`, `matrix` and `snapshot`. docs/architecture.md
# "Seams" describes who produces and who reads each field.


class Severity(StrEnum):
    ERROR = "error"  # the program will fail (or did) where this dependency is absent
    WARNING = "warning"  # a hidden run-time dependency, or behaviour that changes by image
    INFO = "info"  # worth knowing: which resolver ran, embedded tzdata, ...


class DependencyClass(StrEnum):
    """How a path the program touched relates to what static tools show."""

    DECLARED = "declared"  # interpreter + NEEDED closure: readelf/ldd show it
    HIDDEN = "hidden"  # a system file/library the loader, libc, NSS or a dlopen needed
    RUNTIME_FILE = "runtime-file"  # a system file pure Go code read on its own
    PROGRAM_FILE = "program-file"  # the program's own files: cwd, argv, its exe, writes, /tmp


@dataclass(frozen=True)
class Evidence:
    """One access a finding rests on (by `seq` in the trace)."""

    seq: int
    path: str
    result: str
    via: str | None = None
    c_function: str | None = None
    pid: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Finding:
    """One answer: what the program depends on, why, and what to change.

    `id` is stable and documented in docs/findings.md. `allowed` is the allow-list reason
    when an `[[allow]]` entry matched (the finding is still reported, marked allowed).
    `source` says where it was derived from: a traced run, a snapshot, or static facts only.
    """

    id: str
    severity: Severity
    title: str
    explanation: str
    fix: str
    go_api: str | None = None
    user_frame: Frame | None = None
    origin: str | None = None
    c_function: str | None = None
    paths: tuple[str, ...] = ()  # the dependencies this finding is about
    missing: tuple[str, ...] = ()  # of `paths`, those absent where the program ran
    evidence: tuple[Evidence, ...] = ()
    dockerfile: tuple[str, ...] = ()  # COPY lines for exactly the files seen
    allowed: str | None = None
    source: str = "trace"  # "trace" | "snapshot" | "static"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "severity": self.severity.value, "title": self.title,
            "explanation": self.explanation, "fix": self.fix, "go_api": self.go_api,
            "user_frame": self.user_frame.to_dict() if self.user_frame else None,
            "origin": self.origin, "c_function": self.c_function,
            "paths": list(self.paths), "missing": list(self.missing),
            "evidence": [e.to_dict() for e in self.evidence],
            "dockerfile": list(self.dockerfile), "allowed": self.allowed,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        uf = d.get("user_frame")
        return cls(
            id=str(d["id"]), severity=Severity(d.get("severity", "info")),
            title=str(d.get("title", "")), explanation=str(d.get("explanation", "")),
            fix=str(d.get("fix", "")), go_api=d.get("go_api"),
            user_frame=Frame.from_dict(uf) if uf else None, origin=d.get("origin"),
            c_function=d.get("c_function"), paths=tuple(d.get("paths", ())),
            missing=tuple(d.get("missing", ())),
            evidence=tuple(Evidence(**e) for e in d.get("evidence", ())),
            dockerfile=tuple(d.get("dockerfile", ())), allowed=d.get("allowed"),
            source=str(d.get("source", "trace")),
        )
