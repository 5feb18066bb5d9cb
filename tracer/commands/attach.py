"""`cgotrace attach`: pick a live process, say why it cannot be traced, trace it, detach.

`attach_process(AttachOptions) -> AttachResult` is the whole session: resolve the target
(`--name` through psutil), refuse early with a remedy (no such PID, already traced, ptrace
refused by Yama, ownership or a missing CAP_SYS_PTRACE), read the binary's static facts
through /proc/PID/exe (works for a binary that exists only inside a container's root),
seize every thread (`tracer.engine.stepping`, driving the
same `EventCollector` as `run`), trace until the duration ends, SIGINT/SIGTERM
or the process exits, detach, and return the same summary `run` builds. The trace file's
header marks the attach (`attach`: pid, NSpid, start time); its exit line carries the end
time and how the attach ended (docs/trace-format.md).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tracer.errors import (
    AlreadyTracedError,
    NotFoundError,
    PermissionDeniedError,
    TracerError,
    UsageError,
)
from tracer.process import procfs
from tracer.recording.collector import AttributionHook, EventCollector
from tracer.recording.header import RunFacts, recorded_env, resolv_conf, static_facts
from tracer.recording.pipeline import Recording
from tracer.trace.model import Access, ExitStatus, ProcessEvent, Repeats

STEPPING_NOTE = ("cgotrace: attach stops the process at every syscall entry and exit "
                 "(PTRACE_SYSCALL; no seccomp filter is put into a running process), so it "
                 "runs slower while attached")


@dataclass
class AttachOptions:
    pid: int
    duration: float | None = None  # None: until SIGINT/SIGTERM or the process exits
    output: str | None = None
    attributor: AttributionHook | None = None
    on_access: Callable[[Access], None] | None = None  # extra consumer (tests)
    # extra consumer of repeats (tests): (access, totals so far, added since the last)
    on_repeats: Callable[[Access, Repeats, Repeats], None] | None = None
    on_attached: Callable[[Any], None] | None = None  # called with the engine once seized
    handle_signals: bool = True  # SIGINT/SIGTERM/SIGHUP end the attach
    rules: Any = None  # probes.ruleset rules (None: the packaged ones)


@dataclass
class AttachResult:
    pid: int
    summary: dict[str, Any]
    threads: int  # seized at the start
    start_time: float
    end_time: float
    ended: ExitStatus | None  # the process's own end, when it exited during the attach
    how: str  # "duration", "signal SIGINT", "process exited ...", ...
    stats: dict[str, int] = field(default_factory=dict)
    events: list[ProcessEvent] = field(default_factory=list)
    analysis: Any = None  # probes.records.Analysis: findings, as `run` reports them


# -- choosing the target -------------------------------------------------------------
def find_by_name(name: str) -> int:
    """The one process whose name, executable basename or argv[0] basename is `name`.

    NotFoundError when none matches; UsageError listing the candidates when several do.
    """
    import psutil

    me = os.getpid()
    found: list[tuple[int, str]] = []
    for proc in psutil.process_iter(["pid", "name", "exe", "cmdline"]):
        info = proc.info
        if info["pid"] == me:
            continue
        names = {info.get("name") or ""}
        names.add(os.path.basename(info.get("exe") or ""))
        cmd = info.get("cmdline") or []
        if cmd:
            names.add(os.path.basename(cmd[0]))
        if name in names:
            found.append((info["pid"], " ".join(cmd) or info.get("name") or "?"))
    if not found:
        raise NotFoundError(f"no process named {name!r}",
                            help="list candidates with `ps -eo pid,comm,args`")
    if len(found) > 1:
        listing = ", ".join(f"{pid} ({cmd[:60]})" for pid, cmd in sorted(found)[:10])
        raise UsageError(f"--name {name!r} matches {len(found)} processes: {listing}",
                         help="pass the PID instead")
    return found[0][0]


# -- why ptrace is refused -----------------------------------------------------------
def diagnose_refusal(pid: int, target: procfs.ProcessFacts, me: procfs.Creds,
                     yama: int | None, err: int = errno.EPERM,
                     descendant: bool = False) -> PermissionDeniedError:
    """The one-line reason (and fix) the kernel refused PTRACE_SEIZE, most specific first:
    another tracer, Yama's ptrace_scope, ownership, then capabilities."""
    if target.tracer_pid:
        return already_traced(pid, target.tracer_pid)
    cmd = f"cgotrace attach {pid}"
    if yama == 3:
        return PermissionDeniedError(
            f"ptrace of {pid} refused: Yama ptrace_scope is 3 (ptrace disabled for everyone)",
            help="only a reboot with kernel.yama.ptrace_scope set lower at boot re-enables it")
    if yama == 2 and not me.has_sys_ptrace:
        return PermissionDeniedError(
            f"ptrace of {pid} refused: Yama ptrace_scope is 2 (admin only) and cgotrace "
            "lacks CAP_SYS_PTRACE", help=f"run `sudo {cmd}`")
    if yama == 1 and not me.has_sys_ptrace and not descendant:
        return PermissionDeniedError(
            f"ptrace of {pid} refused: Yama ptrace_scope is 1 (only a parent may trace its "
            "children)",
            help=f"run `sudo {cmd}`, or allow it until reboot with "
                 "`sudo sysctl kernel.yama.ptrace_scope=0`")
    my_uid = me.uids[0]
    if not me.has_sys_ptrace and (set(target.creds.uids) != {my_uid}
                                  or set(target.creds.gids) != {me.gids[0]}):
        owner = _user_name(target.creds.uids[0])
        return PermissionDeniedError(
            f"ptrace of {pid} refused: it belongs to {owner} (uid {target.creds.uids[0]}) "
            f"and cgotrace runs as uid {my_uid} without CAP_SYS_PTRACE",
            help=f"run `sudo -u {owner} {cmd}` or `sudo {cmd}`")
    if not me.has_sys_ptrace:
        why = ("it is not dumpable (setuid, or prctl PR_SET_DUMPABLE 0)"
               if not target.creds.dumpable else
               "it holds capabilities cgotrace lacks"
               if target.creds.cap_permitted & ~me.cap_permitted else
               "the kernel requires it here")
        return PermissionDeniedError(
            f"ptrace of {pid} refused: cgotrace lacks CAP_SYS_PTRACE and {why}",
            help=f"run `sudo {cmd}`; in a container add the capability "
                 "(docker/podman run --cap-add=SYS_PTRACE)")
    return PermissionDeniedError(
        f"ptrace of {pid} refused ({errno.errorcode.get(err, err)}) although cgotrace has "
        "CAP_SYS_PTRACE: a security module (SELinux, AppArmor) or a seccomp policy of "
        "cgotrace's own container forbids it",
        help="check the audit log (`journalctl -k | grep -i ptrace`) or run outside that "
             "confinement")


def already_traced(pid: int, tracer: int) -> AlreadyTracedError:
    who = _comm(tracer)
    return AlreadyTracedError(
        f"process {pid} is already traced by process {tracer}{f' ({who})' if who else ''}",
        help=f"detach that tracer first (end it, or `kill {tracer}` if it is yours); a "
             "process has only one tracer")


def _comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"#{uid}"


def preflight(pid: int) -> procfs.ProcessFacts:
    """Refuse early, with the reason: no such process, a zombie, another tracer."""
    if pid <= 0:
        raise NotFoundError(f"no such process: {pid}")
    if pid == os.getpid():
        raise UsageError("cgotrace cannot attach to itself")
    facts = procfs.process_facts(pid)
    if facts.tracer_pid:
        raise already_traced(pid, facts.tracer_pid)
    return facts


# -- the session ------------------------------------------------------------------------
def _static(facts: procfs.ProcessFacts) -> RunFacts:
    """Static facts of the running binary, read through /proc/PID/exe and resolved inside
    the process's own root (/proc/PID/root) when it lives in a container."""
    root = None
    if facts.in_container or facts.root != "/":
        root = f"/proc/{facts.pid}/root"
    return static_facts(facts.exe_host_path, root, facts.exe if root else None, cached=False)


def _header(facts: procfs.ProcessFacts, static: dict[str, Any]) -> dict[str, Any]:
    """The trace header of an attach: what run writes (argv, binary, static facts, cwd,
    the environment variables that change which files Go reads), marked as an attach."""
    cwd = None
    with contextlib.suppress(OSError):
        cwd = os.readlink(f"/proc/{facts.pid}/cwd")
    env = procfs.environ(facts.pid)
    binary = facts.exe or facts.exe_host_path
    real = binary
    if facts.exe is not None and not facts.in_container:
        with contextlib.suppress(OSError):
            real = os.path.realpath(binary)
    return {"argv": list(facts.cmdline), "binary": binary, "binary_realpath": real,
            "static": static, "cwd": cwd, "env": recorded_env(env), "sandbox": None,
            "resolv_conf": resolv_conf(f"/proc/{facts.pid}/root/etc/resolv.conf"),
            "mode": "attach",
            "attach": {"pid": facts.pid, "nspid": list(facts.nspid), "name": facts.name,
                       "exe": facts.exe, "root": facts.root,
                       "namespaces": list(facts.foreign_ns), "start_time": None}}


def attach_process(opts: AttachOptions) -> AttachResult:
    """Attach to `opts.pid`, trace, detach; see the module docstring. Raises the typed
    errors of `preflight`/`diagnose_refusal`; after the seize every path detaches."""
    from tracer.engine.stepping import AttachEngine, SeizeRefused

    facts = preflight(opts.pid)
    run_facts = _static(facts)
    exe = facts.exe or facts.exe_host_path
    header = _header(facts, run_facts.summary)
    host_path_of = None
    if facts.in_container or facts.root != "/":  # another mount namespace: /proc/PID/root
        host_path_of = facts.host_path
    rec = Recording(header, facts=run_facts, exe_paths=[exe], output=opts.output,
                    rules=opts.rules, host_path_of=host_path_of, extra=opts.on_access,
                    extra_repeats=opts.on_repeats)
    collector = rec.collector(opts.attributor)
    collector.adopt(opts.pid, exe)
    from tracer.engine import native

    module, _why = native.load()
    engine = AttachEngine(opts.pid, duration=opts.duration, native=module)
    try:
        try:
            nthreads = engine.seize()
        except SeizeRefused as e:
            raise _refusal(opts.pid, e.errno) from None
        header["attach"]["start_time"] = engine.start_time
        rec.start()
        nspids, how = _follow(opts, facts, engine, collector)
        return _result(opts, facts, engine, collector, rec, nthreads, nspids, how)
    finally:
        rec.close()


def _follow(opts: AttachOptions, facts: procfs.ProcessFacts, engine: Any,
            collector: EventCollector) -> tuple[dict[int, int], str]:
    """Trace until the process ends, the duration is over or a signal stops us; detach.
    Returns the namespace-local tids of a process in another pid namespace and how the
    attach ended."""
    nspids = procfs.nspid_map(opts.pid) if "pid" in facts.foreign_ns else {}
    received: list[int] = []
    restore = _stop_on_signals(engine, received) if opts.handle_signals else None
    try:
        if opts.on_attached is not None:
            opts.on_attached(engine)
        engine.run(collector)
    finally:
        if nspids:  # threads started during the attach, while they are still there
            nspids.update(procfs.nspid_map(opts.pid))
        engine.detach()
        if restore is not None:
            restore()
    return nspids, _how(engine.ended, received, opts.duration)


def _result(opts: AttachOptions, facts: procfs.ProcessFacts, engine: Any,
            collector: EventCollector, rec: Recording, nthreads: int,
            nspids: dict[int, int], how: str) -> AttachResult:
    """Finish the recording with the attach window and say how the attach ended."""
    cs = collector.stats
    stats = {"stops": engine.stops, "accesses": cs.accesses, "repeats": cs.repeats,
             "unknown": cs.lost,
             "attributor_errors": cs.attributor_errors, "deferred_walks": cs.deferred,
             "capture_misses": cs.capture_misses, "threads": nthreads,
             "native_resumed": engine.native_resumed}
    end = engine.end_time or time.time()
    status = engine.ended or ExitStatus(code=None)
    ending = {"end_time": end, "ended": how, "detached": engine.ended is None,
              "nspid": {str(k): v for k, v in nspids.items()}}
    analysis = rec.finish(status, stats=stats, attach=ending)
    summary = rec.summary.summary(engine.ended)
    summary["attach"] = {"pid": facts.pid, "nspid": list(facts.nspid),
                         "start_time": engine.start_time, "end_time": end,
                         "ended": how, "namespaces": list(facts.foreign_ns),
                         "tid_in_namespace": nspids}
    return AttachResult(pid=opts.pid, summary=summary, threads=nthreads,
                        start_time=engine.start_time, end_time=end, ended=engine.ended,
                        how=how, stats=stats, events=rec.events, analysis=analysis)


def _stop_on_signals(engine: Any, received: list[int]) -> Callable[[], None]:
    """SIGINT/SIGTERM/SIGHUP end the attach (then detach) instead of killing cgotrace with
    the process still seized. Returns the function that restores the old handlers."""
    import signal

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.getsignal(s) for s in signals}

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        engine.request_stop()

    for s in signals:
        signal.signal(s, handler)

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)

    return restore


def _refusal(pid: int, err: int) -> Exception:
    if err == errno.ESRCH:
        return NotFoundError(f"no such process: {pid}")
    if err != errno.EPERM:
        return TracerError(f"PTRACE_SEIZE of {pid} failed: {os.strerror(err)}")
    try:
        facts = procfs.process_facts(pid)
    except NotFoundError:
        return NotFoundError(f"process {pid} exited before it could be attached")
    return diagnose_refusal(pid, facts, procfs.own_creds(), procfs.yama_ptrace_scope(), err,
                            descendant=_is_descendant(pid))


def _is_descendant(pid: int) -> bool:
    me = os.getpid()
    for _ in range(64):
        try:
            with open(f"/proc/{pid}/status") as f:
                ppid = int(procfs.parse_status(f.read()).get("PPid", "0"))
        except (OSError, ValueError):
            return False
        if ppid == me:
            return True
        if ppid <= 1:
            return False
        pid = ppid
    return False


def _how(ended: ExitStatus | None, received: list[int], duration: float | None) -> str:
    if ended is not None:
        if ended.signal is not None:
            return f"process exited: killed by {ended.signal_name}"
        if ended.code is not None:
            return f"process exited with code {ended.code}"
        return "process exited"
    if received:
        import signal

        return f"stopped by {signal.Signals(received[0]).name}, detached"
    if duration is not None:
        return f"duration of {duration:g} s over, detached"
    return "detached"
