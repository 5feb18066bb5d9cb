"""pclntab decoding from hand-made bytes: varints, pcvalue tables, and whole synthetic tables
in the 1.20+ (0xFFFFFFF1) and 1.16-1.17 (0xFFFFFFFA) layouts. No Go toolchain needed."""

from __future__ import annotations

import struct

import pytest

from tracer.binary.pclntab import (
    MAGIC_1_16,
    MAGIC_1_20,
    PclnTable,
    decode_pcvalue,
    read_uvarint,
)
from tracer.errors import BadBinaryError


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def zigzag(v: int) -> int:
    return (v << 1) ^ (v >> 63)


def pcvalue_table(steps: list[tuple[int, int]]) -> bytes:
    """(value, pc_delta) pairs -> encoded table with a terminator. Start value is -1."""
    out = bytearray()
    prev = -1
    for value, delta in steps:
        out += uvarint(zigzag(value - prev)) + uvarint(delta)
        prev = value
    return bytes(out) + b"\x00"


@pytest.mark.parametrize(("raw", "value", "used"), [
    (b"\x00", 0, 1), (b"\x05", 5, 1), (b"\x7f", 127, 1), (b"\x80\x01", 128, 2),
    (b"\xac\x02", 300, 2), (b"\xff\xff\xff\xff\x0f", 0xFFFFFFFF, 5),
])
def test_read_uvarint(raw: bytes, value: int, used: int) -> None:
    assert read_uvarint(raw + b"\xee", 0, len(raw) + 1) == (value, used)


@pytest.mark.parametrize("raw", [b"\x80", b"\xff\xff", b"\x80\x80\x80\x80\x80\x01", b""])
def test_read_uvarint_rejects_truncated_and_overlong(raw: bytes) -> None:
    with pytest.raises(BadBinaryError):
        read_uvarint(raw, 0, len(raw))


def test_zigzag_signs() -> None:
    # value deltas +11, -3, 0 (uv=1 means -1)
    table = uvarint(22) + uvarint(4) + uvarint(5) + uvarint(6) + uvarint(1) + uvarint(2) + b"\0"
    pcs, vals = decode_pcvalue(table, 0, len(table), 0x1000, 0x2000)
    assert pcs == [0x1004, 0x100A, 0x100C]
    assert vals == [10, 7, 6]


def test_pcvalue_first_zero_pair_is_not_terminator() -> None:
    # First value delta 0 keeps -1 (e.g. "not inlined") for 8 bytes, then 3.
    table = b"\x00\x08" + uvarint(zigzag(4)) + b"\x08\x00"
    pcs, vals = decode_pcvalue(table, 0, len(table), 0, 100)
    assert (pcs, vals) == ([8, 16], [-1, 3])


def test_pcvalue_stops_at_function_end_without_terminator() -> None:
    table = pcvalue_table([(5, 0x10), (6, 0x10)])[:-1]  # no terminator, table ends
    pcs, vals = decode_pcvalue(table, 0, len(table), 0, 0x20)
    assert (pcs, vals) == ([0x10, 0x20], [5, 6])


def test_pcvalue_min_lc_scales_pc_deltas() -> None:
    table = pcvalue_table([(1, 3), (2, 1)])
    assert decode_pcvalue(table, 0, len(table), 0, 100, min_lc=4)[0] == [12, 16]


def test_pcvalue_running_off_the_table_is_an_error() -> None:
    table = pcvalue_table([(5, 0x10), (6, 0x10)])[:-1]
    with pytest.raises(BadBinaryError):
        decode_pcvalue(table, 0, len(table), 0, 0x1000)


def test_pcvalue_zero_pc_deltas_cannot_loop_forever() -> None:
    table = b"\x02\x00" * 10_000  # value +1, pc +0, forever
    pcs, _ = decode_pcvalue(table, 0, len(table), 0, 4)
    assert len(pcs) <= 2 * 4 + 16


# --- whole synthetic tables -----------------------------------------------------------
TEXT = 0x401000
FUNCS = [  # name, size, pcsp steps, pcln steps
    ("main.helper", 0x20, [(0, 1), (8, 0x1F)], [(10, 0x10), (11, 0x10)]),
    ("x_cgo_init", 0x10, None, None),  # C function: no tables
    ("main.main", 0x30, [(0, 4), (24, 0x2C)], [(20, 0x18), (21, 0x18)]),
]


def build_table(magic: int) -> bytes:
    """A minimal but complete pclntab for FUNCS (ptrSize 8, minLC 1)."""
    names = b"".join(n.encode() + b"\0" for n, *_ in FUNCS)
    name_offs = [names.index(n.encode() + b"\0") for n, *_ in FUNCS]
    cutab = struct.pack("<I", 0)
    filetab = b"/src/main.go\0"
    pctab = bytearray(b"\0")  # offset 0 means "no table"
    offs = []
    for _, size, sp, ln in FUNCS:
        if sp is None or ln is None:
            offs.append((0, 0, 0))
            continue
        o_sp = len(pctab)
        pctab += pcvalue_table(sp)
        o_file = len(pctab)
        pctab += pcvalue_table([(0, size)])
        o_ln = len(pctab)
        pctab += pcvalue_table(ln)
        offs.append((o_sp, o_file, o_ln))
    n = len(FUNCS)
    new = magic == MAGIC_1_20
    header_size = 8 + (8 if new else 7) * 8
    funcname_off = header_size
    cu_off = funcname_off + len(names)
    filetab_off = cu_off + len(cutab)
    pctab_off = filetab_off + len(filetab)
    pcln_off = pctab_off + len(pctab)
    pcln_off += -pcln_off % 8
    word = 4 if new else 8
    functab_size = (n + 1) * 2 * word
    records = bytearray()
    functab = bytearray()
    entry = 0
    for i, (_, size, _, _) in enumerate(FUNCS):
        funcoff = functab_size + len(records)
        o_sp, o_file, o_ln = offs[i]
        if new:
            functab += struct.pack("<II", entry, funcoff)
            records += struct.pack("<IiiIIIIIIiBBBB", entry, name_offs[i], 0, 0, o_sp, o_file,
                                   o_ln, 0, 0, 0, 0, 0, 0, 0)
        else:
            functab += struct.pack("<QQ", TEXT + entry, funcoff)
            records += struct.pack("<QiiIIIIIIBBBB", TEXT + entry, name_offs[i], 0, 0, o_sp,
                                   o_file, o_ln, 0, 0, 0, 0, 0, 0)
        records += b"\0" * (-len(records) % 8)
        entry += size
    functab += struct.pack("<II", entry, 0) if new else struct.pack("<QQ", TEXT + entry, 0)
    if new:
        words = [n, 1, TEXT, funcname_off, cu_off, filetab_off, pctab_off, pcln_off]
    else:
        words = [n, 1, funcname_off, cu_off, filetab_off, pctab_off, pcln_off]
    head = struct.pack("<IBBBB", magic, 0, 0, 1, 8) + b"".join(struct.pack("<Q", w)
                                                                for w in words)
    blob = bytearray(head + names + cutab + filetab + bytes(pctab))
    blob += b"\0" * (pcln_off - len(blob))
    return bytes(blob + functab + records)


@pytest.mark.parametrize("magic", [MAGIC_1_20, MAGIC_1_16])
def test_synthetic_table(magic: int) -> None:
    raw = build_table(magic)
    t = PclnTable(raw, 0, len(raw), 0x500000)
    assert t.nfunc == 3 and t.text_start == TEXT
    assert t.go_version_family == ("1.20+" if magic == MAGIC_1_20 else "1.16-1.17")
    assert list(t.function_names()) == ["main.helper", "x_cgo_init", "main.main"]
    helper = t.func_for_pc(TEXT + 0x1F)
    assert helper is not None and (helper.name, helper.entry, helper.end) == (
        "main.helper", TEXT, TEXT + 0x20)
    assert t.func_for_pc(TEXT - 1) is None and t.func_for_pc(TEXT + 0x60) is None
    [f] = t.frames(TEXT + 0x0F)
    assert (f.function, f.file, f.line, f.inlined) == ("main.helper", "/src/main.go", 10, False)
    assert t.frames(TEXT + 0x10)[0].line == 11
    # return address: look up pc-1, which is still in main.helper
    assert t.frames(TEXT + 0x20, is_return_address=True)[0].function == "main.helper"
    assert t.sp_delta(helper, TEXT) == 0 and t.sp_delta(helper, TEXT + 5) == 8
    c = t.lookup_function("x_cgo_init")
    assert c is not None and not c.has_line_table and not c.has_pcsp
    assert t.sp_delta(c, c.entry) is None
    assert [(fr.function, fr.file, fr.line) for fr in t.frames(c.entry + 3)] == [
        ("x_cgo_init", None, None)]
    main = t.lookup_function("main.main")
    assert main is not None and t.frames(main.entry + 0x18)[0].line == 21
    assert t.lookup_function("nope") is None


def test_synthetic_table_bad_header_values() -> None:
    raw = bytearray(build_table(MAGIC_1_20))
    struct.pack_into("<Q", raw, 8, 1 << 40)  # nfunc far too large
    with pytest.raises(BadBinaryError, match="function count"):
        PclnTable(bytes(raw), 0, len(raw), 0)
    raw = bytearray(build_table(MAGIC_1_20))
    raw[0] = 0x00  # unknown magic
    with pytest.raises(BadBinaryError, match="magic"):
        PclnTable(bytes(raw), 0, len(raw), 0)
    raw = bytearray(build_table(MAGIC_1_20))
    struct.pack_into("<Q", raw, 8 + 3 * 8, len(raw) + 5)  # funcnameOffset past the end
    with pytest.raises(BadBinaryError, match="outside"):
        PclnTable(bytes(raw), 0, len(raw), 0)
