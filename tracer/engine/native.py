"""The notify engine's native per-call core (tracer/engine/_native.c): loading it, and the
calls it may answer alone.

The compiled `Core` runs the hot part of the notify loop without the interpreter: it
polls the seccomp listener and the SIGCHLD wake-up fd, receives each notification, reads
its path with process_vm_readv and, when the collector armed that exact call (its
`RepeatTable`, tracer/engine/base.py), answers CONTINUE and counts it. Everything else
goes back to Python: a call not armed, a power-of-two sample, a ptrace event, the
listener closing. Python stays the policy and the reference: what is armed is decided by
the collector alone, so a run produces the same trace with the core as without it.

`load()` says whether the core is used and why (`cgotrace run -v`): CGOTRACE_NATIVE=0
forces the pure-Python path; an extension that was not built (no C compiler when
cgotrace was installed) or does not import leaves the pure-Python path in place.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Protocol, cast

from tracer.engine.base import RepeatCounts, RepeatTable
from tracer.syscalls.table import CONNECT, EXEC, x86_64_table

__all__ = ["ENV", "TICK", "WAKE", "HUP", "NativeCore", "call_specs", "load", "new_core"]

ENV = "CGOTRACE_NATIVE"
# what NativeCore.run returns when it is not a notification (the C module's constants)
TIMEOUT, WAKE, HUP, TICK, EINTR = 0, 1, 2, 3, 4

Notification = tuple[int, int, int, int, int, int, int, int, int, int, int, int]

# what NativeCore.upgrade/finish return first (the C module's U_ constants)
U_REGS, U_RESULT, U_OTHER, U_NOTIF, U_GONE, U_QUIET, U_PENDING, U_NOCHILD = 0, 1, 2, 3, 5, 6, 7, 8
Upgrade = tuple[int, int, Any, int, int, int, int]
"""(kind, the thread's upgrade state, a value, chase, reap, ptrace reports taken,
notifications taken). The value: the registers' bytes (U_REGS; None when unreadable), the
result (U_RESULT), (tid, status) of a report for Python (U_OTHER), a notification for
Python (U_NOTIF); None otherwise. U_GONE: the
thread vanished at its exit stop; U_QUIET: it vanished at the interrupt stop; U_PENDING:
its CONTINUE was refused (it notifies again); U_NOCHILD: no child left. chase: the hand-back
came before the restarted call's entry stop (Python chases it as without the core); reap:
the wake-up fd was emptied, so Python reaps what may be waiting."""


class NativeCore(RepeatTable, Protocol):
    """The compiled `Core`: a RepeatTable with the loop that answers what is armed."""

    def run(self, timeout_ms: int = -1) -> int | Notification:
        """Answer armed repeats until Python is needed: TIMEOUT, WAKE (a byte on the
        wake-up fd: waitpid has something), HUP (the listener hung up: it is polled no
        more), TICK (counts have waited half a second), EINTR, or a notification for
        Python: (id, tid, flags, nr, arch, ip, args0..args5), already received."""
        ...

    def stats(self) -> dict[str, int]:
        """handled (repeats answered alone), dropped (calls answered alone that make no
        record), given (returned to Python), reads, restarted, armed."""
        ...

    def drain(self) -> list[RepeatCounts]: ...

    def upgrade(self, tid: int) -> Upgrade:
        """Wait for the interrupt stop of a thread Python has just PTRACE_INTERRUPTed:
        (U_REGS, state, the registers' bytes or None, ...) or a hand-back (see Upgrade)."""
        ...

    def await_ran(self, tid: int, timeout_ms: int = -1) -> Upgrade:
        """WAIT_KILLABLE_RECV: after Python's interrupt and CONTINUE, wait (serving the
        listener) for the interrupt stop that follows the call: (U_REGS, ...) as upgrade."""
        ...

    def finish(self, tid: int, timeout_ms: int = -1) -> Upgrade:
        """From the interrupt stop to the real result: (RESULT, state, rval, ...) with the
        thread resumed, or a hand-back (see Upgrade)."""
        ...


class _Module(Protocol):
    def Core(self, listener: int, wake_fd: int,  # noqa: N802 - the C type's name
             specs: list[tuple[int, int, int, int, int]]) -> NativeCore: ...

    def step(self, waker: int, candidates: bytes, inside: set[int],
             owes: set[int]) -> tuple[int, int, int]:
        """The attach engine's stepping loop (tracer/engine/stepping.py)."""
        ...

    def capture(self, pid: int, rsp: int, fs_base: int, layout: tuple[int, ...] | None,
                hint: tuple[int, ...], hint_lo: int, hint_hi: int
                ) -> tuple[tuple[int, ...], tuple[bytes, ...], int, tuple[int, ...], int, int]:
        """A stopped thread's capture (tracer/unwind/capture.py `take_capture`)."""
        ...


def load() -> tuple[_Module | None, str]:
    """(the compiled module, or None), and why, for `run -v`."""
    if os.environ.get(ENV, "1").strip().lower() in ("0", "no", "off", "false"):
        return None, f"pure-Python per-call path ({ENV}={os.environ[ENV]})"
    try:
        module = importlib.import_module("tracer.engine._native")
    except ImportError as e:
        return None, f"pure-Python per-call path (the native core did not load: {e})"
    return cast(_Module, module), "native per-call core"


def call_specs() -> list[tuple[int, int, int, int, int]]:
    """(nr, path argument, flag argument, second flag argument, AT_ flags argument; -1 for
    none) of the calls the core may answer alone: those whose record follows from the
    number, the flag arguments, the PC and the path string. Not exec, connect, creat
    (always seen in full) nor openat2 (its flags live in a struct the core does not read).
    With an empty path and AT_EMPTY_PATH in the AT_ flags argument, the entry decoder
    records nothing (an fstat by another name, tracer/recording/entry.py): the core
    answers those too."""
    out = []
    for nr, spec in sorted(x86_64_table().items()):
        if spec.cls in (EXEC, CONNECT) or spec.name == "creat" or spec.path is None \
                or spec.flag_kind == "openhow":
            continue
        flags = spec.flags if spec.flags is not None else -1
        extra = 3 if spec.name == "faccessat2" else -1  # its AT_ flags are in args[3]
        at = flags if spec.flag_kind == "at" else extra
        out.append((nr, spec.path, flags, extra, at))
    return out


def new_core(module: _Module, listener: int, wake_fd: int) -> NativeCore:
    return module.Core(listener, wake_fd, call_specs())
