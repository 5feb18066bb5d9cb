"""The attach engine: trace a live process without a seccomp filter, and leave it as it was.

A process we attach to cannot be given a seccomp filter: a RET_TRACE filter outlives its
tracer, and once the tracer is gone every watched call would fail with ENOSYS. Nor may it
be seized with PTRACE_O_EXITKILL: the tracer's death must not kill the service. So:

- seize: PTRACE_SEIZE every thread of /proc/PID/task with TRACESYSGOOD, TRACECLONE,
  TRACEFORK, TRACEVFORK and TRACEEXEC (never EXITKILL, never TRACESECCOMP), re-reading the
  thread list until no unseized thread remains (a thread the not-yet-seized ones create is
  caught by that re-read; one the seized ones create is auto-attached by TRACECLONE), then
  PTRACE_INTERRUPT each into its first stop.
- step: every resume is PTRACE_SYSCALL, so each thread stops at every syscall entry and
  exit and the tracer filters. An entry of an unwatched call costs one GET_SYSCALL_INFO
  and the resume; its exit stop is resumed at once without any request but the resume
  (the thread is remembered as inside an unwatched call). Watched entries go through the
  same decoder, classifier and attributor as `run` (`tracer.loop.Loop`, whose exec, clone,
  signal and exit handling this class inherits).
- stop: `request_stop()` (any thread: duration over, SIGINT, SIGTERM) makes `run()` leave
  its waitpid at once; it forks a tiny "waker" child at start whose exit is what wakes it.
- detach: PTRACE_INTERRUPT every running thread, then at each one's next stop
  PTRACE_DETACH, passing the signal of a signal-delivery stop on (so none is lost). A
  group-stopped thread stays stopped, as it was. A thread created meanwhile reports its
  own stop and is detached too. A watched call whose exit was not seen is recorded with
  result "unknown".

If the tracer dies instead (even SIGKILL), the kernel detaches every thread: nothing is
left behind because nothing was installed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
import time
from collections.abc import Callable

from tracer import ptrace
from tracer.errors import ProcessGoneError
from tracer.loop import _SYSCALL_STOP, WALL, Loop
from tracer.model import AccessKind, ExitStatus
from tracer.session import procfs
from tracer.syscalls.table import AUDIT_ARCH_X86_64, i386_table, x86_64_table

ATTACH_OPTIONS = (ptrace.O_TRACESYSGOOD | ptrace.O_TRACECLONE | ptrace.O_TRACEFORK
                  | ptrace.O_TRACEVFORK | ptrace.O_TRACEEXEC)
SEIZE_ROUNDS = 100  # re-reads of /proc/PID/task before giving up on a thread-spawning storm


class SeizeRefused(Exception):
    """PTRACE_SEIZE of the first thread failed; `errno` says why (the caller diagnoses)."""

    def __init__(self, err: int):
        super().__init__(err)
        self.errno = err


def seize_threads(pid: int) -> set[int]:
    """Seize every thread of `pid` (see the module docstring) and interrupt each.

    Raises SeizeRefused when the kernel refuses the first seize, ProcessGoneError when the
    process has no thread left.
    """
    seized: set[int] = set()
    for _ in range(SEIZE_ROUNDS):
        fresh = [t for t in procfs.threads(pid) if t not in seized]
        if not fresh:
            break
        for tid in fresh:
            try:
                ptrace.seize(tid, ATTACH_OPTIONS)
            except ptrace.PtraceRequestError as e:
                if e.errno == errno.ESRCH:
                    continue  # exited between the listing and the seize
                if e.errno == errno.EPERM and procfs.tracer_pid(tid) == os.getpid():
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
    """A child process whose exit wakes a tracer blocked in waitpid(-1): `wake()` may be
    called from any thread or signal handler (it only closes a pipe)."""

    def __init__(self) -> None:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover (child)
            try:
                os.close(w)
                os.read(r, 1)
            finally:
                os._exit(0)
        os.close(r)
        self.pid = pid
        self._w: int | None = w
        self._lock = threading.Lock()

    def wake(self) -> None:
        # Never blocks: a signal handler may run while another caller holds the lock, and
        # that caller is already waking.
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


class AttachLoop(Loop):
    """`Loop` for a process that was already running: PTRACE_SYSCALL stepping, in-tracer
    filtering, a stop request and a clean detach. Call `seize()` first, then `run()`,
    then `detach()` (always, also after an exception)."""

    def __init__(self, pid: int, *, exe: str | None = None, **kw: object) -> None:
        super().__init__(pid, **kw)  # type: ignore[arg-type]
        self._main_exec_done = True  # the program's own exec happened before we came
        if exe is not None:
            self.exe[pid] = exe
        self._native = frozenset(x86_64_table())
        self._compat = frozenset(i386_table())
        self._in_unwatched: set[int] = set()
        self._stop = threading.Event()
        self._waker: Waker | None = None
        self.detached = False
        self.ended: ExitStatus | None = None  # set when the process exited meanwhile
        self.start_time = time.time()
        self.end_time: float | None = None

    # -- lifecycle ------------------------------------------------------------------
    def seize(self) -> int:
        """Seize every thread; returns how many."""
        tids = seize_threads(self.main_pid)
        for tid in tids:
            self.tid2pid[tid] = self.main_pid
        self._waker = Waker()
        self.start_time = time.time()
        self._t0 = time.monotonic()
        return len(tids)

    def request_stop(self) -> None:
        """End the attach soon (from any thread): run() returns, detach() follows."""
        self._stop.set()
        if self._waker is not None:
            self._waker.wake()

    def stop_after(self, seconds: float) -> threading.Timer:
        timer = threading.Timer(seconds, self.request_stop)
        timer.daemon = True
        timer.start()
        return timer

    def run(self) -> ExitStatus:
        waitpid = os.waitpid
        tid2pid = self.tid2pid
        stats = self.stats
        stop = self._stop
        inside = self._in_unwatched
        syscall = ptrace.syscall
        info_of = ptrace.syscall_info
        entry = ptrace.SYSCALL_INFO_ENTRY
        native, compat = self._native, self._compat
        while tid2pid and not stop.is_set():
            try:
                tid, status = waitpid(-1, WALL)
            except ChildProcessError:
                break
            stats.stops += 1
            if status >> 8 == _SYSCALL_STOP and status & 0xFF == 0x7F:
                if tid in inside:  # the exit of an unwatched call: nothing to read
                    inside.discard(tid)
                    try:  # noqa: SIM105 (hot path)
                        syscall(tid)
                    except ptrace.PtraceRequestError:
                        pass
                    continue
                try:
                    info = info_of(tid)
                except ptrace.PtraceRequestError:
                    continue
                if info.op == entry:
                    if info.nr in (native if info.arch == AUDIT_ARCH_X86_64 else compat):
                        self._entry(tid, info)
                        continue
                    inside.add(tid)
                    try:  # noqa: SIM105 (hot path)
                        syscall(tid)
                    except ptrace.PtraceRequestError:
                        pass
                    continue
                self._exit_stop(tid, info)
            elif status & 0x7F == 0x7F:
                sig = (status >> 8) & 0xFF
                event = (status >> 16) & 0xFF
                if event:
                    self._event(tid, event, sig)
                else:
                    self._signal(tid, sig)
            else:
                inside.discard(tid)
                self._gone(tid, status)
        if not tid2pid:
            self.ended = self.status or ExitStatus(code=None)
        return self.status or ExitStatus(code=None)

    # -- stops (the rest are Loop's) ------------------------------------------------
    def _resume(self, tid: int, sig: int = 0) -> None:
        with contextlib.suppress(ptrace.PtraceRequestError):
            ptrace.syscall(tid, sig)

    def _entry(self, tid: int, info: ptrace.SyscallInfo) -> None:
        """A watched call's entry: Loop's seccomp-stop logic, resumed with PTRACE_SYSCALL
        whether or not the call is kept (the thread must keep stepping)."""
        pid = self.tid2pid.get(tid) or self._pid_of(tid)
        draft = self._decoder.decode(pid, tid, info.nr, info.arch, info.args, info.ip,
                                     info.sp, time.monotonic() - self._t0)
        if draft is not None:
            ranges = self.loader.get(pid)  # only after an exec seen during the attach
            if ranges is not None:
                if any(lo <= info.ip < hi for lo, hi in ranges):
                    draft.loader_phase = True
                else:
                    del self.loader[pid]
            draft.kind = kind = self._classifier.kind(
                draft.cls, draft.path, draft.loader_phase,
                info.args[draft.flag_arg] if draft.flag_arg is not None else 0)
            if self._attributor is not None and kind is not AccessKind.RUNTIME:
                try:
                    draft.attribution = self._attributor(pid, tid, draft)
                except Exception:
                    self.stats.attributor_errors += 1
            self.pending[tid] = draft
        else:
            self._in_unwatched.add(tid)
        self._resume(tid)

    def _exit_stop(self, tid: int, info: ptrace.SyscallInfo) -> None:
        draft = self.pending.pop(tid, None)
        if draft is not None and info.op == ptrace.SYSCALL_INFO_EXIT:
            from tracer.syscalls.decode import RESTART_ERRNOS

            if info.is_error and -info.rval in RESTART_ERRNOS:
                pass  # interrupted and restarted: the restart is recorded
            else:
                self._finish(draft, info.rval)
        self._resume(tid)

    # -- detach -----------------------------------------------------------------------
    def detach(self) -> None:
        """Leave every thread running (or group-stopped, if it was), nothing installed."""
        if self.detached:
            return
        self.detached = True
        self.end_time = time.time()
        remaining = set(self.tid2pid)
        done: set[int] = set()
        for tid in remaining:
            with contextlib.suppress(ptrace.PtraceRequestError):
                ptrace.interrupt(tid)
        while remaining:
            try:
                tid, status = os.waitpid(-1, WALL)
            except ChildProcessError:
                break
            if self._waker is not None and tid == self._waker.pid:
                self._waker = None  # reaped here
                continue
            if status & 0x7F != 0x7F:  # exited or killed meanwhile
                remaining.discard(tid)
                self._in_unwatched.discard(tid)
                self._gone(tid, status)
                continue
            self._detach_one(tid, status, remaining, done)
        for tid in list(self.pending):
            self._flush_unknown(tid)
        if self._waker is not None:
            self._waker.reap()
            self._waker = None

    def _detach_one(self, tid: int, status: int, remaining: set[int], done: set[int]) -> None:
        sig = (status >> 8) & 0xFF
        event = (status >> 16) & 0xFF
        deliver = 0
        if event in (ptrace.EVENT_CLONE, ptrace.EVENT_FORK, ptrace.EVENT_VFORK):
            with contextlib.suppress(ptrace.PtraceRequestError):
                new = ptrace.get_eventmsg(tid)
                if new not in done:
                    remaining.add(new)  # it reports its own first stop: detach it then
        elif status >> 8 == _SYSCALL_STOP:
            with contextlib.suppress(ptrace.PtraceRequestError):
                info = ptrace.syscall_info(tid)
                draft = self.pending.get(tid)
                if info.op == ptrace.SYSCALL_INFO_EXIT and draft is not None:
                    self.pending.pop(tid)
                    self._finish(draft, info.rval)
        elif not event:
            deliver = sig  # a signal-delivery stop: hand the signal on
        with contextlib.suppress(ptrace.PtraceRequestError):
            _detach(tid, deliver)
        remaining.discard(tid)
        done.add(tid)


def _detach(tid: int, sig: int) -> None:
    ptrace.detach(tid, sig)


def install_stop_signals(loop: AttachLoop,
                         signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM,
                                                     signal.SIGHUP)
                         ) -> Callable[[], None]:
    """SIGINT/SIGTERM/SIGHUP end the attach (then detach) instead of killing cgotrace with
    the process still seized. Returns the function that restores the old handlers."""
    old = {s: signal.getsignal(s) for s in signals}
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        loop.request_stop()

    for s in signals:
        signal.signal(s, handler)
    loop.received_signals = received  # type: ignore[attr-defined]

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)

    return restore
