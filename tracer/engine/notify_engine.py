"""The notify engine: seccomp user notification for watched calls, ptrace for the rest.

The launched program is PTRACE_SEIZEd as for the ptrace engine (clone/fork/exec/exit
events, signals, group-stop, EXITKILL) but its filter returns SECCOMP_RET_USER_NOTIF for
the watched native calls, and the tracer holds the listener fd. One thread serves both:
`poll()` on the listener and on a SIGCHLD wake-up fd (signal.set_wakeup_fd; every ptrace
stop sends the tracer SIGCHLD), then `waitpid(WNOHANG)` until empty. No timeouts.

Per notification (`SECCOMP_IOCTL_NOTIF_RECV`: id, tid, nr, arch, ip, args):

- `collector.wants_full` (numbers only), then `collector.on_entry` with a view that has
  memory but no registers (`full=False`): the path is read at the notification.
- CONTINUE: reply `SECCOMP_USER_NOTIF_FLAG_CONTINUE` at once; the kernel runs the call as
  if it had never stopped; `on_result(tid, None, observed=False)`. A reply refused with
  ENOENT (the wait was interrupted by a signal: the call restarts and notifies again)
  drops the entry instead.
- FULL: the upgrade. PTRACE_INTERRUPT the waiting thread; it leaves the wait with
  ERESTARTSYS and reports PTRACE_EVENT_STOP, where the registers are those at the call.
  `on_entry` runs again with a full view; PTRACE_SYSCALL -> syscall-entry stop of the
  restarted call -> PTRACE_SYSCALL -> the same call notifies again -> reply CONTINUE ->
  syscall-exit stop: the real result, `on_result(tid, rval, observed=True)`, PTRACE_CONT.
  A restart errno at that exit (a signal interrupted the call itself) goes round again.
- FULL with WAIT_KILLABLE_RECV (the filter's flag, kernel 6.0+; `wait_killable`): the
  one-stop upgrade. The interrupt does not end a received wait, so CONTINUE is answered at
  once (state RAN); the call runs and the thread stops on its way back to user mode before
  any instruction of its own: rax is the result, the registers and stack are the call's:
  `on_entry` (full view), `on_result(rval, observed=True)`, PTRACE_CONT (`_ran`). A
  restart errno in rax (the pending interrupt cut a blocking call short) sends the
  restarted call through the upgrade's second half (RESTART, as above). An exec is
  answered -ERESTARTNOINTR instead (its stack must be walked before the image goes): the
  thread stops at the call, which then restarts, and the upgrade above goes on.

With the native core (tracer/engine/native.py; `native=` the loaded module) the loop is
the core's `run()`: it polls both fds, receives, and answers the repeats the collector armed
on its own; the engine drains its counts into the collector, then handles what it returned
(a notification, as above, or a wake-up) exactly as the pure-Python loop does. The
upgrade's mechanics run in the core too (`_native_upgrade`): once interrupted, `core.upgrade`
returns the registers of the interrupt stop (Python checks them and runs `on_entry`),
`core.finish` drives the stops up to the result and resumes the thread (Python runs
`on_result`). Whatever the core meets that is not the next step of that sequence (another
thread's report or notification, a signal, a group-stop, an exit) it hands back with the
thread's upgrade state, and the Python state machine below carries on from there.

Foreign-ABI calls still return RET_TRACE and are handled exactly as by the ptrace engine.
If the tracer dies, EXITKILL kills the tracee (a dead listener would otherwise make every
watched call fail with ENOSYS).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import struct
import threading
from typing import TYPE_CHECKING, Any

from tracer import ptrace
from tracer.engine import native as native_core
from tracer.engine.base import Capabilities, Collector, Want
from tracer.engine.ptrace_engine import STOP_SIGNALS, WALL, PtraceEngine, PtraceView
from tracer.syscalls.decode import RESTART_ERRNOS
from tracer.syscalls.table import EXEC, x86_64_table

if TYPE_CHECKING:
    from tracer.engine.base import Registers
    from tracer.trace.model import ExitStatus

__all__ = ["NotifyEngine", "NotifyView", "set_sync_wakeup"]

# <linux/seccomp.h>: _IOWR('!', 0, struct seccomp_notif) etc. (x86-64 sizes 80 and 24)
NOTIF_SIZE = 80
RESP_SIZE = 24
IOCTL_NOTIF_RECV = 0xC0502100
IOCTL_NOTIF_SEND = 0xC0182101
IOCTL_NOTIF_SET_FLAGS = 0x40082104
USER_NOTIF_FLAG_CONTINUE = 1
USER_NOTIF_FD_SYNC_WAKE_UP = 1
WNOHANG = os.WNOHANG
_NOTIF = struct.Struct("<QIIiIQ6Q")
_RESP = struct.Struct("<QqiI")
_ERESTARTSYS = 512
_ERESTARTNOINTR = 513
# calls that do not return where they were made when they succeed (a new image): under
# WAIT_KILLABLE_RECV they are upgraded the two-notification way (see _notification)
_NO_RETURN = frozenset(nr for nr, spec in x86_64_table().items() if spec.cls == EXEC)

# upgrade states of a thread (NotifyEngine.upgrading)
INTERRUPTED = 1  # PTRACE_INTERRUPT sent while it waits for the reply
RESTART = 2  # resumed with PTRACE_SYSCALL: the restarted call's entry stop comes next
AWAIT_NOTIF = 3  # past that entry stop: the same call notifies again
AWAIT_EXIT = 4  # replied CONTINUE: its syscall-exit stop gives the result
RAN = 5  # WAIT_KILLABLE_RECV: interrupted, then answered CONTINUE: the call runs, and the
#          interrupt stop on its way back to user mode gives the result

_libc = ctypes.CDLL(None, use_errno=True)
_ioctl = _libc.ioctl
_ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_ioctl.restype = ctypes.c_int


def set_sync_wakeup(listener: int) -> bool:
    """Ask for SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (kernel 6.6+): the kernel hands the CPU
    straight from the tracee to the tracer and back. False when the kernel refuses."""
    # the ioctl takes the flags by value, not through a pointer
    return bool(_ioctl(listener, IOCTL_NOTIF_SET_FLAGS, USER_NOTIF_FD_SYNC_WAKE_UP) == 0)


class NotifyView(PtraceView):
    """The `ThreadView` of a thread waiting for a notification reply: memory, no registers
    (the thread is not at a ptrace stop until an upgrade)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__()
        self.full = False

    def regs(self) -> Registers | None:
        return None


class NotifyEngine(PtraceEngine):
    """Seccomp user notification + ptrace events (see the module docstring)."""

    name = "notify"
    caps = Capabilities(registers=True, results="selected", blocks_filter=False)

    def __init__(self, pid: int, listener: int, sync_wakeup: bool = False,
                 native: Any = None, wait_killable: bool = False) -> None:
        super().__init__(pid)
        self.listener = listener
        # the filter has SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: the one-stop upgrade
        self.wait_killable = wait_killable
        self.native = native  # the compiled module (native.load()), or None: pure Python
        self.core: native_core.NativeCore | None = None
        self.native_stats: dict[str, int] = {}  # the core's counters, once run() is over
        self.sync_wakeup = sync_wakeup
        self.notifications = 0
        self.upgrades = 0
        self.lost_upgrades = 0  # interrupts that found the thread in a signal handler
        self.native_upgrades = 0  # upgrades whose interrupt stop (and what follows) the core took
        # tid -> [state, nr, arch, args, ip] for calls being upgraded to a full view
        self.upgrading: dict[int, list[Any]] = {}
        self.reap_due = False  # the core emptied the wake-up fd: reap before polling again
        self._timeout_ms = -1
        self._nview = NotifyView()
        self._notif = ctypes.create_string_buffer(NOTIF_SIZE)
        self._resp = ctypes.create_string_buffer(RESP_SIZE)
        self._notif_addr = ctypes.addressof(self._notif)
        self._resp_addr = ctypes.addressof(self._resp)

    # -- the loop -----------------------------------------------------------------------
    def run(self, collector: Collector) -> ExitStatus:
        collector.start(self.pid)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        restore = self._watch_sigchld(wake_w)
        timeout = 10 if restore is None else None
        try:
            if self.native is not None:
                self.core = native_core.new_core(self.native, self.listener, wake_r)
                collector.use_repeat_table(self.core)
                self._native_loop(collector, self.core, wake_r, timeout)
            else:
                self._loop(collector, wake_r, timeout)
        finally:
            if self.core is not None:  # notifications the core answered alone
                counts = self.native_stats = self.core.stats()
                alone = counts["handled"] + counts["dropped"] + counts["restarted"]
                self.notifications += alone
                self.stops += alone
            if restore is not None:
                restore()
            os.close(wake_r)
            os.close(wake_w)
            with contextlib.suppress(OSError):
                os.close(self.listener)
        return collector.finish()

    @staticmethod
    def _watch_sigchld(wake_w: int) -> Any:
        """SIGCHLD -> a byte on wake_w (the C-level handler writes it, whichever thread
        takes the signal). Only the main thread may do this; elsewhere None, and the loop
        polls with a 10 ms timeout instead."""
        if threading.current_thread() is not threading.main_thread():
            return None
        old_handler = signal.signal(signal.SIGCHLD, lambda *_: None)
        old_fd = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)

        def restore() -> None:
            signal.set_wakeup_fd(old_fd)
            signal.signal(signal.SIGCHLD, old_handler)

        return restore

    def _reap_stops(self, collector: Collector) -> bool:
        """Handle every ptrace stop waiting now; False once no traced thread is left."""
        while True:
            try:
                tid, status = os.waitpid(-1, WALL | WNOHANG)
            except ChildProcessError:
                return False
            if tid == 0:
                return bool(collector.tracing)
            self.stops += 1
            self.handle(collector, tid, status)

    def _loop(self, collector: Collector, wake_r: int, timeout: int | None) -> None:
        poller = select.poll()
        listener = self.listener
        poller.register(listener, select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        notified = self._notified
        deferred = getattr(collector, "run_deferred", None)  # before blocking: seam 1
        check_children = True
        while True:
            if check_children and not self._reap_stops(collector):
                return
            check_children = timeout is not None
            if deferred is not None:
                deferred()
            for fd, ev in poller.poll(timeout):
                if fd == listener:
                    if ev & select.POLLIN:
                        notified(collector)
                    elif ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                        poller.unregister(listener)  # no process holds the filter any more
                else:
                    with contextlib.suppress(OSError):
                        os.read(wake_r, 512)
                    check_children = True

    def _native_loop(self, collector: Collector, core: native_core.NativeCore, wake_r: int,
                     timeout: int | None) -> None:
        """`_loop` with the core's run() in place of poll + RECV (see the module doc)."""
        ms = self._timeout_ms = -1 if timeout is None else timeout
        deferred = getattr(collector, "run_deferred", None)  # before blocking: seam 1
        check_children = True
        while True:
            if (check_children or self.reap_due) and not self._reap_stops(collector):
                return
            self.reap_due = False
            check_children = timeout is not None
            if deferred is not None:
                deferred()
            got = core.run(ms)
            counts = core.drain()
            if counts:  # before anything else reaches the collector
                collector.on_repeated(counts)
            if isinstance(got, tuple):
                self._notification(collector, got)
            elif got == native_core.WAKE:
                with contextlib.suppress(OSError):
                    os.read(wake_r, 512)
                check_children = True

    # -- notifications ------------------------------------------------------------------
    def _recv(self) -> tuple[int, ...] | None:
        ctypes.memset(self._notif_addr, 0, NOTIF_SIZE)  # the kernel wants it zeroed
        if _ioctl(self.listener, IOCTL_NOTIF_RECV, self._notif_addr) != 0:
            return None  # EINTR (SIGCHLD), ENOENT (the waiter went away): nothing to do
        return _NOTIF.unpack_from(self._notif)

    def _continue(self, nid: int) -> bool:
        _RESP.pack_into(self._resp, 0, nid, 0, 0, USER_NOTIF_FLAG_CONTINUE)
        return bool(_ioctl(self.listener, IOCTL_NOTIF_SEND, self._resp_addr) == 0)

    def _reply_restart(self, nid: int) -> bool:
        """Answer -ERESTARTNOINTR: with an interrupt pending, the thread stops on its way
        back to user mode with the registers of the call, and the call is then restarted
        (the kernel's restart of an interrupted call: rip back on the syscall instruction)
        and notifies again. What PTRACE_INTERRUPT does to a wait that is not killable."""
        _RESP.pack_into(self._resp, 0, nid, 0, -_ERESTARTNOINTR, 0)
        return bool(_ioctl(self.listener, IOCTL_NOTIF_SEND, self._resp_addr) == 0)

    def _notified(self, collector: Collector) -> None:
        got = self._recv()
        if got is not None:
            self._notification(collector, got)

    def _notification(self, collector: Collector, got: tuple[int, ...]) -> None:
        """One received notification (struct seccomp_notif's fields, args last)."""
        self.notifications += 1
        self.stops += 1
        nid, tid, _flags, nr, arch, ip = got[:6]
        args = got[6:]
        up = self.upgrading.get(tid)
        if up is not None:
            if up[0] in (AWAIT_NOTIF, RESTART):
                if self._continue(nid):
                    up[0] = AWAIT_EXIT
                return
            del self.upgrading[tid]  # INTERRUPTED but a group-stop took it: start afresh
        pid = collector.pid_of(tid)
        want = collector.wants_full(tid, pid, nr, args, ip)
        if want is Want.CONTINUE:
            want = collector.on_entry(self._nview.at(tid, pid), nr, arch, args, ip, 0)
        if want is Want.CONTINUE:
            if self._continue(nid):
                collector.on_result(tid, None, False)
            else:  # interrupted: the restarted call notifies again
                collector.on_result(tid, -_ERESTARTSYS, False)
            return
        try:
            ptrace.interrupt(tid)
        except ptrace.PtraceRequestError:
            self._continue(nid)  # gone, or not ours to stop: let the call run
            return
        self.upgrades += 1
        if self.wait_killable:
            if nr not in _NO_RETURN:
                self._run_interrupted(collector, nid, tid, [RAN, nr, arch, args, ip])
                return
            # an exec's stack must be walked before the image goes: the reply makes the
            # call restart, so the thread stops at it as the interrupt alone would without
            # the flag, and the upgrade goes on as below
            if not self._reply_restart(nid):
                collector.on_result(tid, -_ERESTARTSYS, False)  # a fatal signal
                return
        if self.core is not None:
            self._native_upgrade(collector, self.core, tid, [INTERRUPTED, nr, arch, args, ip])
            return
        self.upgrading[tid] = [INTERRUPTED, nr, arch, args, ip]
        self._chase(collector, tid)

    def _native_upgrade(self, collector: Collector, core: native_core.NativeCore, tid: int,
                        up: list[Any]) -> None:
        """The upgrade of an interrupted thread with the core driving the stops (see the
        module docstring)."""
        kind, value = self._core_step(collector, core, tid, up, core.upgrade(tid))
        if kind != native_core.U_REGS:
            return
        self.native_upgrades += 1
        regs = ptrace.regs_from(value) if value is not None else None
        view = self._view.at(tid, collector.pid_of(tid)).with_regs(regs)
        if not self._at_call(tid, up, regs):
            return
        sp = int(regs.rsp) if regs is not None else 0
        collector.on_entry(view, up[1], up[2], up[3], up[4], sp)
        self._native_finish(collector, core, tid, up)

    def _native_finish(self, collector: Collector, core: native_core.NativeCore, tid: int,
                       up: list[Any]) -> None:
        """From the interrupt stop to the restarted call's result, driven by the core."""
        kind, value = self._core_step(collector, core, tid, up,
                                      core.finish(tid, self._timeout_ms))
        if kind == native_core.U_RESULT:
            collector.on_result(tid, value, True)
        elif kind == native_core.U_GONE:
            collector.on_result(tid, None, False)

    def _run_interrupted(self, collector: Collector, nid: int, tid: int,
                         up: list[Any]) -> None:
        """The one-stop upgrade (WAIT_KILLABLE_RECV): the interrupt did not end the wait,
        which only a fatal signal can once the notification is received, so the call is
        answered CONTINUE now. It runs with the interrupt pending, and the thread stops
        (PTRACE_EVENT_STOP) on its way back to user mode, before any instruction of its
        own: `_ran` reads the result and the registers of the call there."""
        if not self._continue(nid):  # a fatal signal: the thread is dying
            collector.on_result(tid, -_ERESTARTSYS, False)
            return
        self.upgrading[tid] = up
        if self.core is None:
            return  # the interrupt stop comes through the loop: event() -> _ran
        kind, value = self._core_step(collector, self.core, tid, up,
                                      self.core.await_ran(tid, self._timeout_ms))
        if kind == native_core.U_REGS:
            self.native_upgrades += 1
            self._ran(collector, tid, up, ptrace.regs_from(value) if value is not None
                      else None)

    def _ran(self, collector: Collector, tid: int, up: list[Any],
             regs: Registers | None) -> None:
        """At the interrupt stop after a call answered CONTINUE (state RAN): rax is the
        result, rip/rsp/rbp are the call's (the stack untouched since). A restart errno
        there (the pending interrupt cut a blocking call short) sends the restarted call
        through the upgrade's second half (RESTART): its exit stop gives the result."""
        self.upgrading.pop(tid, None)
        view = self._view.at(tid, collector.pid_of(tid)).with_regs(regs)
        rax = getattr(regs, "rax", None)  # a user_regs_struct has it; the seam does not say
        if regs is None or rax is None or int(regs.rip) != up[4] \
                or int(getattr(regs, "orig_rax", up[1])) != up[1]:
            # not the call's return: gone, or not what the flag promises; no result
            collector.on_result(tid, None, False)
            PtraceEngine.resume(self, tid)
            return
        collector.on_entry(view, up[1], up[2], up[3], up[4], int(regs.rsp))
        rval = _signed(int(rax))
        if rval < 0 and -rval in RESTART_ERRNOS:
            up[0] = RESTART
            if self.core is not None:
                self._native_finish(collector, self.core, tid, up)
                return
            self.upgrading[tid] = up
            try:
                ptrace.syscall(tid)
            except ptrace.PtraceRequestError:
                self.upgrading.pop(tid, None)
                return
            self._chase(collector, tid)
            return
        collector.on_result(tid, rval, True)
        PtraceEngine.resume(self, tid)

    def _core_step(self, collector: Collector, core: native_core.NativeCore, tid: int,
                   up: list[Any], got: native_core.Upgrade) -> tuple[int, Any]:
        """Account for what the core took, and carry on in Python from a hand-back: the
        thread's upgrade state goes into `upgrading` and the report or notification the
        core returned is handled as the pure-Python loop would. (kind, value) for the
        caller."""
        kind, state, value, chase, reap, stops, notifications = got
        self.stops += stops + notifications  # what the core took; a hand-back counts below
        self.notifications += notifications
        self.reap_due = self.reap_due or bool(reap)
        counts = core.drain()  # other threads' repeats the core answered meanwhile
        if counts:
            collector.on_repeated(counts)
        if kind in (native_core.U_REGS, native_core.U_RESULT, native_core.U_GONE,
                    native_core.U_QUIET, native_core.U_NOCHILD):
            return kind, value
        up[0] = state
        self.upgrading[tid] = up
        if kind == native_core.U_OTHER:
            self.stops += 1
            self.handle(collector, value[0], value[1])
            if chase:
                self._chase(collector, tid)
        elif kind == native_core.U_NOTIF:
            self._notification(collector, value)
        return kind, value

    def _chase(self, collector: Collector, tid: int) -> None:
        """Reap the two stops that follow an interrupt at once (its PTRACE_EVENT_STOP, then
        the restarted call's entry stop) with a blocking waitpid, instead of a round through
        poll and SIGCHLD for each. Both come without the thread depending on anyone;
        waitpid(-1) (not the tid) so that other threads' reports are handled meanwhile (a
        thread exec'ing waits until the tracer has reaped its siblings). The exit stop is
        not chased: the call itself may block on another thread's notification."""
        upgrading = self.upgrading
        while (up := upgrading.get(tid)) is not None and up[0] in (INTERRUPTED, RESTART):
            try:
                got, status = os.waitpid(-1, WALL)
            except ChildProcessError:
                return
            self.stops += 1
            self.handle(collector, got, status)

    # -- ptrace stops that belong to an upgrade ------------------------------------------
    def resume(self, tid: int, sig: int = 0) -> None:
        up = self.upgrading.get(tid)
        if up is not None and up[0] not in (INTERRUPTED, RAN):
            with contextlib.suppress(ptrace.PtraceRequestError):
                ptrace.syscall(tid, sig)
            return
        super().resume(tid, sig)

    def event(self, collector: Collector, tid: int, event: int, sig: int) -> None:
        up = self.upgrading.get(tid)
        if up is not None and up[0] == RAN and event == ptrace.EVENT_STOP \
                and sig == signal.SIGTRAP:
            self._ran(collector, tid, up, self._view.at(tid, collector.pid_of(tid)).regs())
            return
        if up is not None and up[0] == INTERRUPTED and event == ptrace.EVENT_STOP \
                and sig == signal.SIGTRAP:
            self._upgraded(collector, tid, up)
            return
        if up is not None and up[0] in (INTERRUPTED, RESTART) and event == ptrace.EVENT_STOP \
                and sig in STOP_SIGNALS:
            # group-stop first: the call restarts after SIGCONT and notifies again, and is
            # then handled afresh (nothing was recorded for it yet)
            del self.upgrading[tid]
        if event == ptrace.EVENT_EXEC:
            try:
                former = ptrace.get_eventmsg(tid)
            except ptrace.PtraceRequestError:
                former = tid
            if former != tid:  # non-leader exec: the leader was killed, its state goes
                self.upgrading.pop(tid, None)
                moved = self.upgrading.pop(former, None)
                if moved is not None:
                    self.upgrading[tid] = moved
        super().event(collector, tid, event, sig)

    def _upgraded(self, collector: Collector, tid: int, up: list[Any]) -> None:
        """At the PTRACE_EVENT_STOP of an interrupted notification: the full view."""
        view = self._view.at(tid, collector.pid_of(tid))
        regs = view.regs()
        if not self._at_call(tid, up, regs):
            return
        sp = int(regs.rsp) if regs is not None else 0
        collector.on_entry(view, up[1], up[2], up[3], up[4], sp)
        up[0] = RESTART
        try:
            ptrace.syscall(tid)
        except ptrace.PtraceRequestError:
            self.upgrading.pop(tid, None)

    def _at_call(self, tid: int, up: list[Any], regs: Registers | None) -> bool:
        """At the interrupt stop: are the registers those of the notified call? If not, a
        signal (Go's SIGURG preemption, most often) ended the wait first and was delivered,
        so the thread stops in its handler: it is let run, and the call, restarted when
        the handler returns, notifies again and is handled afresh then."""
        if regs is None or (int(regs.rip) == up[4]
                            and int(getattr(regs, "orig_rax", up[1])) == up[1]):
            return True
        self.upgrading.pop(tid, None)
        self.lost_upgrades += 1
        PtraceEngine.resume(self, tid)
        return False

    def syscall_stop(self, collector: Collector, tid: int) -> None:
        up = self.upgrading.get(tid)
        if up is None:
            super().syscall_stop(collector, tid)
            return
        if up[0] == RESTART:  # resumed from the interrupt: this is the restarted call's entry
            up[0] = AWAIT_NOTIF  # it notifies next
            self.resume(tid)
            return
        try:
            info = ptrace.syscall_info(tid)
        except ptrace.PtraceRequestError:
            self.upgrading.pop(tid, None)
            collector.on_result(tid, None, False)
            return
        if info.op == ptrace.SYSCALL_INFO_ENTRY:
            up[0] = AWAIT_NOTIF  # the restarted call: it notifies next
        elif up[0] == AWAIT_EXIT:
            if info.is_error and -info.rval in RESTART_ERRNOS:
                up[0] = RESTART  # interrupted again: it restarts and notifies again
            else:
                del self.upgrading[tid]
                collector.on_result(tid, info.rval, True)
        self.resume(tid)

    def handle(self, collector: Collector, tid: int, status: int,
               seccomp_stop: int = ptrace.EVENT_SECCOMP) -> None:
        if status & 0x7F != 0x7F:
            self.upgrading.pop(tid, None)
        super().handle(collector, tid, status, seccomp_stop)


def _signed(value: int) -> int:
    """A 64-bit register as the signed long a syscall returns."""
    return value - (1 << 64) if value >= 1 << 63 else value


def notify_unavailable_reason() -> str | None:
    """Why the notify engine cannot be used here without trying (None: try it)."""
    if os.environ.get("CGOTRACE_NO_NOTIFY"):
        return "CGOTRACE_NO_NOTIFY is set"
    return None

