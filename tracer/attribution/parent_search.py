"""The goroutine that started another one, on Go versions without `g.parentGoid` (1.19-1.20).

From 1.21 on a g records its parent's goid. Before that it records only `g.gopc`, the PC of
the `go` statement. The parent is then found the way a person would: among the parked
goroutines, the one whose stack is inside the function that holds that `go` statement
(helpers such as net's per-query goroutines are started by a function that then waits for
them). When that function is a closure (`F.func3`) that has already returned, the search
moves out to the function it was defined in (`F`), one level at a time. When none of
those is on a parked stack either (the function holding the `go` statement was a helper that
returned to its caller, as errgroup's `Group.Go` does before the caller's `Group.Wait`), the
last level is the callers: a parked frame whose function contains a direct call to one of
them. At each level, exactly one match names the parent; several name nobody, rather than a
guess (docs/go-runtime.md, "Goroutine creators before 1.21").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Final

from tracer.attribution.goroutines import RUNNING, allgs, saved_context, status
from tracer.errors import CgotraceError
from tracer.unwind.stack import GoContext, MemoryError_, Reader, Unwinder

if TYPE_CHECKING:
    from tracer.binary.elf import ElfImage
    from tracer.binary.pclntab import Func, PclnTable

MAX_GOROUTINES: Final = 10_000  # walks on one search; a bigger program gets no answer
# F.func3, F.gowrap1, F.deferwrap2, and closures inside closures: F.func3.2
_CLOSURE: Final = re.compile(r"\.(?:(?:func|gowrap|deferwrap)\d+|\d+)$")
_CALL_REL32: Final = 0xE8  # amd64 `CALL rel32`: the target is the next instruction + rel32


def enclosing_functions(name: str) -> list[str]:
    """`F.func3.2` -> [`F.func3.2`, `F.func3`, `F`]: a closure, then where it was defined."""
    out = [name]
    while True:
        m = _CLOSURE.search(out[-1])
        if m is None:
            return out
        out.append(out[-1][:m.start()])


@dataclass(frozen=True, slots=True)
class Search:
    """A creator search: the parent g (None: not found), and how many goroutines were
    running where no stack could be read (then a miss may only mean "not yet parked")."""

    g: int | None
    unseen: int = 0


def find_creator(unwinder: Unwinder, ctx: GoContext, read: Reader, fs_base: int, gopc: int,
                 exclude: int, running: Mapping[int, list[int]] | None = None) -> Search:
    """The g whose stack is in the function holding `gopc` (absolute), or, failing that, in
    an enclosing function of that closure, or, failing that, in a function that calls one
    of those directly; each level names a g only when it is the only match. Parked
    goroutines are walked from their saved context; `running` gives the PCs of running ones
    whose thread is stopped (g -> PCs). `exclude` (the created goroutine) is never a
    candidate."""
    pcln = ctx.module.image.pcln if ctx.module.image is not None else None
    if pcln is None or not gopc:
        return Search(None)
    funcs = _functions_holding(pcln, gopc - ctx.module.bias - 1)
    if not funcs:
        return Search(None)
    stacks, unseen = _goroutine_stacks(unwinder, ctx, read, fs_base, exclude, running or {})
    bias = ctx.module.bias
    for f in funcs:
        lo, hi = f.entry + bias, f.end + bias
        found = [g for g, pcs in stacks if any(lo <= pc < hi for pc in pcs)]
        if found:
            return Search(_only(found), unseen)
    elf = ctx.module.image.elf if ctx.module.image is not None else None
    if elf is None:
        return Search(None, unseen)
    targets = frozenset(f.entry for f in funcs)
    found = [g for g, pcs in stacks
             if any(_calls_one_of(pcln, elf, pc - bias, targets) for pc in pcs)]
    return Search(_only(found), unseen)


def _functions_holding(pcln: PclnTable, pc: int) -> list[Func]:
    """The function at link-time `pc`, then the functions it is a closure of, outwards
    ([] when no function holds `pc`)."""
    try:
        fn = pcln.func_for_pc(pc)
    except CgotraceError:
        return []
    if fn is None:
        return []
    funcs = [fn]
    for name in enclosing_functions(fn.name)[1:]:
        outer = pcln.lookup_function(name)
        if outer is not None:
            funcs.append(outer)
    return funcs


def _only(found: Sequence[int]) -> int | None:
    return found[0] if len(found) == 1 else None


def _calls_one_of(pcln: PclnTable, elf: ElfImage, pc: int, targets: frozenset[int]) -> bool:
    """Whether the function at link-time `pc` holds a direct call to one of `targets`
    (runtime functions never call application or library code directly: skipped)."""
    try:
        fn = pcln.func_for_pc(pc)
    except CgotraceError:
        return False
    if fn is None or fn.name.startswith("runtime."):
        return False
    return not targets.isdisjoint(direct_calls(elf, fn))


@lru_cache(maxsize=4096)
def direct_calls(elf: ElfImage, fn: Func) -> frozenset[int]:
    """Link-time targets of the `CALL rel32` instructions in `fn` (scanned byte by byte: an
    0xE8 inside another instruction yields a stray target, which matters only if it equals
    the entry of the function searched for)."""
    try:
        code = elf.read_vaddr(fn.entry, fn.end - fn.entry)
    except CgotraceError:
        return frozenset()
    out = set()
    i = code.find(_CALL_REL32, 0, len(code) - 4)
    while i >= 0:
        rel = int.from_bytes(code[i + 1:i + 5], "little", signed=True)
        out.add(fn.entry + i + 5 + rel)
        i = code.find(_CALL_REL32, i + 1, len(code) - 4)
    return frozenset(out)


def _all_goroutines(ctx: GoContext, read: Reader) -> list[int]:
    try:
        return allgs(ctx, read, MAX_GOROUTINES)
    except MemoryError_:
        return []


def _goroutine_stacks(unwinder: Unwinder, ctx: GoContext, read: Reader, fs_base: int,
                      exclude: int, running: Mapping[int, list[int]]
                      ) -> tuple[list[tuple[int, list[int]]], int]:
    """(g, the PCs of its stack, return addresses minus one) for every parked goroutine and
    every running one in `running`; and how many others were running, unseen."""
    out: list[tuple[int, list[int]]] = []
    unseen = 0
    lay = ctx.rt.layout
    for g in _all_goroutines(ctx, read):
        if g == exclude:
            continue
        if g in running:
            out.append((g, running[g]))
            continue
        try:
            resume = saved_context(read, g, lay)
            if resume is None and status(read, g, lay) in RUNNING:
                unseen += 1
        except MemoryError_:
            continue
        if resume is None or not resume[0]:
            continue
        stack = unwinder.unwind_goroutine(resume[0], resume[1], read, fs_base)
        out.append((g, [f.pc - f.is_return for f in stack.frames]))
    return out, unseen
