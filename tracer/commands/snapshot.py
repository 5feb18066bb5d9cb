"""`cgotrace snapshot PID`: what a running process depends on right now, from /proc only.

No ptrace and no stop: the process is read, never touched. Three sources:

- `/proc/PID/maps`: every mapped shared object, set against the binary's interpreter and
  NEEDED closure (resolved inside the process's own root). A library mapped but not in
  that closure was loaded later with dlopen: glibc's NSS modules (`libnss_systemd.so.2`
  and what it needs) after a user lookup, a resolver module after a cgo DNS lookup.
  Files are compared by (device, inode), so a symlinked or bind-mounted path still matches.
- open files (psutil) and sockets (`tracer.process.sockets`: the tables of the process's
  own network namespace, /proc/PID/net/*, so a process in a container or another netns
  shows its sockets), classified like trace accesses (`tracer.recording.classify`, with
  the name servers of the process's own resolv.conf).
- the binary's static facts through /proc/PID/exe (`tracer.binary.facts.inspect_binary`): Go
  version, cgo, which resolver and user lookup it uses, what the knowledge base predicts;
  the resolver choice is corrected by the process's own environment (/proc/PID/environ:
  GODEBUG=netdns=..., LOCALDOMAIN, RES_OPTIONS, HOSTALIASES).

A process whose executable and mappings the kernel hides from us (another user's, without
CAP_SYS_PTRACE) is refused with PermissionDeniedError (exit 5), not shown half empty.

`take_snapshot(pid) -> Snapshot`; `Snapshot.to_dict()` is the `--json` form and
`render_text` the terminal form. Findings come from the findings engine
(`probes.analysis.AnalysisBuilder`) fed with what is mapped and open as if a trace had seen
it; the `Analysis` and each finding are marked `source: "snapshot"`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from probes.knowledge import nameservers_of, run_time_resolver
from tracer.process import procfs
from tracer.process.sockets import ProcSocket, process_sockets
from tracer.recording.classify import Classifier, is_shared_object
from tracer.recording.header import RunFacts, recorded_env, resolv_conf, static_facts
from tracer.recording.pipeline import Recording
from tracer.trace.model import AccessKind


@dataclass(frozen=True)
class MappedLibrary:
    path: str  # as the process sees it
    host_path: str  # where cgotrace can read it
    role: str  # "interpreter", "needed", "dlopen" (mapped but not in the NEEDED closure)
    inode: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "host_path": self.host_path, "role": self.role}


@dataclass(frozen=True)
class OpenFile:
    fd: int | None
    path: str  # a file path, a unix socket path, or address:port for inet sockets
    kind: str  # AccessKind value, as for trace accesses
    family: str | None = None  # sockets: AF_UNIX, AF_INET, AF_INET6
    status: str | None = None  # sockets: LISTEN, ESTABLISHED, ...

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"fd": self.fd, "path": self.path, "kind": self.kind}
        if self.family:
            d["family"] = self.family
        if self.status:
            d["status"] = self.status
        return d


@dataclass
class Snapshot:
    process: procfs.ProcessFacts
    static: Any  # StaticFacts | None
    env: dict[str, str] = field(default_factory=dict)  # the recorded part of its environment
    resolv_conf: dict[str, Any] | None = None  # its own resolv.conf's name servers
    libraries: list[MappedLibrary] = field(default_factory=list)
    files: list[OpenFile] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    findings: list[Any] = field(default_factory=list)  # tracer.trace.model.Finding
    analysis: Any = None  # probes.records.Analysis (source "snapshot")

    @property
    def dlopened(self) -> list[MappedLibrary]:
        return [lib for lib in self.libraries if lib.role == "dlopen"]

    def to_dict(self) -> dict[str, Any]:
        p = self.process
        st = self.static
        return {
            "type": "snapshot", "source": "snapshot",
            "process": {"pid": p.pid, "nspid": list(p.nspid), "name": p.name,
                        "exe": p.exe, "root": p.root, "cmdline": list(p.cmdline),
                        "namespaces": list(p.foreign_ns)},
            "binary": _binary_dict(st, self.env),
            "env": dict(self.env),
            "libraries": [lib.to_dict() for lib in self.libraries],
            "dlopened": [lib.path for lib in self.dlopened],
            "files": [f.to_dict() for f in self.files],
            "findings": [f.to_dict() for f in self.findings],
            "problems": list(self.problems),
        }


def _binary_dict(st: Any, env: dict[str, str] | None = None) -> dict[str, Any] | None:
    if st is None:
        return None
    go = st.go
    resolver = st.resolver.to_dict()
    now = run_time_resolver("net" in st.cgo.std_packages, env or {}) if go else None
    if now is not None:  # the process's environment overrides the binary's choice
        resolver["run_time"] = {"implementation": now[0], "reason": now[1]}
    return {"interpreter": st.interpreter, "needed": list(st.needed), "static": st.static,
            "pie": st.pie, "stripped": st.stripped, "libc": st.elf.libc,
            "go_version": go.version if go else None, "main": go.main if go else None,
            "cgo": {"linked": st.cgo.linked, "std_packages": list(st.cgo.std_packages),
                    "third_party": list(st.cgo.third_party),
                    "cgo_enabled": st.cgo.cgo_enabled},
            "resolver": resolver, "user_lookup": st.user_lookup.to_dict()}


# -- gathering -----------------------------------------------------------------------------
def take_snapshot(pid: int) -> Snapshot:
    """Read `pid` from /proc (ProcessGoneError / PermissionDeniedError when it cannot be)."""
    facts = procfs.process_facts(pid)
    procfs.require_readable(facts)
    run_facts = _static(facts)
    snap = Snapshot(process=facts, static=run_facts.facts,
                    env=recorded_env(procfs.environ(pid)),
                    resolv_conf=resolv_conf(f"/proc/{pid}/root/etc/resolv.conf"))
    snap.libraries = mapped_libraries(facts, snap.static)
    snap.files = open_files(facts, snap.problems, nameservers_of(
        {"resolv_conf": snap.resolv_conf}))
    snap.analysis = snapshot_analysis(snap, run_facts)
    snap.findings = list(snap.analysis.findings)
    return snap


def _static(facts: procfs.ProcessFacts) -> RunFacts:
    root = f"/proc/{facts.pid}/root" if facts.in_container or facts.root != "/" else None
    return static_facts(facts.exe_host_path, root, facts.exe if root else None, cached=False)


def _inode(path: str | None) -> tuple[int, int] | None:
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _declared(facts: procfs.ProcessFacts, static: Any) -> tuple[set[tuple[int, int]],
                                                                  set[tuple[int, int]]]:
    """(interpreter inodes, NEEDED-closure inodes) as the process's root resolves them."""
    interp: set[tuple[int, int]] = set()
    needed: set[tuple[int, int]] = set()
    if static is None:
        return interp, needed
    closure = static.closure
    key = _inode(facts.host_path(closure.interpreter_path)) if closure.interpreter_path \
        else None
    if key:
        interp.add(key)
    for lib in closure.libraries:
        key = _inode(lib.host_path) or _inode(facts.host_path(lib.real_path or lib.path or ""))
        if key:
            needed.add(key)
    return interp, needed


def mapped_libraries(facts: procfs.ProcessFacts, static: Any) -> list[MappedLibrary]:
    """Every shared object in /proc/PID/maps, with its role (see the module docstring)."""
    from tracer.process.maps import process_maps

    interp, needed = _declared(facts, static)
    exe_key = _inode(facts.exe_host_path)
    seen: dict[str, MappedLibrary] = {}
    for m in process_maps(facts.pid):
        path = m.path
        if not m.is_file or path in seen or path.endswith(" (deleted)") \
                or not is_shared_object(path):
            continue
        major, minor = (int(x, 16) for x in m.dev.split(":"))
        host = facts.host_path(path)
        key = _inode(host) or (os.makedev(major, minor), m.inode)
        if key == exe_key:
            continue
        role = "interpreter" if key in interp else "needed" if key in needed else "dlopen"
        seen[path] = MappedLibrary(path, host, role, m.inode)
    order = {"interpreter": 0, "needed": 1, "dlopen": 2}
    return sorted(seen.values(), key=lambda m: (order[m.role], m.path))


def open_files(facts: procfs.ProcessFacts, problems: list[str],
               nameservers: tuple[str, ...] | None = None) -> list[OpenFile]:
    """Open regular files (psutil) and sockets (the process's own namespace's tables), each
    with a trace-style kind."""
    import psutil

    classifier = Classifier(nameservers=nameservers)
    out: list[OpenFile] = []
    try:
        for f in psutil.Process(facts.pid).open_files():
            kind = classifier.kind("open", f.path, False)
            out.append(OpenFile(f.fd, f.path, kind.value))
    except psutil.AccessDenied:
        problems.append("open files: permission denied (run as the process's owner or root)")
        return out
    except psutil.NoSuchProcess:
        problems.append("the process exited while it was being read")
        return out
    try:
        out += [_socket(s, classifier) for s in process_sockets(facts.pid)]
    except PermissionError:
        problems.append(f"sockets: /proc/{facts.pid}/fd or /proc/{facts.pid}/net not "
                        "readable (run as the process's owner or root)")
    except OSError:
        problems.append("the process exited while it was being read")
    return out


def _socket(s: ProcSocket, classifier: Classifier) -> OpenFile:
    """A socket as the trace would name a connect to it: the peer when connected, else its
    own address (a listening or unconnected socket is the program's own: `network`)."""
    if s.family == "AF_UNIX":
        path = s.local or "(unnamed)"
        kind = classifier.kind("connect", path, False) if path.startswith("/") \
            else AccessKind.NETWORK
    else:
        path = s.remote or s.local
        kind = classifier.kind("connect", s.remote, False) if s.remote \
            else AccessKind.NETWORK
    return OpenFile(s.fd, path, kind.value, s.family, s.status)


# -- findings --------------------------------------------------------------------------------
def snapshot_analysis(snap: Snapshot, facts: RunFacts, rules: Any = None) -> Any:
    """The recording pipeline over what is mapped and open, as if a trace had seen it: an
    `Analysis` with source "snapshot", each finding marked so too."""
    import dataclasses

    rec = Recording(snapshot_header(snap, facts), facts=facts, rules=rules)
    for a in snapshot_accesses(snap):
        rec.on_access(a)
    analysis = rec.finish(None, source="snapshot")
    findings = tuple(dataclasses.replace(f, source="snapshot") for f in analysis.findings)
    return dataclasses.replace(analysis, findings=findings)


def snapshot_header(snap: Snapshot, facts: RunFacts) -> dict[str, Any]:
    """What a trace header would say about this process (static facts, argv, cwd)."""
    p = snap.process
    try:
        cwd: str | None = os.readlink(f"/proc/{p.pid}/cwd")
    except OSError:
        cwd = None
    return {"type": "header", "argv": list(p.cmdline), "binary": p.exe,
            "static": facts.summary, "cwd": cwd, "sandbox": None, "env": dict(snap.env),
            "resolv_conf": snap.resolv_conf, "mode": "snapshot"}


def snapshot_accesses(snap: Snapshot) -> list[Any]:
    """What is mapped and open, as the accesses a trace would have recorded for it."""
    from tracer.trace.model import Access

    out: list[Access] = []
    pid = snap.process.pid
    for lib in snap.libraries:
        kind = {"interpreter": AccessKind.INTERPRETER, "needed": AccessKind.STARTUP_LIBRARY,
                "dlopen": AccessKind.DLOPEN_LIBRARY}[lib.role]
        out.append(Access(seq=len(out) + 1, time=0.0, pid=pid, tid=pid, syscall="mmap",
                          path=lib.path, result="ok", kind=kind, hidden=lib.role == "dlopen",
                          host_path=lib.host_path if lib.host_path != lib.path else None))
    for f in snap.files:
        kind = AccessKind(f.kind)
        if kind is AccessKind.NETWORK:
            continue  # the program's own sockets: listed by the snapshot, no dependency
        out.append(Access(seq=len(out) + 1, time=0.0, pid=pid, tid=pid,
                          syscall="connect" if f.family else "openat", path=f.path,
                          result="ok", kind=kind,
                          hidden=kind in (AccessKind.CONFIG, AccessKind.SOCKET,
                                          AccessKind.DLOPEN_LIBRARY),
                          family=f.family))
    return out


# -- rendering ----------------------------------------------------------------------------
def render_text(snap: Snapshot) -> str:
    p = snap.process
    lines = [f"process {p.pid} ({p.name})" + (f", pid {p.own_pid} in its namespace"
                                               if p.own_pid != p.pid else "")
             + (f", namespaces: {' '.join(p.foreign_ns)}" if p.foreign_ns else "")]
    lines.append(f"  exe: {p.exe}" + (f" (host: {p.exe_host_path})" if p.in_container else ""))
    b = _binary_dict(snap.static, snap.env)
    if b is not None:
        cgo = b["cgo"]
        resolver = b["resolver"]
        now = resolver.get("run_time")
        lines.append(f"  {b['go_version'] or 'not Go'}; cgo "
                     + (f"linked ({', '.join(cgo['std_packages']) or 'no std package'})"
                        if cgo["linked"] else "not linked")
                     + f"; resolver {resolver['implementation']}"
                     + (f" in the binary, {now['implementation']} at run time "
                        f"({now['reason']})" if now else "")
                     + f", user lookup {b['user_lookup']['implementation']}")
        lines.append(f"  interpreter: {b['interpreter'] or '-'}; NEEDED: "
                     f"{', '.join(b['needed']) or '-'}")
    lines.append(f"mapped libraries ({len(snap.libraries)}; dlopen = mapped but not in the "
                 "NEEDED closure):")
    for lib in snap.libraries:
        host = f"  (host: {lib.host_path})" if lib.host_path != lib.path else ""
        lines.append(f"  {lib.role:<11} {lib.path}{host}")
    lines.append(f"open files and sockets ({len(snap.files)}):")
    for f in snap.files:
        extra = " ".join(x for x in (f.family, f.status) if x)
        lines.append(f"  {f.kind:<15} {f.path}" + (f"  ({extra})" if extra else ""))
    if snap.findings:
        lines.append(f"findings ({len(snap.findings)}, from a snapshot):")
        for fd in snap.findings:  # titles name the calling code, which a snapshot lacks
            what = ", ".join(fd.paths) or fd.title
            lines.append(f"  {fd.severity.value:<7} {fd.id}: {what}")
            for i, line in enumerate(fd.fix.splitlines()):
                lines.append(f"          {'fix: ' if i == 0 else '     '}{line}")
    for problem in snap.problems:
        lines.append(f"note: {problem}")
    return "\n".join(lines)
