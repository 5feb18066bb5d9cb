"""The stop-time unwinder (docs/go-runtime.md, "Unwinding"): one walk across Go, C and
the cgo boundary.

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

import struct
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

from tracer.binary.pclntab import PclnTable
from tracer.engine.base import Registers
from tracer.errors import CgotraceError
from tracer.unwind import cfi
from tracer.unwind.goruntime import FLAG_TOP_FRAME, FUNCID_ASMCGOCALL, STACK_ROOTS, GoRuntime

if TYPE_CHECKING:
    from tracer.binary.elf import ElfImage
    from tracer.binary.pclntab import PclnTable

Reader = Callable[[int, int], bytes]


class ImageLike(Protocol):
    """What the unwinder reads of one ELF image (tracer.attribution.modules.LoadedImage)."""

    @property
    def pcln(self) -> PclnTable | None: ...

    @property
    def cfi(self) -> cfi.CfiTable | None: ...

    @property
    def goruntime(self) -> GoRuntime | None: ...

    @property
    def elf(self) -> ElfImage | None: ...


class Module(Protocol):
    """One mapped image in one process (tracer.attribution.modules.Module): the unwinder never
    imports the process layer, which sits above it."""

    name: str
    path: str
    bias: int

    @property
    def image(self) -> ImageLike | None: ...

MAX_FRAMES: Final = 128
SEEN_PER_PC: Final = 8  # Go-only stacks kept per innermost PC (`Unwinder._seen_stack`)
MAX_SEEN: Final = 4096  # innermost PCs with kept stacks (cleared when exceeded)
SCAN_LIMIT: Final = 64 * 1024
PAGE: Final = 4096
_TRACKED: Final = frozenset(cfi.TRACKED)
_U64: Final = struct.Struct("<Q")


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


PagesReader = Callable[[list[int]], list[bytes]]


class PagedReader:
    """Caches whole pages for one stop: a stack walk touches a handful of pages many times.

    `prefetch(pages)` reads many pages in one call when a batch reader is given (one
    process_vm_readv for the pages the thread's previous walk touched); `touched` lists the
    pages used so far. Falls back to the exact range when a page read fails (the last page
    of a mapping).
    """

    __slots__ = ("_pages", "_read", "_read_pages")

    def __init__(self, read: Reader, read_pages: PagesReader | None = None) -> None:
        self._read = read
        self._read_pages = read_pages
        self._pages: dict[int, bytes] = {}

    def prefetch(self, pages: list[int]) -> None:
        if self._read_pages is None or not pages:
            return
        try:
            got = self._read_pages(pages)
        except OSError:
            return
        for page, data in zip(pages, got, strict=False):
            if len(data) == PAGE:
                self._pages[page] = data

    @property
    def touched(self) -> list[int]:
        return [p for p, d in self._pages.items() if len(d) == PAGE]

    def _page(self, page: int) -> bytes:
        data = self._pages.get(page)
        if data is None:
            try:
                data = self._read(page, PAGE)
            except OSError:
                data = b""
            self._pages[page] = data
        return data

    def __call__(self, addr: int, n: int) -> bytes:
        page = addr & ~(PAGE - 1)
        if addr + n <= page + PAGE:
            data = self._pages.get(page) or self._page(page)
            if len(data) == PAGE:
                return data[addr - page:addr - page + n]
        return self._read(addr, n)

    def cached(self, addr: int, n: int) -> bytes | None:
        """The `n` bytes at `addr` when every page of them is held already (prefetched or
        captured); None otherwise, without reading anything."""
        out = b""
        while n > 0:
            page = addr & ~(PAGE - 1)
            data = self._pages.get(page)
            if data is None or len(data) != PAGE:
                return None
            take = min(n, page + PAGE - addr)
            out += data[addr - page:addr - page + take]
            addr += take
            n -= take
        return out

    def word(self, addr: int) -> int:
        """The little-endian word at `addr`; MemoryError_ when unreadable."""
        off = addr & (PAGE - 1)
        if off <= PAGE - 8:
            data = self._pages.get(addr - off) or self._page(addr - off)
            if len(data) == PAGE:
                return int(_U64.unpack_from(data, off)[0])
        return _word_slow(self, addr)


def word(read: Reader, addr: int) -> int:
    """The little-endian word at `addr`; MemoryError_ when unreadable."""
    if isinstance(read, PagedReader):
        return read.word(addr)
    return _word_slow(read, addr)


def _word_slow(read: Reader, addr: int) -> int:
    try:
        data = read(addr, 8)
    except OSError as e:
        raise MemoryError_(f"unreadable memory at {addr:#x}") from e
    if len(data) != 8:
        raise MemoryError_(f"unreadable memory at {addr:#x}")
    return int.from_bytes(data, "little")


@dataclass(slots=True)
class GoContext:
    """The Go runtime of the process and derived per-stop facts (read lazily)."""

    module: Module
    rt: GoRuntime
    read: Reader
    fs_base: int
    asmcgocall_abs: tuple[tuple[int, int], ...] = ()  # runtime [entry, end) of asmcgocall
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
        return any(lo < pc < hi for lo, hi in self.asmcgocall_abs)


# --- compiled steps -----------------------------------------------------------------------
OP_GO: Final = 0  # Go frame: ret = [sp+delta], sp += delta+8
OP_ROOT: Final = 1  # goexit, mstart, rt0_go, top-frame flag: the stack ends here
OP_ASMCGOCALL: Final = 2  # return into asmcgocall: leave g0 for the goroutine stack
OP_SYSTEMSTACK: Final = 3  # systemstack on g0: continue on m.curg.sched
OP_CFI: Final = 4  # native frame with a CFI row
OP_SCAN: Final = 5  # native frame without CFI (or a CFI that does not step): scan for asmcgocall


@dataclass(frozen=True, slots=True)
class _CfiRecipe:
    """A CFI row pre-digested for `_cfi_step` (same semantics as `cfi.step`)."""

    cfa_reg: int
    cfa_offset: int
    loads: tuple[tuple[int, int], ...]  # (reg, offset from CFA): reg = [CFA+offset]
    values: tuple[tuple[int, int], ...]  # (reg, offset): reg = CFA+offset
    copies: tuple[tuple[int, int], ...]  # (reg, src): reg = src's value, or lost
    drops: tuple[int, ...]  # registers lost (undefined, expression)
    ra_offset: int | None  # RA = [CFA+ra_offset]
    ra_register: int | None  # RA = value of this register
    outermost: bool  # RA undefined: the thread's first frame

    @classmethod
    def from_row(cls, row: cfi.Row) -> _CfiRecipe | None:
        if row.cfa_expr:
            return None
        loads: list[tuple[int, int]] = []
        values: list[tuple[int, int]] = []
        copies: list[tuple[int, int]] = []
        drops: list[int] = []
        ra_offset: int | None = -8
        ra_register: int | None = None
        outermost = False
        for reg, rule in row.rules:
            if reg == cfi.RA:
                ra_offset = rule.arg if rule.kind == "offset" else None
                ra_register = rule.arg if rule.kind == "register" else None
                outermost = rule.kind == "undefined"
            elif rule.kind == "offset":
                loads.append((reg, rule.arg))
            elif rule.kind == "val_offset":
                values.append((reg, rule.arg))
            elif rule.kind == "register":
                copies.append((reg, rule.arg))
            elif rule.kind in ("undefined", "expression"):
                drops.append(reg)
        return cls(row.cfa_reg, row.cfa_offset, tuple(loads), tuple(values), tuple(copies),
                   tuple(drops), ra_offset, ra_register, outermost)


@dataclass(frozen=True, slots=True)
class _Step:
    """What the walk does at one PC (absolute, per process): built once, then replayed."""

    frame: RawFrame
    op: int
    delta: int | None = None  # Go frames: the pcsp value (None: no pcsp at this PC)
    recipe: _CfiRecipe | None = None
    row_found: bool = False  # a CFI row exists (for the end reason when it cannot step)


def _cfi_step(rc: _CfiRecipe, regs: dict[int, int], read: Reader) -> dict[int, int] | None:
    """`cfi.step` on a recipe; a short read raises MemoryError_ (the walk ends unreadable)."""
    base = regs.get(rc.cfa_reg)
    if base is None:
        return None
    cfa = base + rc.cfa_offset
    out = {r: v for r, v in regs.items() if r in _TRACKED}
    for reg, off in rc.loads:
        out[reg] = word(read, cfa + off)
    for reg, off in rc.values:
        out[reg] = cfa + off
    for reg, src in rc.copies:
        if src in regs:
            out[reg] = regs[src]
        else:
            out.pop(reg, None)
    for reg in rc.drops:
        out.pop(reg, None)
    if rc.ra_offset is not None:
        ra = word(read, cfa + rc.ra_offset)
    elif rc.ra_register is not None and rc.ra_register in regs:
        ra = regs[rc.ra_register]
    else:
        return None
    if ra == 0:
        return None
    out[cfi.RSP] = cfa
    out[cfi.RA] = ra
    return out


class Unwinder:
    """Walks one stopped thread's stack. Per process: the module map and the compiled steps.

    Each PC the walk meets is turned once into a `_Step` (its module, whether it is Go or
    native, the pcsp delta or the CFI recipe); a repeated call path then costs a dict lookup
    and a word read or two per frame. Steps are dropped when the module map is re-read.
    """

    def __init__(self, maps: ModuleMap, *, max_frames: int = MAX_FRAMES,
                 scan_limit: int = SCAN_LIMIT) -> None:
        self.maps = maps
        self.max_frames = max_frames
        self.scan_limit = scan_limit
        self._steps: dict[tuple[int, bool], _Step] = {}
        self._generation = -1
        self._go: tuple[Module, GoRuntime, tuple[tuple[int, int], ...]] | None = None
        self.steps_built = 0
        # rip -> Go-only stacks walked from it; a walk whose return slots (at the same
        # offsets from SP) hold the same PCs again is that stack
        # (bytes from SP to the last slot's end, the slots' unpacker, their PCs, frames)
        self._seen: dict[int, list[tuple[int, struct.Struct, tuple[int, ...],
                                         tuple[RawFrame, ...]]]] = {}
        self.seen_hits = 0  # walks answered from `_seen`

    def _sync(self) -> None:
        gen = getattr(self.maps, "generation", 0)
        if gen != self._generation:
            self._generation = gen
            self._steps.clear()
            self._seen.clear()
            self._go = None
            for mod in getattr(self.maps, "modules", ()):
                img = mod.image
                if img is not None and img.pcln is not None and img.goruntime is not None:
                    rt = img.goruntime
                    ranges = tuple((lo + mod.bias, hi + mod.bias) for lo, hi in rt.asmcgocall)
                    self._go = (mod, rt, ranges)
                    break

    def runtime(self) -> GoRuntime | None:
        """The process's Go runtime (None: no Go module mapped)."""
        self._sync()
        return self._go[1] if self._go is not None else None

    def go_context(self, read: Reader, fs_base: int) -> GoContext | None:
        self._sync()
        if self._go is None:
            return None
        mod, rt, ranges = self._go
        return GoContext(mod, rt, read, fs_base, ranges)

    def unwind(self, regs: Registers, read: Reader, *, max_frames: int | None = None) -> Stack:
        """The stack of a thread stopped with `regs`, innermost frame first (at most
        `max_frames` frames: a short walk for a cheap key)."""
        go = self.go_context(read, regs.fs_base)
        stack = self._seen_stack(regs.rip, regs.rsp, read) if max_frames is None else None
        if stack is None:
            state = {cfi.RSP: regs.rsp, cfi.RBP: regs.rbp, cfi.RBX: regs.rbx, 12: regs.r12,
                     13: regs.r13, 14: regs.r14, 15: regs.r15}
            stack = Stack()
            self._walk(stack, regs.rip, state, read, go, innermost=True,
                       limit=max_frames or self.max_frames)
            if max_frames is None:
                self._remember(regs.rip, regs.rsp, stack)
        if stack.g is None and go is not None and max_frames is None:
            stack.g = self._current_goroutine(go, stack)
        return stack

    # --- stacks seen before ---------------------------------------------------------------
    def _seen_stack(self, rip: int, rsp: int, read: Reader) -> Stack | None:
        """A Go-only stack walked before from this PC whose return slots (at the same
        offsets from SP) hold the same PCs now: the walk would find the same frames, as a
        Go step depends only on its PC and SP. One read of [SP, the last slot] from the
        pages already held (never a live read: a reader that holds none is walked) and one
        unpack, no step; the stack found moves to the front (a loop repeats it)."""
        seen = self._seen.get(rip)
        if not seen:
            return None
        held = read.cached if isinstance(read, PagedReader) else None
        data = b""
        for i, (span, slots, pcs, frames) in enumerate(seen):
            if len(data) < span:
                # only what is held: a stack seen from this PC may be deeper than this one
                got = held(rsp, span) if held is not None else None
                if got is None:
                    continue
                data = got
            if slots.unpack_from(data) == pcs:
                if i:
                    seen.insert(0, seen.pop(i))
                self.seen_hits += 1
                return Stack(frames=list(frames), end="root")
        return None

    def _remember(self, rip: int, rsp: int, stack: Stack) -> None:
        """Keep a walk that only took Go steps up to a root (see `_seen_stack`)."""
        if stack.end != "root" or stack.g is not None or stack.notes:
            return
        offsets: list[int] = []
        sp = rsp
        innermost = True
        for frame in stack.frames[:-1]:
            step = self._steps.get((frame.pc, innermost))
            if step is None or step.op != OP_GO or step.delta is None:
                return
            offsets.append(sp + step.delta - rsp)
            sp += step.delta + 8
            innermost = False
        pcs = tuple(f.pc for f in stack.frames[1:])
        if not offsets or offsets[-1] + 8 > SCAN_LIMIT:
            return
        fmt, at = "<", 0
        for off in offsets:  # ascending: each frame's slot lies above the previous one's
            fmt += f"{off - at}xQ" if off > at else "Q"
            at = off + 8
        if len(self._seen) >= MAX_SEEN:
            self._seen.clear()
        seen = self._seen.setdefault(rip, [])
        if len(seen) >= SEEN_PER_PC:
            seen.pop()  # the one found least recently
        seen.insert(0, (at, struct.Struct(fmt), pcs, tuple(stack.frames)))

    def unwind_goroutine(self, pc: int, sp: int, read: Reader, fs_base: int = 0) -> Stack:
        """The stack of a parked goroutine from its saved `g.sched` pc/sp."""
        go = self.go_context(read, fs_base)
        stack = Stack()
        self._walk(stack, pc, {cfi.RSP: sp}, read, go, innermost=False,
                   limit=self.max_frames)
        return stack

    # --- the walk ---------------------------------------------------------------------------
    def _step_for(self, pc: int, innermost: bool) -> _Step:
        """The compiled step at `pc` (may raise CgotraceError for corrupt tables)."""
        step = self._steps.get((pc, innermost))
        if step is not None:
            return step
        mod = self.maps.module_for(pc)
        if mod is None:  # not cached: a library mapped later (dlopen) must be found
            return _Step(RawFrame(pc, None, "unknown", not innermost), OP_SCAN)
        rel = pc - mod.bias
        look = rel if innermost else rel - 1
        img = mod.image
        pcln = img.pcln if img is not None else None
        fn = None
        is_return = not innermost
        if pcln is not None:
            try:
                fn = pcln.func_for_pc(look)
                if is_return:
                    at = pcln.func_for_pc(rel)
                    if at is not None and at.entry == rel and at.has_pcsp:
                        # A "return address" at a Go function's entry is a planted one:
                        # 1.19-1.20's cgocallback plants systemstack_switch's entry. Go
                        # never ends a function with a call, so, as the runtime's own
                        # traceback does, the PC itself names the frame.
                        fn, look, is_return = at, rel, False
            except CgotraceError:
                fn = None
        if fn is not None and fn.has_pcsp and pcln is not None:
            frame = RawFrame(pc, mod, "go", is_return)
            if fn.name in STACK_ROOTS or fn.flag & FLAG_TOP_FRAME:
                step = _Step(frame, OP_ROOT)
            else:
                delta = pcln.sp_delta(fn, look)
                op = OP_GO
                if not innermost and fn.func_id == FUNCID_ASMCGOCALL:
                    op = OP_ASMCGOCALL
                elif not innermost and fn.name == "runtime.systemstack":
                    op = OP_SYSTEMSTACK
                step = _Step(frame, op, delta)
        else:
            frame = RawFrame(pc, mod, "c", not innermost)
            table = img.cfi if img is not None and fn is None else None
            row = table.row_for(look) if table is not None else None
            recipe = _CfiRecipe.from_row(row) if row is not None else None
            step = _Step(frame, OP_CFI if recipe is not None else OP_SCAN, None, recipe,
                         row is not None)
        self._steps[(pc, innermost)] = step
        self.steps_built += 1
        return step

    def _walk(self, stack: Stack, pc: int, regs: dict[int, int], read: Reader,
              go: GoContext | None, *, innermost: bool, limit: int) -> None:
        frames = stack.frames
        steps = self._steps
        try:
            while True:
                if len(frames) >= limit:
                    stack.end = "cap"
                    return
                step = steps.get((pc, innermost)) or self._step_for(pc, innermost)
                frames.append(step.frame)
                op = step.op
                if op == OP_GO or (op >= OP_ASMCGOCALL and op <= OP_SYSTEMSTACK and go is None):
                    pass
                elif op == OP_ROOT:
                    stack.end = "root"
                    return
                elif op == OP_ASMCGOCALL:
                    assert go is not None
                    sp, pc = self._leave_g0(stack, regs[cfi.RSP], read, go)
                    regs = {cfi.RSP: sp}
                    continue
                elif op == OP_SYSTEMSTACK:
                    assert go is not None
                    switched = self._systemstack(stack, read, go)
                    if switched is not None:
                        sp, pc = switched
                        regs = {cfi.RSP: sp}
                        continue
                else:  # native code
                    rc = step.recipe
                    if rc is not None:
                        new = _cfi_step(rc, regs, read)
                        if new is not None:
                            regs, pc, innermost = new, new[cfi.RA], False
                            continue
                        if rc.outermost:
                            stack.end = "outermost"  # _start, clone3: the thread's first frame
                            return
                    if not self._scan(stack, regs, read, go):
                        if step.frame.module is None:
                            stack.end = stack.end or "no-module"
                        else:
                            stack.end = stack.end or ("cfa-expression" if step.row_found
                                                      else "no-cfi")
                        return
                    pc, innermost = regs[cfi.RA], False
                    continue
                delta = step.delta
                if delta is None:
                    stack.end = "no-pcsp"
                    return
                sp = regs[cfi.RSP]
                pc = word(read, sp + delta)
                regs = {cfi.RSP: sp + delta + 8}
                innermost = False
        except MemoryError_ as e:
            stack.end = "unreadable"
            stack.notes.append(str(e))
        except CgotraceError as e:
            stack.end = "bad-symbols"
            stack.notes.append(str(e))

    def _scan(self, stack: Stack, regs: dict[int, int], read: Reader,
              go: GoContext | None) -> bool:
        """C code without CFI: find the return address into asmcgocall above SP.

        On success sets regs[RSP] just above the slot and regs[RA] to the return address.
        """
        if go is None or cfi.RSP not in regs or not go.in_cgo_call():
            return False
        ranges = go.asmcgocall_abs
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
            words = array("Q")
            words.frombytes(data[:len(data) & ~7])
            for i, value in enumerate(words):
                for lo, hi in ranges:
                    if lo < value < hi:
                        off = 8 * i
                        regs.clear()
                        regs[cfi.RSP] = addr + off + 8
                        regs[cfi.RA] = value
                        stack.notes.append(f"scanned {addr + off - sp:#x} bytes to asmcgocall")
                        return True
            addr = chunk_end
        stack.end = "scan-failed"
        return False

    def _leave_g0(self, stack: Stack, s: int, read: Reader, go: GoContext) -> tuple[int, int]:
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
        # DX is the goroutine SP asmcgocall saved. 1.21+ pushed RBP first: [DX] = saved RBP,
        # [DX+8] = return PC into runtime.cgocall; 1.19-1.20 did not: [DX] = return PC.
        ret = dx + 8 if go.rt.asmcgocall_bp else dx
        return ret + 8, word(read, ret)

    def _systemstack(self, stack: Stack, read: Reader, go: GoContext) -> tuple[int, int] | None:
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

    def _current_goroutine(self, go: GoContext, stack: Stack) -> int | None:
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
