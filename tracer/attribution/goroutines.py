"""The Go runtime's goroutines, read from a stopped process: `runtime.allgs`, a g's status,
and where a parked g resumes (the PC and SP a walk of its stack starts from).

Offsets come from the runtime's layout (tracer/unwind/goruntime.py); the status values are
the runtime's `_G*` constants (runtime/runtime2.go), stable from Go 1.19 to 1.27.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from tracer.unwind.stack import GoContext, Reader, word

if TYPE_CHECKING:
    from tracer.unwind.goruntime import RuntimeLayout

G_RUNNABLE: Final = 1
G_RUNNING: Final = 2
G_SYSCALL: Final = 3
G_WAITING: Final = 4
G_COPYSTACK: Final = 8  # the stack is being moved: transient, like running
G_PREEMPTED: Final = 9
G_SCAN: Final = 0x1000  # the GC is scanning the stack: the status underneath still holds
RUNNING: Final = (G_RUNNING, G_COPYSTACK)  # no saved context to walk from


def allgs(ctx: GoContext, read: Reader, limit: int) -> list[int]:
    """Addresses of every g in `runtime.allgs` ([] when it is not known or longer than
    `limit`); raises MemoryError_ when its slice header cannot be read."""
    if ctx.rt.allgs is None:
        return []
    base = ctx.rt.allgs + ctx.module.bias
    ptr, n = word(read, base), word(read, base + 8)
    if not ptr or n > limit:
        return []
    data = read(ptr, 8 * n)
    return [g for g in (int.from_bytes(data[i:i + 8], "little")
                        for i in range(0, len(data) - 7, 8)) if g]


def status(read: Reader, g: int, lay: RuntimeLayout) -> int:
    """g.atomicstatus without the GC's scan bit."""
    return word(read, g + lay.g_atomicstatus) & 0xFFFF & ~G_SCAN


def resume_point(read: Reader, g: int, lay: RuntimeLayout, st: int) -> tuple[int, int] | None:
    """(pc, sp) a goroutine in status `st` resumes from: its syscall's in a syscall, its
    saved context when parked or runnable; None otherwise (running, dead, unknown)."""
    if st == G_SYSCALL:
        return word(read, g + lay.g_syscallpc), word(read, g + lay.g_syscallsp)
    if st in (G_WAITING, G_RUNNABLE, G_PREEMPTED):
        return word(read, g + lay.g_sched + 8), word(read, g + lay.g_sched)
    return None


def saved_context(read: Reader, g: int, lay: RuntimeLayout) -> tuple[int, int] | None:
    """(pc, sp) a parked goroutine resumes from; None when it runs (its context is stale)."""
    return resume_point(read, g, lay, status(read, g, lay))
