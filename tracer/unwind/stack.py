"""The stop-time unwinder (go-internals 3.10): one walk across Go, C and the cgo boundary.

Per frame, by what the PC lies in:

* a Go function with a pcsp table: step with pcsp (`ret = [sp+delta]`, `sp += delta+8`); at
  `runtime.asmcgocall` (not innermost) switch from the g0 stack back to the goroutine through
  the depth/old-g slots asmcgocall left there; at `runtime.systemstack` on g0 switch to
  `m.curg.sched`; callbacks need nothing (cgocallback plants a return PC that continues the
  walk on the goroutine stack); stop at goexit/mstart/rt0_go;
* a native module with CFI: one CFI step (tracking RBP, RBX, R12-R15);
* a C function without CFI (internal-link cgo wrappers, static musl libc): scan up the stack
  (at most `scan_limit` bytes) for a return address into asmcgocall and continue there.

All memory goes through a `read(addr, n) -> bytes` callable (habit 3), so tests feed bytes.
The walk never raises for bad memory or odd code: it records why it ended in `Stack.end`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from tracer.errors import CgotraceError
from tracer.symbols.maps import Module
from tracer.unwind import cfi
from tracer.unwind.goruntime import FLAG_TOP_FRAME, FUNCID_ASMCGOCALL, STACK_ROOTS, GoRuntime

Reader = Callable[[int, int], bytes]

MAX_FRAMES: Final = 128
SCAN_LIMIT: Final = 64 * 1024
PAGE: Final = 4096


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


class ModuleMap(Protocol):
    def module_for(self, pc: int) -> Module | None: ...


@dataclass(frozen=True, slots=True)
class RawFrame:
    """One unsymbolized frame: an absolute PC and the module it lies in."""

    pc: int
    module: Module | None
    kind: str  # "go", "c" (native code), "unknown" (no module)
    is_return: bool  # pc is a return address: symbolize pc-1


@dataclass(slots=True)
class Stack:
    frames: list[RawFrame] = field(default_factory=list)
    g: int | None = None  # the goroutine the syscall belongs to (its runtime.g address)
    crossed_cgo: bool = False  # went through asmcgocall from the g0 stack to a goroutine
    end: str = ""  # why the walk stopped: root, outermost, cap, unreadable, no-module, ...
    notes: list[str] = field(default_factory=list)


class MemoryError_(Exception):
    """A read that came back short (unmapped memory, process gone)."""


class PagedReader:
    """Caches whole pages for one stop: a stack walk touches a handful of pages many times.

    Falls back to the exact range when a page read fails (the last page of a mapping).
    """

    def __init__(self, read: Reader) -> None:
        self._read = read
        self._pages: dict[int, bytes] = {}

    def __call__(self, addr: int, n: int) -> bytes:
        page = addr & ~(PAGE - 1)
        if addr + n <= page + PAGE:
            data = self._pages.get(page)
            if data is None:
                try:
                    data = self._read(page, PAGE)
                except OSError:
                    data = b""
                self._pages[page] = data
            if len(data) == PAGE:
                return data[addr - page:addr - page + n]
        return self._read(addr, n)


def word(read: Reader, addr: int) -> int:
    try:
        data = read(addr, 8)
    except OSError as e:
        raise MemoryError_(f"unreadable memory at {addr:#x}") from e
    if len(data) != 8:
        raise MemoryError_(f"unreadable memory at {addr:#x}")
    return int.from_bytes(data, "little")


@dataclass(slots=True)
class _GoCtx:
    """The Go runtime of the process and derived per-stop facts (read lazily)."""

    module: Module
    rt: GoRuntime
    read: Reader
    fs_base: int
    _tls_g: int | None | bool = False

    def tls_g(self) -> int | None:
        """g from TLS: the goroutine in Go code, g0 during a C call."""
        if self._tls_g is False:
            self._tls_g = None
            if self.fs_base:
                try:
                    self._tls_g = word(self.read, self.fs_base + self.rt.tls_g_offset) or None
                except MemoryError_:
                    self._tls_g = None
        return self._tls_g if not isinstance(self._tls_g, bool) else None

    def in_cgo_call(self) -> bool:
        """TLS g is this M's g0 with a user goroutine attached: C code called via asmcgocall
        (or runtime C code on g0). False before the runtime set TLS up (the loader phase)."""
        g = self.tls_g()
        if g is None:
            return False
        lay = self.rt.layout
        try:
            m = word(self.read, g + lay.g_m)
            return bool(m) and word(self.read, m + lay.m_g0) == g
        except MemoryError_:
            return False

    def asmcgocall_ret(self, pc: int) -> bool:
        rel = pc - self.module.bias
        return any(lo < rel < hi for lo, hi in self.rt.asmcgocall)


class Unwinder:
    """Walks one stopped thread's stack. Stateless between calls except for the module map."""

    def __init__(self, maps: ModuleMap, *, max_frames: int = MAX_FRAMES,
                 scan_limit: int = SCAN_LIMIT) -> None:
        self.maps = maps
        self.max_frames = max_frames
        self.scan_limit = scan_limit

    def go_context(self, read: Reader, fs_base: int) -> _GoCtx | None:
        for mod in getattr(self.maps, "modules", ()):
            img = mod.image
            if img is not None and img.pcln is not None and img.goruntime is not None:
                return _GoCtx(mod, img.goruntime, read, fs_base)
        return None

    def unwind(self, regs: Registers, read: Reader) -> Stack:
        """The stack of a thread stopped with `regs`, innermost frame first."""
        state = {cfi.RSP: regs.rsp, cfi.RBP: regs.rbp, cfi.RBX: regs.rbx, 12: regs.r12,
                 13: regs.r13, 14: regs.r14, 15: regs.r15}
        go = self.go_context(read, regs.fs_base)
        stack = Stack()
        self._walk(stack, regs.rip, state, read, go, innermost=True)
        if stack.g is None and go is not None:
            stack.g = self._current_goroutine(go, stack)
        return stack

    def unwind_goroutine(self, pc: int, sp: int, read: Reader, fs_base: int = 0) -> Stack:
        """The stack of a parked goroutine from its saved `g.sched` pc/sp."""
        go = self.go_context(read, fs_base)
        stack = Stack()
        self._walk(stack, pc, {cfi.RSP: sp}, read, go, innermost=False)
        return stack

    # --- the walk ---------------------------------------------------------------------------
    def _walk(self, stack: Stack, pc: int, regs: dict[int, int], read: Reader,
              go: _GoCtx | None, *, innermost: bool) -> None:
        frames = stack.frames
        try:
            while True:
                if len(frames) >= self.max_frames:
                    stack.end = "cap"
                    return
                mod = self.maps.module_for(pc)
                if mod is None:
                    frames.append(RawFrame(pc, None, "unknown", not innermost))
                    if not self._scan(stack, regs, read, go):
                        stack.end = stack.end or "no-module"
                        return
                    pc, innermost = regs[cfi.RA], False
                    continue
                rel = pc - mod.bias
                look = rel if innermost else rel - 1
                img = mod.image
                pcln = img.pcln if img is not None else None
                fn = None
                if pcln is not None:
                    try:
                        fn = pcln.func_for_pc(look)
                    except CgotraceError:
                        fn = None
                if fn is not None and fn.has_pcsp and pcln is not None:
                    frames.append(RawFrame(pc, mod, "go", not innermost))
                    if fn.name in STACK_ROOTS or fn.flag & FLAG_TOP_FRAME:
                        stack.end = "root"
                        return
                    if fn.func_id == FUNCID_ASMCGOCALL and not innermost and go is not None:
                        sp, pc = self._leave_g0(stack, regs[cfi.RSP], read, go)
                        regs = {cfi.RSP: sp}
                        continue
                    if fn.name == "runtime.systemstack" and not innermost and go is not None:
                        switched = self._systemstack(stack, read, go)
                        if switched is not None:
                            sp, pc = switched
                            regs = {cfi.RSP: sp}
                            continue
                    delta = pcln.sp_delta(fn, look)
                    if delta is None:
                        stack.end = "no-pcsp"
                        return
                    sp = regs[cfi.RSP]
                    pc = word(read, sp + delta)
                    regs = {cfi.RSP: sp + delta + 8}
                    innermost = False
                    continue
                frames.append(RawFrame(pc, mod, "c", not innermost))
                table = img.cfi if img is not None and fn is None else None
                row = table.row_for(look) if table is not None else None
                if row is not None:
                    new = cfi.step(row, regs, read)
                    if new is not None:
                        regs, pc, innermost = new, new[cfi.RA], False
                        continue
                    ra_rule = dict(row.rules).get(cfi.RA, cfi.Rule("offset"))
                    if not row.cfa_expr and ra_rule.kind == "undefined":
                        stack.end = "outermost"  # _start, clone3: the thread's first frame
                        return
                if not self._scan(stack, regs, read, go):
                    stack.end = stack.end or ("no-cfi" if row is None else "cfa-expression")
                    return
                pc, innermost = regs[cfi.RA], False
        except MemoryError_ as e:
            stack.end = "unreadable"
            stack.notes.append(str(e))
        except CgotraceError as e:
            stack.end = "bad-symbols"
            stack.notes.append(str(e))

    def _scan(self, stack: Stack, regs: dict[int, int], read: Reader,
              go: _GoCtx | None) -> bool:
        """C code without CFI: find the return address into asmcgocall above SP.

        On success sets regs[RSP] just above the slot and regs[RA] to the return address.
        """
        if go is None or cfi.RSP not in regs or not go.in_cgo_call():
            return False
        sp = regs[cfi.RSP] & ~7
        limit = sp + self.scan_limit
        addr = sp
        while addr < limit:
            chunk_end = min(limit, (addr & ~(PAGE - 1)) + PAGE)
            try:
                data = read(addr, chunk_end - addr)
            except OSError:
                data = b""
            if len(data) != chunk_end - addr:
                break
            for off in range(0, len(data) - 7, 8):
                value = int.from_bytes(data[off:off + 8], "little")
                if go.asmcgocall_ret(value):
                    regs.clear()
                    regs[cfi.RSP] = addr + off + 8
                    regs[cfi.RA] = value
                    stack.notes.append(f"scanned {addr + off - sp:#x} bytes to asmcgocall")
                    return True
            addr = chunk_end
        stack.end = "scan-failed"
        return False

    def _leave_g0(self, stack: Stack, s: int, read: Reader, go: _GoCtx) -> tuple[int, int]:
        """At a return into asmcgocall: S is the SP there. Back to the goroutine's frame."""
        lay = go.rt.layout
        old_g = word(read, s + go.rt.g0_g_slot)
        depth = word(read, s + go.rt.g0_depth_slot)
        if old_g == 0:
            dx = depth  # nosave path: the slot holds the original SP (we were on g0 already)
        else:
            dx = word(read, old_g + lay.g_stack_hi) - depth
            stack.crossed_cgo = True
            if stack.g is None:
                stack.g = old_g
        # asmcgocall pushed RBP and took DX = SP: [DX] = saved RBP, [DX+8] = return PC.
        return dx + 16, word(read, dx + 8)

    def _systemstack(self, stack: Stack, read: Reader, go: _GoCtx) -> tuple[int, int] | None:
        """systemstack on g0: continue on m.curg's saved context (as the runtime does)."""
        lay = go.rt.layout
        g = go.tls_g()
        if g is None:
            return None
        m = word(read, g + lay.g_m)
        if m == 0 or word(read, m + lay.m_g0) != g:
            return None
        curg = word(read, m + lay.m_curg)
        if curg == 0:
            return None
        if stack.g is None:
            stack.g = curg
        sp = word(read, curg + lay.g_sched)
        pc = word(read, curg + lay.g_sched + 8)
        return sp, pc

    def _current_goroutine(self, go: _GoCtx, stack: Stack) -> int | None:
        """The running goroutine when no cgo switch named it: TLS g unless that is g0."""
        g = go.tls_g()
        if g is None:
            return None
        lay = go.rt.layout
        try:
            m = word(go.read, g + lay.g_m)
            if m and word(go.read, m + lay.m_g0) == g:
                return None  # runtime code on the system stack, no goroutine
        except MemoryError_:
            return None
        return g
