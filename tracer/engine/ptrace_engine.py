"""The ptrace engine: waitpid(-1, __WALL) -> typed stops -> collector calls; the resume policy.

Stops and what the engine does:

- seccomp stop (a watched call, entry): one PTRACE_GET_SYSCALL_INFO gives nr, arch, args,
  ip and sp; the collector decodes it through a `ThreadView` (process_vm_readv; registers
  only if the attributor asks). When it wants the result, PTRACE_SYSCALL so the thread
  reports its syscall-exit (it now "owes" an exit stop); otherwise PTRACE_CONT.
- syscall-exit stop: the result, from one more GET_SYSCALL_INFO, to `on_result`;
  PTRACE_CONT. An entry stop seen instead (one we did not ask for) keeps the debt.
- clone/fork/vfork events: GETEVENTMSG gives the new tid (under SEIZE it starts with a
  PTRACE_EVENT_STOP, which may arrive before the parent's event).
- exec event: GETEVENTMSG gives the former tid (exec from a non-leader thread reports
  under the leader's tid); the collector re-keys and flushes.
- PTRACE_EVENT_STOP with a stop signal: group-stop, PTRACE_LISTEN (SIGSTOP/SIGCONT of the
  program behave as without the tracer); with SIGTRAP: new thread or interrupt, resume.
- signal-delivery stop: re-inject the signal (SIGURG preemption is constant); for fault
  signals PTRACE_GETSIGINFO gives the faulting address for the collector.
- exited/killed: to the collector (flush, leader-first exit, the run's status).

Every resume is PTRACE_CONT unless the thread owes a syscall-exit stop. ESRCH from any
request means the thread vanished (exit_group, exec): its exit report follows or never
comes, and either way the loop carries on.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, Any

from tracer import ptrace
from tracer.engine.base import FAULT_SIGNALS, Capabilities, Collector, Want

if TYPE_CHECKING:
    from tracer.engine.base import Registers
    from tracer.trace.model import ExitStatus

__all__ = ["PtraceEngine", "PtraceView"]

WALL = 0x40000000
SYSCALL_STOP = signal.SIGTRAP | 0x80
STOP_SIGNALS = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
_SPAWN_KIND = {ptrace.EVENT_CLONE: "clone", ptrace.EVENT_FORK: "fork",
               ptrace.EVENT_VFORK: "vfork"}


class ProcessReader:
    """`ProcessMemory` of one process (process_vm_readv on its pid)."""

    __slots__ = ("pid",)

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def read(self, addr: int, n: int) -> bytes:
        return ptrace.read_memory(self.pid, addr, n)

    def read_pages(self, pages: list[int]) -> list[bytes]:
        return ptrace.read_pages(self.pid, pages)


class PtraceView:
    """The `ThreadView` of a ptrace-stopped thread (one object, re-pointed per stop)."""

    __slots__ = ("_regs", "full", "pid", "tid")

    def __init__(self) -> None:
        self.tid = 0
        self.pid = 0
        self.full = True  # registers and the result are always available at a ptrace stop
        self._regs: Any = None

    def at(self, tid: int, pid: int) -> PtraceView:
        self.tid = tid
        self.pid = pid
        self._regs = None
        return self

    def with_regs(self, regs: Any) -> PtraceView:
        """The registers already read at this stop (the native core's PTRACE_GETREGS)."""
        self._regs = regs
        return self

    def regs(self) -> Registers | None:
        if self._regs is None:
            try:
                self._regs = ptrace.get_regs(self.tid)
            except ptrace.PtraceRequestError:
                return None
        regs: Registers = self._regs
        return regs

    def regs_of(self, tid: int) -> Registers | None:
        """Another thread's registers when it is in a ptrace-stop now, else None (running
        threads refuse the request: ESRCH)."""
        try:
            regs: Registers = ptrace.get_regs(tid)
        except ptrace.PtraceRequestError:
            return None
        return regs

    def read(self, addr: int, n: int) -> bytes:
        return ptrace.read_memory(self.tid, addr, n)

    def read_cstring(self, addr: int, limit: int) -> bytes | None:
        return ptrace.read_cstring(self.tid, addr, limit)

    def read_pages(self, pages: list[int]) -> list[bytes]:
        return ptrace.read_pages(self.pid, pages)

    def process_memory(self) -> ProcessReader:
        """This process's memory, readable after the stop (deferred walks)."""
        return ProcessReader(self.pid)


def spawned_pid(new: int, event: int) -> int:
    """fork/vfork events are new processes; clone usually a thread (ask /proc to be sure)."""
    if event != ptrace.EVENT_CLONE:
        return new
    from tracer.process.maps import tgid

    return tgid(new)


class PtraceEngine:
    """Trace a seized process (about to exec) and everything it starts, two stops per
    watched call (seccomp RET_TRACE + syscall exit)."""

    name = "ptrace"
    caps = Capabilities(registers=True, results="all", blocks_filter=False)

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.owes_exit: set[int] = set()  # threads resumed with PTRACE_SYSCALL
        self.stops = 0
        self._view = PtraceView()

    def run(self, collector: Collector) -> ExitStatus:
        waitpid = os.waitpid
        seccomp_stop = ptrace.EVENT_SECCOMP
        collector.start(self.pid)
        deferred = getattr(collector, "run_deferred", None)  # before blocking: seam 1
        while collector.tracing:
            if deferred is not None:
                deferred()
            try:
                tid, status = waitpid(-1, WALL)
            except ChildProcessError:
                break
            self.stops += 1
            self.handle(collector, tid, status, seccomp_stop)
        return collector.finish()

    def detach(self) -> None:
        """Launched programs are never detached: they die with the tracer (EXITKILL)."""

    def handle(self, collector: Collector, tid: int, status: int,
               seccomp_stop: int = ptrace.EVENT_SECCOMP) -> None:
        """One waitpid report."""
        if status & 0x7F == 0x7F:
            sig = (status >> 8) & 0xFF
            event = (status >> 16) & 0xFF
            if event == seccomp_stop:
                self.seccomp(collector, tid)
            elif sig == SYSCALL_STOP:
                self.syscall_stop(collector, tid)
            elif event:
                self.event(collector, tid, event, sig)
            else:
                self.signal(collector, tid, sig)
        else:
            self.owes_exit.discard(tid)
            collector.on_exit(tid, status)

    def resume(self, tid: int, sig: int = 0) -> None:
        try:
            if tid in self.owes_exit:
                ptrace.syscall(tid, sig)
            else:
                ptrace.cont(tid, sig)
        except ptrace.PtraceRequestError:
            pass  # gone (ESRCH): its exit report, if any, follows

    # -- stops --------------------------------------------------------------------------
    def seccomp(self, collector: Collector, tid: int) -> None:
        try:
            info = ptrace.syscall_info(tid)
        except ptrace.PtraceRequestError:
            return
        view = self._view.at(tid, collector.pid_of(tid))
        want = collector.on_entry(view, info.nr, info.arch, info.args, info.ip, info.sp)
        try:
            if want is Want.CONTINUE:
                collector.on_result(tid, None, False)
                ptrace.cont(tid)
            else:
                self.owes_exit.add(tid)
                ptrace.syscall(tid)
        except ptrace.PtraceRequestError:
            pass

    def syscall_stop(self, collector: Collector, tid: int) -> None:
        try:
            info = ptrace.syscall_info(tid)
        except ptrace.PtraceRequestError:
            self.owes_exit.discard(tid)
            collector.on_result(tid, None, False)
            return
        if info.op == ptrace.SYSCALL_INFO_ENTRY:
            pass  # an entry stop we did not ask for: the exit is still owed
        else:
            self.owes_exit.discard(tid)
            collector.on_result(tid, info.rval, True)
        self.resume(tid)

    def event(self, collector: Collector, tid: int, event: int, sig: int) -> None:
        if event == ptrace.EVENT_STOP:
            collector.pid_of(tid)
            if sig in STOP_SIGNALS:
                try:  # noqa: SIM105 (hot path)
                    ptrace.listen(tid)
                except ptrace.PtraceRequestError:
                    pass
                return
        elif event in _SPAWN_KIND:
            try:
                new = ptrace.get_eventmsg(tid)
            except ptrace.PtraceRequestError:
                new = 0
            if new:
                collector.on_spawn(tid, new, spawned_pid(new, event),
                                   _SPAWN_KIND[event])
        elif event == ptrace.EVENT_EXEC:
            try:
                former = ptrace.get_eventmsg(tid)
            except ptrace.PtraceRequestError:
                former = tid
            pid = collector.pid_of(tid)  # after exec the thread has the leader's tid
            if former != tid and former in self.owes_exit:
                self.owes_exit.discard(former)
                self.owes_exit.add(tid)
            collector.on_exec(tid, former, pid)
        self.resume(tid)

    def signal(self, collector: Collector, tid: int, sig: int) -> None:
        if sig in FAULT_SIGNALS:
            addr, code = 0, 0
            try:
                info = ptrace.get_siginfo(tid)
                addr = int(info._sigfault._addr or 0)
                code = int(info.si_code)
            except ptrace.PtraceRequestError:
                pass
            collector.on_signal(tid, sig, addr, code)
        self.resume(tid, sig)
