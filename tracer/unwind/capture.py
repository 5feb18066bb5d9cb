"""The capture of a stopped thread: its registers and the memory a walk will read, taken
while the thread is stopped, in as few process_vm_readv calls as possible, so that the
thread can run on before its stack is walked (docs/attribution.md, "Capture").

What is captured (`take_capture`), in rounds of one `read_pages` call each (one
process_vm_readv with one iovec per page), a round only for pages not captured yet:

* the registers the unwinder reads (`CapturedRegs`: a copy, the engine's buffer is reused);
* the stack the thread is on: [SP, SP + STACK_WINDOW), cut at (or extended to, at most
  MAX_WINDOW) the stack's top `g.stack.hi` once the current g is known;
* the Go runtime words the walk reads: the TLS slot of g (fs_base + the runtime's offset),
  the g (G_SPAN bytes: stack bounds, m, sched, goid, gopc, parentGoid), its m (m.g0,
  m.curg); for a thread in C or runtime code on the system stack (TLS g is m.g0), m.curg's
  g and the goroutine's own stack from curg.sched.sp (asmcgocall and systemstack save it
  there) up to its stack.hi;
* a hint (`Hint`): the struct pages and goroutine stack pages this thread's previous
  capture found (an M keeps its g0 and m), and the bounds of the stack it was on, so the
  first round already reads [SP, g.stack.hi): the usual capture is one call.

`CaptureReader` is the walk's reader over it: a read inside a captured page costs a slice;
a page not captured is read live and counted (`misses`), so a walk that ran after the
thread resumed and read memory the capture did not hold is visible, never silent.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from tracer.unwind.stack import PAGE, PagedReader, PagesReader, Reader

if TYPE_CHECKING:
    from tracer.engine.base import Registers
    from tracer.unwind.goruntime import GoRuntime

STACK_WINDOW: Final = 16 * 1024  # from SP before the stack's top is known
MAX_WINDOW: Final = 64 * 1024  # a stack captured at most this far above its SP
G_SPAN: Final = 512  # bytes of a runtime.g the walk and the creator chain read
M_SPAN: Final = 256  # bytes of a runtime.m (g0 at 0, curg at 184/192)
MAX_ROUNDS: Final = 5  # TLS -> g -> m -> curg -> the goroutine's stack
MAX_PAGES: Final = 64  # per round (tracer.ptrace.memory.MAX_BATCH_PAGES)
_U64: Final = struct.Struct("<Q")


@dataclass(slots=True)
class CapturedRegs:
    """The registers the unwinder reads, copied at the stop (`Registers`; a copy, as
    engines reuse their register buffer)."""

    rip: int
    rsp: int
    rbp: int
    rbx: int
    r12: int
    r13: int
    r14: int
    r15: int
    fs_base: int

    @classmethod
    def of(cls, regs: Registers) -> CapturedRegs:
        return cls(int(regs.rip), int(regs.rsp), int(regs.rbp), int(regs.rbx), int(regs.r12),
                   int(regs.r13), int(regs.r14), int(regs.r15), int(regs.fs_base))


class CaptureReader(PagedReader):
    """A `PagedReader` whose pages were taken at the stop; a page it lacks is read live
    and counted in `misses` (pages) and `missed` (their addresses, for tests and -v)."""

    __slots__ = ("calls", "missed", "misses")

    def __init__(self, read: Reader, read_pages: PagesReader | None = None) -> None:
        super().__init__(read, read_pages)
        self.misses = 0
        self.missed: list[int] = []
        self.calls = 0  # read_pages calls the capture made

    def fill(self, pages: Iterable[int]) -> None:
        """Capture `pages` (page-aligned) now; unreadable ones are kept as unreadable.
        The kernel stops a batch at its first unreadable page: the rest is asked again."""
        todo = sorted(p for p in set(pages) if p not in self._pages)
        read_pages = self._read_pages
        while todo and read_pages is not None:
            batch, todo = todo[:MAX_PAGES], todo[MAX_PAGES:]
            self.calls += 1
            try:
                got = read_pages(batch)
            except OSError:
                got = []
            for i, page in enumerate(batch):
                data = got[i] if i < len(got) else b""
                if len(data) != PAGE:
                    self._pages[page] = b""  # unreadable at the stop
                    todo = batch[i + 1:] + todo
                    break
                self._pages[page] = data

    def adopt(self, pages: tuple[int, ...], datas: tuple[bytes, ...], calls: int) -> None:
        """Pages captured elsewhere (the native capture): b"" for an unreadable one."""
        self._pages.update(zip(pages, datas, strict=True))
        self.calls += calls

    def has(self, page: int) -> bool:
        return page in self._pages

    def peek(self, addr: int) -> int | None:
        """The word at `addr` from the capture alone (None when not captured)."""
        off = addr & (PAGE - 1)
        data = self._pages.get(addr - off)
        if data is None or len(data) != PAGE or off > PAGE - 8:
            return None
        return int(_U64.unpack_from(data, off)[0])

    def _page(self, page: int) -> bytes:
        if page not in self._pages:
            self.misses += 1
            self.missed.append(page)
        return super()._page(page)

    def __call__(self, addr: int, n: int) -> bytes:
        page = addr & ~(PAGE - 1)
        if addr + n <= page + PAGE:
            data = self._pages.get(page) or self._page(page)
            if len(data) == PAGE:
                return data[addr - page:addr - page + n]
            return b""
        # across pages: from the capture while it has them, then short like a live read
        out = b""
        while n > 0:
            page = addr & ~(PAGE - 1)
            data = self._pages.get(page) or self._page(page)
            if len(data) != PAGE:
                break
            take = min(n, page + PAGE - addr)
            out += data[addr - page:addr - page + take]
            addr += take
            n -= take
        return out


_NativeCapture = Callable[..., tuple[tuple[int, ...], tuple[bytes, ...], int, tuple[int, ...],
                                     int, int]]
_native: dict[str | None, _NativeCapture | None] = {}  # by CGOTRACE_NATIVE's value


def native_capture() -> _NativeCapture | None:
    """The native core's `capture`, unless it is off (CGOTRACE_NATIVE=0) or not built."""
    switch = os.environ.get("CGOTRACE_NATIVE")
    if switch not in _native:
        from tracer.engine.native import load

        module, _why = load()
        _native[switch] = module.capture if module is not None else None
    return _native[switch]


def _pages(lo: int, hi: int) -> range:
    return range(lo & ~(PAGE - 1), hi, PAGE) if 0 < lo < hi else range(0)


@dataclass(frozen=True, slots=True)
class Hint:
    """What one capture of a thread tells the next: the runtime struct pages and the
    goroutine stack pages it found (an M keeps its g0 and m; a repeated call path has the
    same depth), and the bounds of the stack the thread was on."""

    pages: tuple[int, ...] = ()
    stack_lo: int = 0
    stack_hi: int = 0


@dataclass(frozen=True, slots=True)
class Capture:
    """A stopped thread as captured: registers, its memory reader, and the hint for the
    same thread's next capture."""

    regs: CapturedRegs
    reader: CaptureReader
    hint: Hint


NO_HINT: Final = Hint()


def take_capture(regs: Registers, read: Reader, read_pages: PagesReader,
                 rt: GoRuntime | None, hint: Hint = NO_HINT, pid: int | None = None
                 ) -> Capture:
    """Capture the thread stopped with `regs` (see the module docstring). `rt` is the
    process's Go runtime (None: a C program, only the stack window is taken). With the
    process's `pid` and the native core (tracer/engine/_native.c, section "capture") the
    rounds run in C; the same pages, the same hint."""
    cregs = CapturedRegs.of(regs)
    reader = CaptureReader(read, read_pages)
    native = native_capture() if pid is not None else None
    if native is not None and pid is not None:
        layout = None
        if rt is not None:
            lay = rt.layout
            layout = (rt.tls_g_offset, lay.g_stack_hi, lay.g_m, lay.m_g0, lay.m_curg,
                      lay.g_sched, STACK_WINDOW, MAX_WINDOW, G_SPAN, M_SPAN, MAX_ROUNDS)
        pages, datas, calls, kept, lo, hi = native(pid, cregs.rsp, cregs.fs_base, layout,
                                                   hint.pages, hint.stack_lo, hint.stack_hi)
        reader.adopt(pages, datas, calls)
        return Capture(cregs, reader, Hint(kept, lo, hi) if kept or lo or hi else NO_HINT)
    sp = cregs.rsp
    if hint.stack_lo <= sp < hint.stack_hi:  # on the stack it was on last time
        want = set(_pages(sp, min(hint.stack_hi, sp + MAX_WINDOW)))
    else:
        want = set(_pages(sp, sp + STACK_WINDOW))
    want.update(hint.pages)
    if rt is not None and cregs.fs_base:
        want.add((cregs.fs_base + rt.tls_g_offset) & ~(PAGE - 1))
    found = NO_HINT
    for _ in range(MAX_ROUNDS):
        reader.fill(want)
        if rt is None:
            break
        want, found = _go_pages(reader, cregs, rt)
        if all(reader.has(p) for p in want):
            break
    return Capture(cregs, reader, found)


def _go_pages(reader: CaptureReader, regs: CapturedRegs, rt: GoRuntime
              ) -> tuple[set[int], Hint]:
    """The pages a walk of this Go thread reads, as far as the capture so far tells, and
    the hint for the thread's next capture."""
    peek: Callable[[int], int | None] = reader.peek
    lay = rt.layout
    sp = regs.rsp
    stack = set(_pages(sp, sp + STACK_WINDOW))
    if not regs.fs_base:
        return stack, NO_HINT
    tls = regs.fs_base + rt.tls_g_offset
    stack.add(tls & ~(PAGE - 1))
    g = peek(tls)
    if not g:
        return stack, NO_HINT
    kept: set[int] = set(_pages(g, g + G_SPAN))
    lo, hi = peek(g) or 0, peek(g + lay.g_stack_hi) or 0  # g.stack: lo at 0, hi at 8
    if sp < hi:
        stack = set(_pages(sp, min(hi, sp + MAX_WINDOW))) | {tls & ~(PAGE - 1)}
    m = peek(g + lay.g_m)
    if m:
        kept.update(_pages(m, m + M_SPAN))
        if peek(m + lay.m_g0) == g:  # on the system stack: the goroutine's own stack too
            curg = peek(m + lay.m_curg)
            if curg:
                kept.update(_pages(curg, curg + G_SPAN))
                gsp = peek(curg + lay.g_sched)
                ghi = peek(curg + lay.g_stack_hi)
                if gsp and ghi and gsp < ghi:
                    kept.update(_pages(gsp - 64, min(ghi, gsp + MAX_WINDOW)))
    return stack | kept, Hint(tuple(sorted(kept)), lo, hi)
