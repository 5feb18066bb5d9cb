"""The attach engine: trace a live process without a seccomp filter, then leave it as it was.

A process we attach to cannot be given a seccomp filter: a RET_TRACE filter outlives its
tracer, and once the tracer is gone every watched call fails with ENOSYS. Nor may it be
seized with PTRACE_O_EXITKILL: the tracer's death must not kill the service. So
(docs/engines.md, "attach and snapshot"):

- seize (`seize()`): PTRACE_SEIZE every thread of /proc/PID/task with TRACESYSGOOD,
  TRACECLONE, TRACEFORK, TRACEVFORK and TRACEEXEC (never EXITKILL, never TRACESECCOMP),
  re-reading the thread list until no unseized thread remains (a thread an unseized one
  creates is caught by the re-read; one a seized thread creates is auto-attached by
  TRACECLONE), then PTRACE_INTERRUPT each into its first stop.
- step (`run()`): every resume is PTRACE_SYSCALL, so each thread stops at every syscall
  entry and exit and the engine filters. Entry and exit stops alternate per thread (the
  engine keeps track, as strace does). An entry costs one PTRACE_PEEKUSER of orig_rax;
  only a number that may be watched (natively, or as an i386 number) costs the
  GET_SYSCALL_INFO that gives the ABI, the arguments and whether it is really an entry
  (a surprise resynchronises). The exit stop of an unwatched call is resumed at once with
  no other request (the thread is remembered as inside an unwatched call). Watched entries
  go to the same collector as launch's engines (`Want` is always honoured: the exit stop
  comes anyway). Clone/exec/signal/group-stop/exit stops are the ptrace engine's, resumed with
  PTRACE_SYSCALL instead of PTRACE_CONT. With the native core (`native=`, tracer/engine/
  native.py) the loop's hot part runs in C (`_native.step`): the exit of an unwatched
  call and an entry whose number is not a candidate are resumed there, with the same two
  requests and the same `inside` set; every other report comes back to the same Python.
- stop (`request_stop()`, from any thread or a signal handler): `run()` leaves its waitpid
  at once. At start it forks a tiny "waker" child whose exit is what wakes waitpid(-1);
  the request only closes a pipe, so it is safe in a signal handler.
- detach (`detach()`): PTRACE_INTERRUPT every running thread, then at each one's next stop
  PTRACE_DETACH, passing the signal of a signal-delivery stop on (none is lost). A
  group-stopped thread stays stopped, as it was. A thread created meanwhile reports its own
  first stop and is detached too. A watched call whose exit was not seen is flushed by the
  collector as unobserved.

If the tracer dies instead (even by SIGKILL), the kernel detaches every thread and they
carry on: nothing was installed in the process.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
import time
from typing import Any

from tracer import ptrace
from tracer.engine.base import Capabilities, Collector
from tracer.engine.ptrace_engine import SYSCALL_STOP, WALL, PtraceEngine
from tracer.errors import ProcessGoneError
from tracer.syscalls.table import AUDIT_ARCH_X86_64, i386_table, x86_64_table
from tracer.trace.model import ExitStatus

__all__ = ["ATTACH_OPTIONS", "AttachEngine", "SeizeRefused", "Waker", "seize_threads"]

ATTACH_OPTIONS = (ptrace.O_TRACESYSGOOD | ptrace.O_TRACECLONE | ptrace.O_TRACEFORK
                  | ptrace.O_TRACEVFORK | ptrace.O_TRACEEXEC)
SEIZE_ROUNDS = 100  # re-reads of /proc/PID/task before giving up on a thread-spawning storm


class SeizeRefused(Exception):
    """PTRACE_SEIZE of the first thread failed; `errno` says why (the session diagnoses)."""

    def __init__(self, err: int):
        super().__init__(err)
        self.errno = err


def _threads(pid: int) -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return []


def _tracer_of(tid: int) -> int:
    try:
        with open(f"/proc/{tid}/status") as f:
            for line in f:
                if line.startswith("TracerPid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def seize_threads(pid: int) -> set[int]:
    """Seize every thread of `pid` (see the module docstring) and interrupt each.

    SeizeRefused when the kernel refuses the first seize; ProcessGoneError when the process
    has no thread left.
    """
    seized: set[int] = set()
    for _ in range(SEIZE_ROUNDS):
        fresh = [t for t in _threads(pid) if t not in seized]
        if not fresh:
            break
        for tid in fresh:
            try:
                ptrace.seize(tid, ATTACH_OPTIONS)
            except ptrace.PtraceRequestError as e:
                if e.errno == errno.ESRCH:
                    continue  # exited between the listing and the seize
                if e.errno == errno.EPERM and _tracer_of(tid) == os.getpid():
                    seized.add(tid)  # auto-attached already (created by a seized thread)
                    continue
                if not seized:
                    raise SeizeRefused(e.errno or errno.EPERM) from None
                raise
            seized.add(tid)
    if not seized:
        raise ProcessGoneError(f"process {pid} exited before it could be attached")
    for tid in seized:
        with contextlib.suppress(ptrace.PtraceRequestError):
            ptrace.interrupt(tid)
    return seized


class Waker:
    """A child process whose exit wakes a tracer blocked in waitpid(-1): at `deadline`
    seconds (the duration, kept by the child so no thread of the tracer has to win the
    GIL against the stepping loop to end it), or at once when `wake()` closes its pipe.
    `wake()` may be called from any thread or a signal handler and never blocks."""

    def __init__(self, deadline: float | None = None) -> None:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover (child)
            try:
                os.close(w)
                select.select([r], [], [], deadline)  # also returns if the tracer dies
            finally:
                os._exit(0)
        os.close(r)
        self.pid = pid
        self._w: int | None = w
        self._lock = threading.Lock()

    def wake(self) -> None:
        # a signal handler may interrupt a caller holding the lock: that caller is waking
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._w is not None:
                os.close(self._w)
                self._w = None
        finally:
            self._lock.release()

    def reap(self) -> None:
        self.wake()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


class AttachEngine(PtraceEngine):
    """The `Engine` for a process that was already running. `seize()` first, then
    `run(collector)` (it detaches before it returns), `detach()` again in a `finally`."""

    name = "attach"
    caps = Capabilities(registers=True, results="all", blocks_filter=True)

    def __init__(self, pid: int, duration: float | None = None, native: Any = None) -> None:
        super().__init__(pid)
        self.native = native  # the compiled module (native.load()), or None: pure Python
        self.native_resumed = 0  # syscall stops the C loop resumed without Python
        self.duration = duration  # seconds after the seize; None: until request_stop()
        self.seized: set[int] = set()
        self.detached = False
        self.start_time = time.time()
        self.end_time: float | None = None
        self.ended: ExitStatus | None = None  # the process's own end, if it came first
        self._inside: set[int] = set()  # threads inside an unwatched call (exit stop next)
        self._stop = threading.Event()
        self._waker: Waker | None = None
        self._collector: Collector | None = None
        self._held: int | None = None  # a thread left in a stop by an exception
        self._native = frozenset(x86_64_table())
        self._compat = frozenset(i386_table())

    # -- lifecycle ------------------------------------------------------------------
    def seize(self) -> int:
        """Seize every thread; returns how many. Raises SeizeRefused / ProcessGoneError."""
        self.seized = seize_threads(self.pid)
        self._waker = Waker(self.duration)
        self.start_time = time.time()
        return len(self.seized)

    def request_stop(self) -> None:
        """End the attach soon (any thread, or a signal handler): run() detaches, returns."""
        self._stop.set()
        if self._waker is not None:
            self._waker.wake()

    def run(self, collector: Collector) -> ExitStatus:
        self._collector = collector
        collector.start(self.pid)
        try:
            self._step(collector)
        finally:
            if collector.tracing:
                self.detach()
            else:
                self.end_time = time.time()
                self.ended = getattr(collector, "status", None) or ExitStatus(code=None)
                self._reap_waker()
        return collector.finish()

    def _step(self, collector: Collector) -> None:
        if self.native is not None:
            self._native_step(collector, self.native.step)
        else:
            self._python_step(collector)

    def _native_step(self, collector: Collector, step: Any) -> None:
        """`_python_step` with its syscall-stop filter in C (see the module doc)."""
        stop = self._stop
        inside = self._inside
        candidates = bytearray(1024)  # i386 numbers name native calls too
        for nr in self._native | self._compat:
            if 0 <= nr < len(candidates):
                candidates[nr] = 1
        cand = bytes(candidates)
        waker = self._waker.pid if self._waker is not None else -1
        tid = 0
        try:
            while collector.tracing and not stop.is_set():
                tid, status, taken = step(waker, cand, inside, self.owes_exit)
                self.stops += taken
                self.native_resumed += taken - (tid > 0)  # all but the one returned
                if tid == -1:
                    break  # no child left
                if tid == 0:
                    continue  # a signal: its Python handler ran (request_stop wakes us)
                if status >> 8 == SYSCALL_STOP and status & 0xFF == 0x7F:
                    self._watched_stop(collector, tid)  # owed, or a candidate: resumes it
                    continue
                if self._other_stop(collector, tid, status, waker):
                    break
        except BaseException:
            self._held = tid  # maybe still in its stop: detach() must not wait for it
            raise

    def _python_step(self, collector: Collector) -> None:
        """The stepping loop. Hot: locals only, and the bare ptrace function for the two
        requests of an unwatched call (PEEKUSER at the entry, PTRACE_SYSCALL). Every stop
        request (duration, signal, `request_stop`) arrives as the waker's exit."""
        waitpid = os.waitpid
        stop = self._stop
        inside = self._inside
        owes = self.owes_exit
        raw = ptrace.raw_ptrace
        resume, peek, orig_rax = ptrace.PTRACE_SYSCALL, ptrace.PTRACE_PEEKUSER, ptrace.ORIG_RAX
        candidates = self._native | self._compat  # i386 numbers name native calls too
        waker = self._waker.pid if self._waker is not None else -1
        tid = 0
        stops = 0
        try:
            while collector.tracing and not stop.is_set():
                try:
                    tid, status = waitpid(-1, WALL)
                except ChildProcessError:
                    break
                stops += 1
                if status >> 8 == SYSCALL_STOP and status & 0xFF == 0x7F:
                    if tid in inside:  # the exit of an unwatched call: nothing to read
                        inside.discard(tid)
                    elif tid in owes or raw(peek, tid, orig_rax, None) in candidates:
                        self._watched_stop(collector, tid)  # resumes it
                        continue
                    else:  # an unwatched entry: only its number was read
                        inside.add(tid)
                    raw(resume, tid, None, None)  # fails only for a thread that is gone
                    continue
                if self._other_stop(collector, tid, status, waker):
                    break
        except BaseException:
            self._held = tid  # maybe still in its stop: detach() must not wait for it
            raise
        finally:
            self.stops += stops

    def _other_stop(self, collector: Collector, tid: int, status: int, waker: int) -> bool:
        """A stop that is not a syscall stop: True when it ends the loop (the waker's exit:
        the duration is over, or a stop was requested)."""
        if status & 0x7F != 0x7F:
            if tid == waker:
                self._waker = None
                self._stop.set()
                return True
            self._inside.discard(tid)  # exited
            self.seized.discard(tid)
        self.handle(collector, tid, status)
        return False

    def _watched_stop(self, collector: Collector, tid: int) -> None:
        """The exit of a watched call (its result), or an entry whose number may be watched
        (GET_SYSCALL_INFO says the ABI, the arguments, and whether it is an entry)."""
        try:
            info = ptrace.syscall_info(tid)
        except ptrace.PtraceRequestError:
            if tid in self.owes_exit:
                self.owes_exit.discard(tid)
                collector.on_result(tid, None, False)
            return
        entry = info.op == ptrace.SYSCALL_INFO_ENTRY
        if tid in self.owes_exit:
            self.owes_exit.discard(tid)
            collector.on_result(tid, None if entry else info.rval, not entry)
            if entry:  # out of step (never seen): take this stop for the entry it is
                self._entry(collector, tid, info)
        elif entry:
            self._entry(collector, tid, info)
        # else: an exit we took for an entry; the next stop is an entry again
        self.resume(tid)
        deferred = getattr(collector, "run_deferred", None)  # after a resume: seam 1
        if deferred is not None:
            deferred()

    def _entry(self, collector: Collector, tid: int, info: ptrace.SyscallInfo) -> None:
        watched = self._native if info.arch == AUDIT_ARCH_X86_64 else self._compat
        if info.nr not in watched:
            self._inside.add(tid)
            return
        want = collector.on_entry(self._view.at(tid, collector.pid_of(tid)), info.nr,
                                  info.arch, info.args, info.ip, info.sp)
        if want:
            self.owes_exit.add(tid)
        else:
            collector.on_result(tid, None, False)
            self._inside.add(tid)

    def event(self, collector: Collector, tid: int, event: int, sig: int) -> None:
        if event == ptrace.EVENT_EXEC:
            # exec by a non-leader thread reports under the leader's tid, whose own stale
            # "inside an unwatched call" state must not swallow the execve's exit stop
            self._inside.discard(tid)
        super().event(collector, tid, event, sig)

    def resume(self, tid: int, sig: int = 0) -> None:
        """Every resume keeps the thread stepping (no filter stops it otherwise)."""
        with contextlib.suppress(ptrace.PtraceRequestError):
            ptrace.syscall(tid, sig)

    # -- detach -----------------------------------------------------------------------
    def detach(self) -> None:
        """Leave every thread running (or group-stopped, if it was), nothing installed."""
        if self.detached:
            return
        self.detached = True
        self.end_time = time.time()
        collector = self._collector
        remaining = set(self.seized)
        if collector is not None:
            remaining |= set(getattr(collector, "tid2pid", {}))
        done: set[int] = set()
        if self._held is not None:
            try:
                ptrace.detach(self._held, 0)  # fails (ESRCH) if it was resumed after all
                remaining.discard(self._held)
                done.add(self._held)
            except ptrace.PtraceRequestError:
                pass
        for tid in remaining:
            with contextlib.suppress(ptrace.PtraceRequestError):
                ptrace.interrupt(tid)
        while remaining:
            # a thread whose exit was reported already will not report again
            remaining = {t for t in remaining if os.path.exists(f"/proc/{t}")}
            if not remaining:
                break
            try:
                tid, status = os.waitpid(-1, WALL)
            except ChildProcessError:
                break
            if self._waker is not None and tid == self._waker.pid:
                self._waker = None  # reaped here
                continue
            if status & 0x7F != 0x7F:  # exited or killed meanwhile
                remaining.discard(tid)
                if collector is not None:
                    collector.on_exit(tid, status)
                continue
            self._detach_one(tid, status, remaining, done)
        self._reap_waker()
        if collector is not None and not collector.tracing:  # it ended as we detached
            self.ended = getattr(collector, "status", None)

    def _detach_one(self, tid: int, status: int, remaining: set[int], done: set[int]) -> None:
        sig = (status >> 8) & 0xFF
        event = (status >> 16) & 0xFF
        deliver = 0
        if event in (ptrace.EVENT_CLONE, ptrace.EVENT_FORK, ptrace.EVENT_VFORK):
            with contextlib.suppress(ptrace.PtraceRequestError):
                new = ptrace.get_eventmsg(tid)
                if new not in done:
                    remaining.add(new)  # it reports its own first stop: detached then
        elif status >> 8 == SYSCALL_STOP:
            if tid in self.owes_exit and self._collector is not None:
                with contextlib.suppress(ptrace.PtraceRequestError):
                    info = ptrace.syscall_info(tid)
                    if info.op == ptrace.SYSCALL_INFO_EXIT:
                        self.owes_exit.discard(tid)
                        self._collector.on_result(tid, info.rval, True)
        elif not event:
            deliver = sig  # a signal-delivery stop: hand the signal on
        with contextlib.suppress(ptrace.PtraceRequestError):
            ptrace.detach(tid, deliver)
        remaining.discard(tid)
        done.add(tid)

    def _reap_waker(self) -> None:
        if self._waker is not None:
            self._waker.reap()
            self._waker = None
