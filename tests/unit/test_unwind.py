"""Unwinder pieces on bytes: CFI steps, the g0 -> goroutine switch (1.21 and 1.22+ layouts),
TLS/g0-slot decoding on real asmcgocall bytes, the layout table's docs, attribution rules.
No ptrace, no Go build: memory is a dict of bytes behind a `read(addr, n)` callable (the
checks against built binaries, DWARF and each toolchain's sources are in
tests/integration/test_unwind_toolchains.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tracer.unwind import cfi
from tracer.unwind.goruntime import (
    LAYOUTS,
    decode_asmcgocall_bp,
    decode_g0_slots,
    decode_tls_offset,
    layout_for,
    parse_go_version,
)
from tracer.unwind.stack import GoContext, MemoryError_, Unwinder

ROOT = Path(__file__).resolve().parents[2]


class FakeMemory:
    def __init__(self) -> None:
        self.words: dict[int, int] = {}

    def put(self, addr: int, value: int) -> None:
        self.words[addr] = value

    def read(self, addr: int, n: int) -> bytes:
        out = bytearray()
        for a in range(addr, addr + n, 8):
            if a not in self.words:
                return bytes(out)
            out += struct.pack("<Q", self.words[a])
        return bytes(out[:n])


def test_cfi_step_offset_rules() -> None:
    mem = FakeMemory()
    sp = 0x7000
    row = cfi.Row(0x100, cfi.RSP, 24, False, ((cfi.RBP, cfi.Rule("offset", -16)),
                                              (cfi.RA, cfi.Rule("offset", -8))))
    mem.put(sp + 24 - 16, 0xBEEF)  # saved rbp
    mem.put(sp + 24 - 8, 0x401234)  # return address
    out = cfi.step(row, {cfi.RSP: sp, cfi.RBP: 1, cfi.RBX: 7}, mem.read)
    assert out == {cfi.RSP: sp + 24, cfi.RA: 0x401234, cfi.RBP: 0xBEEF, cfi.RBX: 7}


def test_cfi_step_stops_on_expression_and_undefined_ra() -> None:
    mem = FakeMemory()
    expr = cfi.Row(0, cfi.RSP, 0, True, ())
    assert cfi.step(expr, {cfi.RSP: 0x1000}, mem.read) is None
    outermost = cfi.Row(0, cfi.RSP, 8, False, ((cfi.RA, cfi.Rule("undefined")),))
    assert cfi.step(outermost, {cfi.RSP: 0x1000}, mem.read) is None


def test_cfi_table_on_libc_matches_symbol() -> None:
    from tracer.binary.elf import ElfImage

    libc = Path("/lib/x86_64-linux-gnu/libc.so.6")
    if not libc.exists():
        pytest.skip("no Debian libc here")
    img = ElfImage.open(libc)
    table = cfi.CfiTable.from_image(img)
    addr = next(a for a, _s, n in img.symbols() if n == "getpwuid_r")
    fde = table.fde_for(addr + 4)
    assert fde is not None and fde.start == addr
    row = fde.row_for(addr)
    assert row is not None and (row.cfa_reg, row.cfa_offset) == (cfi.RSP, 8)


@pytest.mark.parametrize("layout_version", [(1, 19), (1, 21), (1, 27)])
def test_g0_switch(layout_version: tuple[int, int]) -> None:
    """At a return into asmcgocall: S = SP; old g and depth in the version's slots; back on
    the goroutine stack the return PC into runtime.cgocall is at [DX+8] when asmcgocall
    pushed RBP (1.21+) and at [DX] when it did not (1.19-1.20)."""
    lay = layout_for(layout_version)
    mem = FakeMemory()
    s, g, hi, dx = 0x7FFF0000, 0xC000001000, 0xC000080000, 0xC00007F000
    mem.put(s + lay.g0_g_slot, g)
    mem.put(s + lay.g0_depth_slot, hi - dx)
    mem.put(g + lay.g_stack_hi, hi)
    ret = dx + 8 if lay.asmcgocall_bp else dx
    mem.put(dx, 0x1111)  # saved rbp (1.21+), overwritten below on 1.19
    mem.put(dx + 8, 0x2222)  # the caller's frame (1.19)
    mem.put(ret, 0x4052EB)  # return into runtime.cgocall

    class Rt:
        layout = lay
        g0_g_slot = lay.g0_g_slot
        g0_depth_slot = lay.g0_depth_slot
        asmcgocall_bp = lay.asmcgocall_bp

    ctx = GoContext(module=None, rt=Rt(), read=mem.read, fs_base=0)  # type: ignore[arg-type]
    from tracer.unwind.stack import Stack

    stack = Stack()
    sp, pc = Unwinder(maps=None)._leave_g0(stack, s, mem.read, ctx)  # type: ignore[arg-type]
    assert (sp, pc) == (ret + 8, 0x4052EB)
    assert stack.g == g and stack.crossed_cgo
    # nosave path: g slot 0, depth slot holds the original SP
    mem.put(s + lay.g0_g_slot, 0)
    mem.put(s + lay.g0_depth_slot, dx)
    assert Unwinder(maps=None)._leave_g0(Stack(), s, mem.read, ctx) == (ret + 8, 0x4052EB)  # type: ignore[arg-type]
    with pytest.raises(MemoryError_):
        Unwinder(maps=None)._leave_g0(Stack(), s + 0x100, mem.read, ctx)  # type: ignore[arg-type]


def test_decode_tls_offset_encodings() -> None:
    direct = bytes.fromhex("55 4889e5 64488b3c25a0ffffff 4883ff00".replace(" ", ""))
    assert decode_tls_offset(direct) == -96
    pie = bytes.fromhex("55 4889e5 48c7c1f8ffffff 64488b39".replace(" ", ""))
    assert decode_tls_offset(pie) == -8
    assert decode_tls_offset(b"\x55\x48\x89\xe5\xc3") is None


def test_decode_g0_slots_both_layouts() -> None:
    old = bytes.fromhex("4883ec40 4883e4f0 48897c2430 488b7f08 4829d7 48897c2428 ffd0"
                        .replace(" ", ""))
    assert decode_g0_slots(old) == (40, 48)
    new = bytes.fromhex("4883ec10 4883e4f0 48897c2408 488b7f08 4829d7 48893c24 e800000000"
                        .replace(" ", ""))
    assert decode_g0_slots(new) == (0, 8)


def test_decode_asmcgocall_bp_and_layout_without_buildinfo() -> None:
    """1.21+ asmcgocall starts with push %rbp, 1.19 loads fn+0(FP) first (bytes as objdump
    shows them); without build info the code picks the row."""
    from tracer.unwind.goruntime import _layout_from_code

    assert decode_asmcgocall_bp(bytes.fromhex("554889e5488b442410")) is True
    assert decode_asmcgocall_bp(bytes.fromhex("488b442408488b5c2410")) is False
    assert decode_asmcgocall_bp(b"\xc3") is None
    newest = LAYOUTS[-1]
    assert _layout_from_code((40, 48), False, newest).first == (1, 19)
    assert _layout_from_code((40, 48), True, newest).first == (1, 21)
    assert _layout_from_code((0, 8), True, newest) is newest


def test_every_layout_row_names_its_verifier_in_the_docs() -> None:
    """docs/go-runtime.md's offset table has one row per LAYOUTS row, naming the same
    toolchains; only the 1.20 row may be unverified (no 1.20 toolchain is installable)."""
    doc = (ROOT / "docs" / "go-runtime.md").read_text()
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| 1.") and len(cells) > 2:
            rows[cells[0]] = cells[-1]
    for lay in LAYOUTS:
        first = f"{lay.first[0]}.{lay.first[1]}"
        key = next((k for k in rows if k.split("-")[0].split("+")[0].strip() == first), None)
        assert key is not None, f"no row for {first} in docs/go-runtime.md"
        if lay.first == (1, 20):
            assert not lay.verified and "not verified" in rows[key]
        else:
            assert lay.verified
            assert all(v in rows[key] for v in lay.verified), (first, rows[key])


def test_layout_table_is_ordered_and_total() -> None:
    assert all(a.last < b.first for a, b in zip(LAYOUTS, LAYOUTS[1:], strict=False))
    assert layout_for((1, 30)) is LAYOUTS[-1]
    assert layout_for(None) is LAYOUTS[-1]
    assert parse_go_version("devel go1.28-abc") == (1, 28)


def test_enclosing_functions_of_closures() -> None:
    from tracer.attribution.parent_search import enclosing_functions

    f = "net.(*Resolver).goLookupIPCNAMEOrder"
    assert enclosing_functions(f + ".func3.2") == [f + ".func3.2", f + ".func3", f]
    assert enclosing_functions("main.main.gowrap1") == ["main.main.gowrap1", "main.main"]
    assert enclosing_functions("main.lookup") == ["main.lookup"]


def _creator_world(parked: dict[int, list[int]], running: tuple[int, ...] = ()
                   ) -> tuple[object, object, FakeMemory]:
    """A fake process: functions F [0x1000, 0x1100) and its closure F.func1 [0x2000, 0x2100);
    G [0x3000, 0x3100), a helper holding a `go` statement; H [0x4000, 0x4100), whose code
    calls G at 0x4010 (E8 rel32); runtime.allgs lists the gs in `parked` (g -> the PCs its
    parked stack holds), each waiting with its saved pc at g.sched.pc, except the gs in
    `running` (_Grunning, no saved context)."""
    from types import SimpleNamespace

    from tracer.binary.pclntab import Func
    from tracer.unwind.stack import RawFrame, Stack

    lay = layout_for((1, 19))

    def func(name: str, entry: int) -> Func:
        return Func(name, entry, entry + 0x100, 0, 0, True, 0, 0, 0, 0, 0, 0, 0, 0, 0)

    funcs = {"F": func("F", 0x1000), "F.func1": func("F.func1", 0x2000),
             "G": func("G", 0x3000), "H": func("H", 0x4000)}
    code = bytearray(b"\x90" * 0x100)  # H: nops, and a CALL G
    code[0x10:0x15] = b"\xe8" + (0x3000 - 0x4015).to_bytes(4, "little", signed=True)

    class Pcln:
        def func_for_pc(self, pc: int) -> object:
            return next((f for f in funcs.values() if f.entry <= pc < f.end), None)

        def lookup_function(self, name: str) -> object:
            return funcs.get(name)

    class Elf:
        def read_vaddr(self, vaddr: int, size: int) -> bytes:
            if 0x4000 <= vaddr < 0x4100:
                return bytes(code[vaddr - 0x4000:vaddr - 0x4000 + size])
            return b"\x90" * size

    mem = FakeMemory()
    allgs, array = 0x9000, 0xA000
    mem.put(allgs, array)
    mem.put(allgs + 8, len(parked))
    for i, g in enumerate(parked):
        mem.put(array + 8 * i, g)
        mem.put(g + lay.g_atomicstatus, 2 if g in running else 4)  # _Grunning, _Gwaiting
        mem.put(g + lay.g_sched, 0x7000)
        mem.put(g + lay.g_sched + 8, g)  # the saved pc names the g, for the fake unwinder

    class FakeUnwinder:
        def unwind_goroutine(self, pc: int, sp: int, read: object, fs_base: int) -> Stack:
            return Stack(frames=[RawFrame(p + 1, None, "go", True) for p in parked[pc]])

    module = SimpleNamespace(bias=0, image=SimpleNamespace(pcln=Pcln(), elf=Elf()))
    ctx = SimpleNamespace(module=module, rt=SimpleNamespace(allgs=allgs, layout=lay))
    return FakeUnwinder(), ctx, mem


def test_find_creator_without_parent_goid() -> None:
    """Go 1.19: the parent is the one parked goroutine in the function of the `go` statement,
    else in the function that defined the closure; two candidates name nobody."""
    from tracer.attribution.parent_search import find_creator

    child, parent, other = 0xC100, 0xC200, 0xC300
    # `go` statement inside F: the parent waits in F
    unw, ctx, mem = _creator_world({child: [0x1010], parent: [0x1050, 0x5000], other: [0x5000]})
    assert find_creator(unw, ctx, mem.read, 0, 0x1020, exclude=child).g == parent  # type: ignore[arg-type]
    # `go` statement inside the closure F.func1, which has returned: the parent waits in F
    assert find_creator(unw, ctx, mem.read, 0, 0x2020, exclude=child).g == parent  # type: ignore[arg-type]
    # two goroutines in F: no guess
    unw, ctx, mem = _creator_world({child: [0x5000], parent: [0x1050], other: [0x1060]})
    assert find_creator(unw, ctx, mem.read, 0, 0x1020, exclude=child).g is None  # type: ignore[arg-type]
    # nobody there
    unw, ctx, mem = _creator_world({child: [0x5000], parent: [0x6000]})
    assert find_creator(unw, ctx, mem.read, 0, 0x1020, exclude=child).g is None  # type: ignore[arg-type]


def test_find_creator_in_the_caller_of_a_returned_helper() -> None:
    """errgroup's shape: the `go` statement is in G, which returned to H; the parent waits in
    H (a direct CALL G there), and only one goroutine may be in such a caller."""
    from tracer.attribution.parent_search import direct_calls, find_creator

    child, parent, other = 0xC100, 0xC200, 0xC300
    unw, ctx, mem = _creator_world({child: [0x3050], parent: [0x5000, 0x4030], other: [0x1050]})
    assert find_creator(unw, ctx, mem.read, 0, 0x3020, exclude=child).g == parent  # type: ignore[arg-type]
    h = ctx.module.image.pcln.lookup_function("H")  # type: ignore[attr-defined]
    assert 0x3000 in direct_calls(ctx.module.image.elf, h)  # type: ignore[attr-defined]
    # F calls nothing: a goroutine parked there is no candidate; two in H name nobody
    unw, ctx, mem = _creator_world({child: [0x3050], parent: [0x4030], other: [0x4040]})
    assert find_creator(unw, ctx, mem.read, 0, 0x3020, exclude=child).g is None  # type: ignore[arg-type]


def test_find_creator_sees_running_goroutines_only_through_stopped_threads() -> None:
    """A running creator has no saved context: it is a candidate through `running` (its
    stopped thread's stack), and otherwise counted as unseen (the caller may look again)."""
    from tracer.attribution.parent_search import find_creator

    child, parent, other = 0xC100, 0xC200, 0xC300
    unw, ctx, mem = _creator_world({child: [0x3050], parent: [0x4030], other: [0x5000]},
                                   running=(parent,))
    miss = find_creator(unw, ctx, mem.read, 0, 0x1020, exclude=child)  # type: ignore[arg-type]
    assert miss.g is None and miss.unseen == 1
    hit = find_creator(unw, ctx, mem.read, 0, 0x1020, exclude=child,  # type: ignore[arg-type]
                       running={parent: [0x1040]})
    assert hit.g == parent and hit.unseen == 0


def test_running_creator_on_a_stopped_thread_is_walked_at_once() -> None:
    """A creator that runs (no saved context) on a thread in a ptrace-stop waits for the
    tracer: its stack comes from that thread's registers, without a poll. One that really
    runs is polled once per goroutine; a later access does not wait again."""
    import os
    from types import SimpleNamespace

    from tracer.attribution.attributor import Attributor
    from tracer.unwind.stack import Stack

    lay = layout_for((1, 24))
    parent, goid = 0xC200, 7
    mem = FakeMemory()
    mem.put(parent + lay.g_atomicstatus, 2)  # _Grunning
    mem.put(parent + lay.g_sched, 0)  # not on the system stack: no saved context
    stopped = {os.getpid()}  # this test's own thread plays the creator's, in a ptrace-stop

    def regs_of(tid: int) -> object:  # the engine view: None unless in a ptrace-stop
        return SimpleNamespace(g=parent) if tid in stopped else None

    att = Attributor()
    st = att._state(os.getpid())
    st.read, st.regs_of = mem.read, regs_of  # type: ignore[assignment]
    st.unwinder = SimpleNamespace(unwind=lambda regs, read: Stack(g=regs.g, end="root"))  # type: ignore[assignment]
    ctx = SimpleNamespace(rt=SimpleNamespace(layout=lay))
    stack, _ = att.creators._parent_stack(st, ctx, mem.read, parent, goid, 0)  # type: ignore[arg-type]
    assert stack is not None and stack.g == parent
    assert att.stats.creator_stopped == 1 and att.stats.creator_waits == 0

    stopped.clear()  # now it runs on a CPU and never parks
    st.creators.stopped = None
    assert att.creators._parent_stack(st, ctx, mem.read, parent, goid, 0)[0] is None  # type: ignore[arg-type]
    assert (att.stats.creator_waits, att.stats.creator_misses) == (1, 1)
    assert att.creators._parent_stack(st, ctx, mem.read, parent, goid, 0)[0] is None  # type: ignore[arg-type]
    assert (att.stats.creator_waits, att.stats.creator_misses) == (1, 2)  # no second poll
