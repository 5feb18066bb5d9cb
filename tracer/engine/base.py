"""The engine seam: what an engine reports, and what the collector answers.

An engine owns the tracee and is the only code that issues ptrace (or seccomp-notify)
requests. It turns what the kernel reports into calls on one engine-agnostic `Collector`
(tracer/recording/collector.py), always from the engine's own thread, and the collector answers
each watched entry with what it wants to see next (`Want`). Names here are shared with the
launch, notify and attach engines (docs/architecture.md, "Seams" 1): add, never
rename.

The call protocol, per thread:

- `on_entry(view, ...)` for a watched call. The engine then calls `on_result(tid, rval,
  observed)` exactly once for that entry: with the syscall's return value seen at its exit
  (`observed=True`), or `rval=None, observed=False` when the call was let run without a
  stop (Want.CONTINUE). A restart errno (ERESTARTSYS...) as `rval` means the call will be
  made again and reported by its own entry; the collector drops the first one. When the
  thread vanishes instead (exit_group, exec by another thread), `on_exit`/`on_exec` flush
  the entry with result "unknown".
- `on_spawn` before anything else of the new task when the engine can (under SEIZE the new
  task's first stop may come first: the collector asks /proc for its tgid then).

Repeats without the collector (the notify engine's native core, tracer/engine/native.py):
an engine that has a `RepeatTable` offers it with `use_repeat_table` before the first
event. The collector then arms the calls whose next repetition it would only count onto an
earlier access (same thread, call, flags, PC and path; the key's count not about to reach a
power of two); the engine answers those CONTINUE and counts them without calling the
collector, and hands the counts over with `on_repeated` before any other call on the
collector. The collector disarms whatever an event may change (docs/architecture.md,
"The native per-call core").
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol, TypeAlias

if TYPE_CHECKING:
    from tracer.trace.model import ExitStatus

__all__ = ["FAULT_SIGNALS", "Capabilities", "Collector", "Engine", "ProcessMemory",
           "Registers", "Regs", "RepeatCounts", "RepeatTable", "ThreadView", "Want"]

FAULT_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL,
                           signal.SIGABRT, signal.SIGSYS})

class Registers(Protocol):
    """The subset of `user_regs_struct` the unwinder reads (python-ptrace's has them all)."""

    rip: int
    rsp: int
    rbp: int
    rbx: int
    r12: int
    r13: int
    r14: int
    r15: int
    fs_base: int


# short alias used in the seam's signatures
Regs: TypeAlias = Registers


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an engine can provide."""

    registers: bool  # full user registers at a watched call (for the unwinder)
    results: str  # "all" (every call's result) | "selected" (only when the collector asks)
    blocks_filter: bool  # True for attach: no seccomp filter, every syscall stops


class ProcessMemory(Protocol):
    """A traced process's memory, valid after the call that handed out the view returned
    (until the process execs or exits): what work deferred past the thread's resume reads
    when its capture misses."""

    def read(self, addr: int, n: int) -> bytes:
        """As `ThreadView.read`."""
        ...

    def read_pages(self, pages: list[int]) -> list[bytes]:
        """As `ThreadView.read_pages`."""
        ...


class ThreadView(Protocol):
    """One stopped (or notification-waiting) thread, handed to the collector at an entry;
    valid only until the call it was passed to returns (engines reuse one object)."""

    tid: int
    pid: int
    # True when registers and the call's result are available for this entry (ptrace
    # stops, an upgraded notification); False for a plain seccomp notification.
    full: bool

    def regs(self) -> Registers | None:
        """Full user registers, or None when the engine cannot (a notification that was not
        upgraded) or the thread is gone."""
        ...

    def regs_of(self, tid: int) -> Registers | None:
        """Registers of another thread of the same tracee when it is in a ptrace-stop now
        (it waits for this tracer); None when it is running or gone. The attributor walks
        such a thread's goroutine instead of waiting for it to park."""
        ...

    def read(self, addr: int, n: int) -> bytes:
        """Process memory; short (or empty) at unmapped pages, never raises for EFAULT."""
        ...

    def read_cstring(self, addr: int, limit: int) -> bytes | None:
        """The NUL-terminated string at addr (at most `limit` bytes); None if unreadable."""
        ...

    def read_pages(self, pages: list[int]) -> list[bytes]:
        """Whole pages in one request (b"" for unreadable ones): the unwinder's prefetch
        and the capture of a first sighting (one process_vm_readv, several iovecs)."""
        ...

    def process_memory(self) -> ProcessMemory:
        """This thread's process's memory, still readable after this call returns (the
        view itself is re-pointed at the next stop)."""
        ...


class Want(IntEnum):
    """The collector's answer to an entry."""

    CONTINUE = 0  # run the call; no result needed (notify: reply CONTINUE)
    RESULT = 1  # report the result (ptrace: PTRACE_SYSCALL to the exit stop)
    FULL = 2  # registers *and* result (notify: the PTRACE_INTERRUPT upgrade)


# What `RepeatTable.drain` returns per armed call that ran since the last drain:
# (fold id, slot, the slot's count now, calls counted, first and last entry time in
# CLOCK_MONOTONIC nanoseconds)
RepeatCounts: TypeAlias = tuple[int, int, int, int, int, int]


class RepeatTable(Protocol):
    """Calls the engine lets run and counts on the collector's behalf (see the module doc)."""

    def arm(self, tid: int, nr: int, args: tuple[int, ...], ip: int, path: bytes, slot: int,
            fold: int) -> int:
        """Count the next calls of `tid` with this number, these flag arguments, this
        syscall PC and this absolute path onto `fold`, while `slot`'s count + 1 is not a
        power of two. A handle, or -1 when the table cannot take the call."""
        ...

    def disarm(self, handle: int) -> None:
        """Forget an armed call (its counts were drained already)."""
        ...

    def new_slot(self, count: int) -> int:
        """A shared counter of calls (one per collector key), or -1 when full."""
        ...

    def set_count(self, slot: int, count: int) -> None: ...

    def clear(self) -> None:
        """Disarm everything and free every slot."""
        ...

    def drain(self) -> list[RepeatCounts]:
        """The counts since the last drain, one tuple per armed call that ran."""
        ...


class Collector(Protocol):
    """The engine-agnostic consumer of engine events (tracer/recording/collector.py)."""

    def start(self, pid: int) -> None:
        """The launched (or attached) process `pid`, before its first event."""
        ...

    @property
    def tracing(self) -> bool:
        """True while any traced thread remains."""
        ...

    def pid_of(self, tid: int) -> int:
        """The process (tgid) of a traced thread."""
        ...

    def wants_full(self, tid: int, pid: int, nr: int, args: tuple[int, ...],
                   ip: int) -> Want:
        """Cheap pre-check before any memory is read (notify): FULL when the call's number
        and raw arguments alone say it needs registers and its result (exec, connect,
        O_CREAT/O_WRONLY/O_RDWR opens, foreign ABIs); otherwise CONTINUE, meaning "ask
        on_entry", which reads the path and applies the keep-policy."""
        ...

    def on_entry(self, view: ThreadView, nr: int, arch: int, args: tuple[int, ...],
                 ip: int, sp: int) -> Want: ...

    def on_result(self, tid: int, rval: int | None, observed: bool) -> None: ...

    def on_spawn(self, parent_tid: int, new_tid: int, new_pid: int, kind: str) -> None:
        """kind: clone | fork | vfork."""
        ...

    def on_exec(self, tid: int, former_tid: int, pid: int) -> None: ...

    def on_signal(self, tid: int, sig: int, fault_address: int | None,
                  code: int = 0) -> None: ...

    def on_exit(self, tid: int, status: int) -> None:
        """A waitpid status: the thread (and, for the leader, the process) is gone."""
        ...

    def finish(self) -> ExitStatus:
        """Flush what is still pending; the launched program's status."""
        ...

    def use_repeat_table(self, table: RepeatTable) -> bool:
        """Offered before the first event; True when the collector will arm it."""
        ...

    def on_repeated(self, counts: list[RepeatCounts]) -> None:
        """The engine counted armed calls on its own (`RepeatTable.drain`)."""
        ...

    def run_deferred(self) -> None:
        """Work the collector put off until the thread it concerns was resumed (the walk
        and symbolization of a captured first sighting, once the call's result came: the
        thread runs on meanwhile). Engines call it after resuming a thread, before they
        block; the collector also runs the work first thing in every other call, so the
        records and their order do not depend on when, or whether, it is called."""
        ...


class Engine(Protocol):
    """Owns the tracee; the only issuer of ptrace / seccomp-notify requests."""

    name: str  # "ptrace" | "notify" | "attach"
    caps: Capabilities

    def run(self, collector: Collector) -> ExitStatus:
        """Until no traced tid remains."""
        ...

    def detach(self) -> None:
        """Attach: leave every thread running, nothing left behind."""
        ...
