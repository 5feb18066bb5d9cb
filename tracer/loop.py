"""The event loop: waitpid(-1, __WALL) -> typed stops -> decoded accesses; the resume policy.

Stops and what the loop does (docs/ptrace-facts.md):

- seccomp stop (a watched call, entry): decode with one GET_SYSCALL_INFO and one
  process_vm_readv per string, classify, ask the attributor, then PTRACE_SYSCALL so the
  thread reports its syscall-exit (the thread now "owes" an exit stop).
- syscall-exit stop: the result, from one more GET_SYSCALL_INFO; emit the access;
  PTRACE_CONT.
- clone/fork/vfork events: track the new tid (under SEIZE it starts with a
  PTRACE_EVENT_STOP, which may arrive before the parent's event).
- exec event: GETEVENTMSG gives the former tid (exec from a non-leader thread reports
  under the leader's tid): re-key, and flush the other threads of the process, killed by
  the exec, with result "unknown". Read the new image's mappings to find the interpreter.
- PTRACE_EVENT_STOP with a stop signal: group-stop, PTRACE_LISTEN (SIGSTOP/SIGCONT of
  the program behave as without the tracer); with SIGTRAP: new thread or interrupt, resume.
- signal-delivery stop: re-inject the signal (SIGURG preemption is constant); for fault
  signals record the faulting address (PTRACE_GETSIGINFO si_addr) and the thread.
- exited/killed: a thread with an access still pending (killed by exit_group at a stop)
  is flushed with result "unknown"; the leader's report ends the process (the leader may
  exit long before its threads: the loop runs until no traced tid remains).

Every resume is PTRACE_CONT unless the thread owes a syscall-exit stop. ESRCH from any
request means the thread vanished (exit_group, exec): its exit report follows or never
comes, and either way the loop carries on.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Protocol

from tracer import ptrace
from tracer.classify import Classifier
from tracer.model import Access, AccessKind, Attribution, ExitStatus, ProcessEvent, Via
from tracer.syscalls.decode import RESTART_ERRNOS, result_name
from tracer.syscalls.entry import AccessDraft, EntryDecoder

__all__ = ["AccessDraft", "Attributor", "Loop", "LoopStats"]

WALL = 0x40000000
_SYSCALL_STOP = signal.SIGTRAP | 0x80
_STOP_SIGNALS = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
_LAUNCH_EXEC = Attribution(via=Via.EXEC)  # the launched program's exec: no stack of ours
MAX_SHARED_ATTRIBUTIONS = 65_536  # bound on the same_as table (cleared when full)
FAULT_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL,
                           signal.SIGABRT, signal.SIGSYS})


class Attributor(Protocol):
    """Names the Go code behind an access. Called with the thread stopped."""

    def __call__(self, pid: int, tid: int, draft: AccessDraft) -> Attribution | None: ...

    def on_exec(self, pid: int, tid: int, exe: str) -> None: ...

    def on_exit(self, pid: int) -> None: ...


class LoopStats:
    __slots__ = ("accesses", "attributor_errors", "lost", "stops")

    def __init__(self) -> None:
        self.stops = 0
        self.accesses = 0
        self.lost = 0  # accesses flushed with result "unknown"
        self.attributor_errors = 0


def _tgid(tid: int) -> int:
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return tid


def _interpreter_ranges(pid: int, exe: str | None
                        ) -> tuple[str | None, tuple[tuple[int, int], ...]]:
    """At an exec stop only the kernel's mappings exist: the binary, its interpreter, the
    vdso and the stack. File mappings that are not the binary are the interpreter's."""
    ranges: list[tuple[int, int]] = []
    interp: str | None = None
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) < 6 or not parts[5].startswith("/"):
                    continue
                path = parts[5].rstrip("\n")
                if path == exe or path.endswith(" (deleted)"):
                    continue
                lo, _, hi = parts[0].partition("-")
                ranges.append((int(lo, 16), int(hi, 16)))
                interp = interp or path
    except OSError:
        pass
    return interp, tuple(ranges)


def exit_status(status: int, fault: tuple[int, int, int] | None = None) -> ExitStatus:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name: str | None = signal.Signals(sig).name
        except ValueError:
            name = f"SIG{sig}"
        addr = fault[2] if fault is not None and fault[1] == sig else None
        return ExitStatus(signal=sig, signal_name=name, core_dumped=os.WCOREDUMP(status),
                          fault_address=addr)
    return ExitStatus(code=os.WEXITSTATUS(status))


class Loop:
    """Trace `pid` (already seized, about to exec) and everything it starts.

    `on_access(Access)` and `on_event(ProcessEvent)` receive records as they complete;
    `run()` returns the main program's ExitStatus once no traced thread remains.
    """

    def __init__(self, pid: int, *, on_access: Callable[[Access], None],
                 on_event: Callable[[ProcessEvent], None] | None = None,
                 classifier: Classifier | None = None,
                 decoder: EntryDecoder | None = None,
                 attributor: Attributor | None = None,
                 interpreter_of: Callable[[str], str | None] | None = None,
                 debug: bool = False):
        self.main_pid = pid
        self.tid2pid: dict[int, int] = {pid: pid}
        self.pending: dict[int, AccessDraft] = {}
        self.loader: dict[int, tuple[tuple[int, int], ...]] = {}
        self.exe: dict[int, str] = {}
        self.fault: dict[int, tuple[int, int, int]] = {}
        self.status: ExitStatus | None = None
        self.stats = LoopStats()
        self._on_access = on_access
        self._on_event = on_event or (lambda e: None)
        self._classifier = classifier or Classifier()
        self._decoder = decoder or EntryDecoder()
        self._attributor = attributor
        self._interpreter_of = interpreter_of
        self._main_exec_done = False
        self._interp_after_exec: dict[int, tuple[int, str, str | None]] = {}
        self._seq = 0
        self._attributed: dict[int, tuple[Attribution, int]] = {}  # id -> (it, first seq)
        self._t0 = time.monotonic()
        self._debug = debug

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> ExitStatus:
        waitpid = os.waitpid
        tid2pid = self.tid2pid
        stats = self.stats
        seccomp_stop = ptrace.EVENT_SECCOMP
        while tid2pid:
            try:
                tid, status = waitpid(-1, WALL)
            except ChildProcessError:
                break
            stats.stops += 1
            if status & 0x7F == 0x7F:
                sig = (status >> 8) & 0xFF
                event = (status >> 16) & 0xFF
                if event == seccomp_stop:
                    self._seccomp(tid)
                elif sig == _SYSCALL_STOP:
                    self._syscall_stop(tid)
                elif event:
                    self._event(tid, event, sig)
                else:
                    self._signal(tid, sig)
            else:
                self._gone(tid, status)
        for tid in list(self.pending):
            self._flush_unknown(tid)
        return self.status or ExitStatus(code=None)

    def _resume(self, tid: int, sig: int = 0) -> None:
        try:
            if tid in self.pending:
                ptrace.syscall(tid, sig)
            else:
                ptrace.cont(tid, sig)
        except ptrace.PtraceRequestError:
            pass  # gone (ESRCH): its exit report, if any, follows

    def _now(self) -> float:
        return time.monotonic() - self._t0

    def _pid_of(self, tid: int) -> int:
        pid = self.tid2pid.get(tid)
        if pid is None:
            pid = self.tid2pid[tid] = _tgid(tid)
        return pid

    # -- stops --------------------------------------------------------------------------
    def _seccomp(self, tid: int) -> None:
        try:
            info = ptrace.syscall_info(tid)
        except ptrace.PtraceRequestError:
            return
        pid = self.tid2pid.get(tid) or self._pid_of(tid)
        draft = self._decoder.decode(pid, tid, info.nr, info.arch, info.args, info.ip,
                                     info.sp, time.monotonic() - self._t0)
        if draft is None:
            try:  # noqa: SIM105 (hot path)
                ptrace.cont(tid)
            except ptrace.PtraceRequestError:
                pass
            return
        ranges = self.loader.get(pid)
        loader_phase = False
        if ranges is not None:
            ip = info.ip
            for lo, hi in ranges:
                if lo <= ip < hi:
                    loader_phase = True
                    break
            else:
                del self.loader[pid]
        draft.loader_phase = loader_phase
        kind = draft.kind = self._classifier.kind(
            draft.cls, draft.path, loader_phase,
            info.args[draft.flag_arg] if draft.flag_arg is not None else 0)
        if self._attributor is None:
            pass
        elif pid == self.main_pid and not self._main_exec_done:
            # Still our launcher's process (cgotrace's Python child before its execve):
            # its stack is cgotrace's, never the program's. The exec gets no stack.
            draft.attribution = _LAUNCH_EXEC if draft.cls == "exec" else None
        elif kind is not AccessKind.RUNTIME:
            try:
                draft.attribution = self._attributor(pid, tid, draft)
            except Exception as e:
                self.stats.attributor_errors += 1
                if self._debug and self.stats.attributor_errors == 1:
                    print(f"cgotrace: attributor failed: {type(e).__name__}: {e}",
                          file=sys.stderr)
        self.pending[tid] = draft
        try:  # noqa: SIM105 (hot path)
            ptrace.syscall(tid)
        except ptrace.PtraceRequestError:
            pass

    def _syscall_stop(self, tid: int) -> None:
        draft = self.pending.pop(tid, None)
        try:
            info = ptrace.syscall_info(tid)
        except ptrace.PtraceRequestError:
            if draft is not None:
                self._finish(draft, None)
            return
        if info.op == ptrace.SYSCALL_INFO_ENTRY and draft is not None:
            self.pending[tid] = draft  # an entry stop we did not ask for: still owed
        elif draft is not None and not (info.is_error and -info.rval in RESTART_ERRNOS):
            self._finish(draft, info.rval)
        # (a call interrupted by a signal and restarted stops again: no record for it here)
        self._resume(tid)

    def _event(self, tid: int, event: int, sig: int) -> None:
        if event == ptrace.EVENT_STOP:
            self._pid_of(tid)
            if sig in _STOP_SIGNALS:
                try:  # noqa: SIM105 (hot path)
                    ptrace.listen(tid)
                except ptrace.PtraceRequestError:
                    pass
                return
        elif event in (ptrace.EVENT_CLONE, ptrace.EVENT_FORK, ptrace.EVENT_VFORK):
            self._new_task(tid, event)
        elif event == ptrace.EVENT_EXEC:
            self._exec(tid)
        self._resume(tid)

    def _new_task(self, tid: int, event: int) -> None:
        try:
            new = ptrace.get_eventmsg(tid)
        except ptrace.PtraceRequestError:
            return
        parent = self._pid_of(tid)
        # fork/vfork events are new processes; clone usually a thread (ask /proc to be sure)
        newpid = (self.tid2pid.get(new) or _tgid(new)) if event == ptrace.EVENT_CLONE else new
        self.tid2pid[new] = newpid
        if newpid != parent:
            if parent in self.exe:
                self.exe.setdefault(newpid, self.exe[parent])
            self._on_event(ProcessEvent("fork", newpid, new, self._now(),
                                        {"parent": parent, "parent_tid": tid,
                                         "vfork": event == ptrace.EVENT_VFORK}))

    def _exec(self, tid: int) -> None:
        try:
            former = ptrace.get_eventmsg(tid)
        except ptrace.PtraceRequestError:
            former = tid
        pid = self.tid2pid.get(former) or self.tid2pid.get(tid) or _tgid(tid)
        if former != tid:
            self.tid2pid.pop(former, None)
            draft = self.pending.pop(former, None)
            if draft is not None:
                draft.tid = tid
                self.pending[tid] = draft
        self.tid2pid[tid] = pid
        for other, opid in list(self.tid2pid.items()):
            if opid == pid and other != tid:  # killed by the exec, no exit report owed
                del self.tid2pid[other]
                self._flush_unknown(other)
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            exe = self.pending[tid].path if tid in self.pending else "?"
        self.exe[pid] = exe
        interp_mapped, ranges = _interpreter_ranges(pid, exe)
        detail: dict[str, object] = {"exe": exe, "former_tid": former}
        if ranges:
            self.loader[pid] = ranges
            if tid in self.pending:  # emitted right after the execve's own record
                self._interp_after_exec[tid] = (pid, exe, interp_mapped)
            else:
                self._emit_interpreter(pid, tid, exe, interp_mapped)
            detail["interpreter"] = interp_mapped
        else:
            self.loader.pop(pid, None)
        self._on_event(ProcessEvent("exec", pid, tid, self._now(), detail))
        if self._attributor is not None:
            try:
                self._attributor.on_exec(pid, tid, exe)
            except Exception:
                self.stats.attributor_errors += 1

    def _emit_interpreter(self, pid: int, tid: int, exe: str, mapped: str | None) -> None:
        named = self._interpreter_of(exe) if self._interpreter_of is not None else None
        path = named or mapped or "?"
        hidden = self._classifier.hidden(AccessKind.INTERPRETER, path, "ok", True, exe)
        self._seq += 1
        self._emit(Access(seq=self._seq, time=self._now(), pid=pid, tid=tid, syscall="execve",
                          path=path, result="ok", kind=AccessKind.INTERPRETER, hidden=hidden,
                          host_path=mapped if mapped != path else None, flags="PT_INTERP"))

    def _signal(self, tid: int, sig: int) -> None:
        if sig in FAULT_SIGNALS:
            pid = self._pid_of(tid)
            addr = 0
            try:
                info = ptrace.get_siginfo(tid)
                addr = int(info._sigfault._addr or 0)
                code = int(info.si_code)
            except ptrace.PtraceRequestError:
                code = 0
            self.fault[pid] = (tid, sig, addr)
            self._on_event(ProcessEvent("signal", pid, tid, self._now(), {
                "signal": sig, "signal_name": signal.Signals(sig).name,
                "si_code": code, "fault_address": hex(addr)}))
        self._resume(tid, sig)

    def _gone(self, tid: int, status: int) -> None:
        pid = self.tid2pid.pop(tid, None)
        if pid is None:
            return  # not ours (a pid-namespace intermediate), or already dropped at exec
        if tid in self.pending:
            self._flush_unknown(tid)
        if tid != pid:
            return
        es = exit_status(status, self.fault.pop(pid, None))
        self.loader.pop(pid, None)
        self.exe.pop(pid, None)
        self._on_event(ProcessEvent("exit", pid, tid, self._now(), es.to_dict()))
        if pid == self.main_pid:
            self.status = es
        if self._attributor is not None:
            try:
                self._attributor.on_exit(pid)
            except Exception:
                self.stats.attributor_errors += 1

    # -- records ------------------------------------------------------------------------
    def _flush_unknown(self, tid: int) -> None:
        draft = self.pending.pop(tid, None)
        if draft is not None:
            self.stats.lost += 1
            self._finish(draft, None)

    def _finish(self, draft: AccessDraft, rval: int | None) -> None:
        result = "unknown" if rval is None else result_name(rval)
        pid = draft.pid
        kind = draft.kind if isinstance(draft.kind, AccessKind) else AccessKind.OTHER
        first_exec = pid == self.main_pid and not self._main_exec_done
        if kind is AccessKind.EXECUTABLE and first_exec and result == "ok":
            self._main_exec_done = True
        hidden = self._classifier.hidden(kind, draft.path, result, draft.loader_phase,
                                         self.exe.get(pid), first_exec)
        attribution = draft.attribution if isinstance(draft.attribution, Attribution) else None
        self._seq += 1
        same_as = None
        if attribution is not None:  # the attributor returns one object per distinct answer
            first = self._attributed.get(id(attribution))
            if first is not None and first[0] is attribution:
                same_as = first[1]
            else:
                if len(self._attributed) >= MAX_SHARED_ATTRIBUTIONS:
                    self._attributed.clear()
                self._attributed[id(attribution)] = (attribution, self._seq)
        self._emit(Access(seq=self._seq, time=draft.time, pid=pid, tid=draft.tid,
                          syscall=draft.syscall, path=draft.path, result=result, kind=kind,
                          hidden=hidden, flags=draft.flags, retval=rval, argv=draft.argv,
                          family=draft.family, attribution=attribution, same_as=same_as))
        if draft.cls == "exec":
            interp = self._interp_after_exec.pop(draft.tid, None)
            if interp is not None:
                self._emit_interpreter(interp[0], draft.tid, interp[1], interp[2])

    def _emit(self, access: Access) -> None:
        self.stats.accesses += 1
        self._on_access(access)
