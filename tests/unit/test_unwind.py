"""Unwinder pieces on bytes: CFI steps, the g0 -> goroutine switch (1.21 and 1.22+ layouts),
TLS/g0-slot decoding on real asmcgocall bytes, the offsets table against DWARF, attribution
rules. No ptrace: memory is a dict of bytes behind a `read(addr, n)` callable."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tracer.unwind import cfi
from tracer.unwind.goruntime import (
    LAYOUTS,
    decode_g0_slots,
    decode_tls_offset,
    layout_for,
    parse_go_version,
)
from tracer.unwind.stack import MemoryError_, Unwinder, _GoCtx

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
    from tracer.symbols.elf import ElfImage

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


@pytest.mark.parametrize("layout_version", [(1, 21), (1, 27)])
def test_g0_switch(layout_version: tuple[int, int]) -> None:
    """At a return into asmcgocall: S = SP; old g and depth in the version's slots; back on
    the goroutine stack [DX+8] is the return PC into runtime.cgocall."""
    lay = layout_for(layout_version)
    mem = FakeMemory()
    s, g, hi, dx = 0x7FFF0000, 0xC000001000, 0xC000080000, 0xC00007F000
    mem.put(s + lay.g0_g_slot, g)
    mem.put(s + lay.g0_depth_slot, hi - dx)
    mem.put(g + lay.g_stack_hi, hi)
    mem.put(dx, 0x1111)  # saved rbp
    mem.put(dx + 8, 0x4052EB)  # return into runtime.cgocall

    class Rt:
        layout = lay
        g0_g_slot = lay.g0_g_slot
        g0_depth_slot = lay.g0_depth_slot

    ctx = _GoCtx(module=None, rt=Rt(), read=mem.read, fs_base=0)  # type: ignore[arg-type]
    from tracer.unwind.stack import Stack

    stack = Stack()
    sp, pc = Unwinder(maps=None)._leave_g0(stack, s, mem.read, ctx)  # type: ignore[arg-type]
    assert (sp, pc) == (dx + 16, 0x4052EB)
    assert stack.g == g and stack.crossed_cgo
    # nosave path: g slot 0, depth slot holds the original SP
    mem.put(s + lay.g0_g_slot, 0)
    mem.put(s + lay.g0_depth_slot, dx)
    assert Unwinder(maps=None)._leave_g0(Stack(), s, mem.read, ctx) == (dx + 16, 0x4052EB)  # type: ignore[arg-type]
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


@pytest.mark.parametrize("go", ["1.21.13", "1.24.11", "1.27.3"])
@pytest.mark.parametrize("mode", ["cgo", "pie", "static", "musl", "stripped"])
def test_runtime_facts_from_real_binaries(go: str, mode: str) -> None:
    """TLS offset and g0 slots decoded from the binaries' own asmcgocall agree with the table
    and with what objdump shows (-96 for static glibc, -8 elsewhere)."""
    from tracer.symbols.elf import ElfImage
    from tracer.symbols.pclntab import PclnTable
    from tracer.unwind.goruntime import GoRuntime

    exe = ROOT / ".cache" / "build" / go / f"userlookup-{mode}"
    if not exe.exists():
        pytest.skip(f"{exe.name} for go{go} not built (python -m sample_apps.build)")
    img = ElfImage.open(exe)
    rt = GoRuntime.from_image(img, PclnTable.from_image(img))
    assert rt.tls_g_offset == (-96 if mode == "static" else -8)
    assert (rt.g0_depth_slot, rt.g0_g_slot) == (rt.layout.g0_depth_slot, rt.layout.g0_g_slot)
    assert rt.layout.first <= (parse_go_version("go" + go) or (0, 0)) <= rt.layout.last
    if mode != "stripped":
        syms = {n: a for a, _s, n in img.symbols()}
        assert rt.allgs == syms["runtime.allgs"]


@pytest.mark.parametrize("go", ["1.21.13", "1.24.11", "1.27.3"])
def test_offsets_table_matches_dwarf(go: str) -> None:
    """Every verified row of LAYOUTS equals the DWARF member offsets of that toolchain."""
    exe = ROOT / ".cache" / "build" / go / "hello-cgo"
    if not exe.exists():
        pytest.skip(f"hello-cgo for go{go} not built")
    from elftools.elf.elffile import ELFFile

    want = {"runtime.g": {"m", "sched", "syscallsp", "syscallpc", "atomicstatus", "goid",
                          "parentGoid", "gopc"},
            "runtime.m": {"g0", "curg"}, "runtime.gobuf": {"bp"}}
    found: dict[str, dict[str, int]] = {}
    with open(exe, "rb") as f:
        for cu in ELFFile(f).get_dwarf_info().iter_CUs():
            top = cu.get_top_DIE()
            if top.attributes.get("DW_AT_name") is None or \
                    top.attributes["DW_AT_name"].value != b"runtime":
                continue
            for die in cu.iter_DIEs():
                name = die.attributes.get("DW_AT_name")
                if die.tag != "DW_TAG_structure_type" or name is None:
                    continue
                sname = name.value.decode()
                if sname in want and sname not in found:
                    found[sname] = {c.attributes["DW_AT_name"].value.decode():
                                    c.attributes["DW_AT_data_member_location"].value
                                    for c in die.iter_children() if c.tag == "DW_TAG_member"}
    lay = layout_for(parse_go_version("go" + go))
    assert go in lay.verified
    g, m = found["runtime.g"], found["runtime.m"]
    assert (g["m"], g["sched"], g["syscallsp"], g["syscallpc"]) == \
        (lay.g_m, lay.g_sched, lay.g_syscallsp, lay.g_syscallpc)
    assert (g["atomicstatus"], g["goid"], g["parentGoid"], g["gopc"]) == \
        (lay.g_atomicstatus, lay.g_goid, lay.g_parent_goid, lay.g_gopc)
    assert (m["g0"], m["curg"], found["runtime.gobuf"]["bp"]) == \
        (lay.m_g0, lay.m_curg, lay.gobuf_bp)


def test_layout_table_is_ordered_and_total() -> None:
    assert all(a.last < b.first for a, b in zip(LAYOUTS, LAYOUTS[1:], strict=False))
    assert layout_for((1, 30)) is LAYOUTS[-1]
    assert layout_for(None) is LAYOUTS[-1]
    assert parse_go_version("devel go1.28-abc") == (1, 28)


