"""The goroutine that started another one, on Go versions without `g.parentGoid` (1.19-1.20).

From 1.21 on a g records its parent's goid. Before that it records only `g.gopc`, the PC of
the `go` statement. The parent is then found the way a person would: among the parked
goroutines, the one whose stack is inside the function that holds that `go` statement
(helpers such as net's per-query goroutines are started by a function that then waits for
them). When that function is a closure (`F.func3`) that has already returned, the search
moves out to the function it was defined in (`F`), one level at a time. At each level,
exactly one match names the parent; several name nobody, rather than a guess
(docs/go-runtime.md, "Runtime offsets", notes).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from tracer.errors import CgotraceError
from tracer.unwind.stack import MemoryError_, Reader, Unwinder, _GoCtx, word

if TYPE_CHECKING:
    from tracer.unwind.goruntime import RuntimeLayout

MAX_GOROUTINES: Final = 10_000  # walks on one search; a bigger program gets no answer
G_RUNNABLE: Final = 1
G_SYSCALL: Final = 3
G_WAITING: Final = 4
# F.func3, F.gowrap1, F.deferwrap2, and closures inside closures: F.func3.2
_CLOSURE: Final = re.compile(r"\.(?:(?:func|gowrap|deferwrap)\d+|\d+)$")


def goroutines(ctx: _GoCtx, read: Reader, limit: int = MAX_GOROUTINES) -> list[int]:
    """Addresses of every g in `runtime.allgs` ([] when it cannot be read or is too long)."""
    if ctx.rt.allgs is None:
        return []
    base = ctx.rt.allgs + ctx.module.bias
    try:
        ptr, n = word(read, base), word(read, base + 8)
    except MemoryError_:
        return []
    if not ptr or n > limit:
        return []
    data = read(ptr, 8 * n)
    return [g for g in (int.from_bytes(data[i:i + 8], "little")
                        for i in range(0, len(data) - 7, 8)) if g]


def saved_context(read: Reader, g: int, lay: RuntimeLayout) -> tuple[int, int] | None:
    """(pc, sp) a parked goroutine resumes from; None when it runs (its context is stale)."""
    status = word(read, g + lay.g_atomicstatus) & 0xFFFF
    if status == G_SYSCALL:
        return word(read, g + lay.g_syscallpc), word(read, g + lay.g_syscallsp)
    if status in (G_WAITING, G_RUNNABLE):
        return word(read, g + lay.g_sched + 8), word(read, g + lay.g_sched)
    return None


def enclosing_functions(name: str) -> list[str]:
    """`F.func3.2` -> [`F.func3.2`, `F.func3`, `F`]: a closure, then where it was defined."""
    out = [name]
    while True:
        m = _CLOSURE.search(out[-1])
        if m is None:
            return out
        out.append(out[-1][:m.start()])


def find_creator(unwinder: Unwinder, ctx: _GoCtx, read: Reader, fs_base: int, gopc: int,
                 exclude: int) -> int | None:
    """The g whose parked stack is in the function holding `gopc` (absolute), or, failing
    that, in an enclosing function of that closure, if only one is; `exclude` (the created
    goroutine) is never a candidate."""
    pcln = ctx.module.image.pcln if ctx.module.image is not None else None
    if pcln is None or not gopc:
        return None
    bias = ctx.module.bias
    try:
        fn = pcln.func_for_pc(gopc - bias - 1)
    except CgotraceError:
        return None
    if fn is None:
        return None
    ranges: list[tuple[int, int]] = []
    for name in enclosing_functions(fn.name):
        outer = fn if name == fn.name else pcln.lookup_function(name)
        if outer is not None:
            ranges.append((outer.entry + bias, outer.end + bias))
    stacks = _parked_stacks(unwinder, ctx, read, fs_base, exclude)
    for lo, hi in ranges:
        found = [g for g, pcs in stacks if any(lo <= pc < hi for pc in pcs)]
        if len(found) == 1:
            return found[0]
        if found:
            return None
    return None


def _parked_stacks(unwinder: Unwinder, ctx: _GoCtx, read: Reader, fs_base: int,
                   exclude: int) -> list[tuple[int, list[int]]]:
    """(g, the PCs of its stack, return addresses minus one) for every parked goroutine."""
    out: list[tuple[int, list[int]]] = []
    for g in goroutines(ctx, read):
        if g == exclude:
            continue
        try:
            resume = saved_context(read, g, ctx.rt.layout)
        except MemoryError_:
            continue
        if resume is None or not resume[0]:
            continue
        stack = unwinder.unwind_goroutine(resume[0], resume[1], read, fs_base)
        out.append((g, [f.pc - f.is_return for f in stack.frames]))
    return out
