"""pclntab and buildinfo against the Go toolchain's own tools, per app x build mode x Go.

`go tool addr2line` (same Go version as the build) is the oracle for PC -> function,
file:line; `go version -m` for build info. addr2line is known to be wrong on stripped
external-link binaries (it takes the `.text` address as text start), so those are compared
against their unstripped external twin, whose pclntab is identical.
"""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from sample_apps.build import APPS_DIR, DEFAULT_GO, GO_1_19, ROOT, go_env, go_tool
from tests.integration.dwarf_oracle import expected_frames, inlined_calls
from tracer.binary.buildinfo import format_go_version_m, read_buildinfo
from tracer.binary.elf import ElfImage
from tracer.binary.pclntab import PclnTable

pytestmark = pytest.mark.go

APPS = ("hello", "userlookup")
ALL_MODES = ("cgo", "pure", "netgo", "static", "stripped", "pie", "external",
             "stripped-external", "musl")
OLD_MODES = ("cgo", "stripped", "pie", "external")
CASES = ([("1.27.3", m) for m in ALL_MODES]
         + [(v, m) for v in ("1.24.11", "1.21.13", GO_1_19) for m in OLD_MODES]
         + [(v, "external-pie") for v in ("1.27.3", "1.21.13")])
N_PCS = 1000
# Not a sample_apps mode: external-link PIE. On 1.21 its pclntab has no section of its own
# (merged into .data.rel.ro), so this exercises the magic scan + moduledata cross-check.
EXTRA_CACHE = ROOT / ".cache" / "symbols-tests"


def build_external_pie(app: str, go: str) -> Path:
    out = EXTRA_CACHE / go / f"{app}-external-pie"
    src = APPS_DIR / app / "main.go"
    if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(go_env(go), CGO_ENABLED="1")
    subprocess.run([str(go_tool(go)), "build", "-o", f"{out}.tmp", "-buildmode=pie",
                    "-ldflags=-linkmode=external", "."], cwd=APPS_DIR / app, env=env,
                   check=True, capture_output=True)
    os.replace(f"{out}.tmp", out)
    return out


def _sample_pcs(table: PclnTable, seed: str) -> list[int]:
    rng = random.Random(seed)
    funcs = [f for f in table.functions() if f.end > f.entry]
    out = []
    for _ in range(N_PCS):
        f = rng.choice(funcs)
        out.append(rng.randrange(f.entry, f.end))
    return out


def _addr2line(binary: Path, pcs: list[int], go: str) -> list[tuple[str, str]]:
    proc = subprocess.run([str(go_tool(go)), "tool", "addr2line", str(binary)],
                          input="".join(f"{pc:#x}\n" for pc in pcs), capture_output=True,
                          text=True, env=go_env(go), check=True)
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 * len(pcs), proc.stderr
    return [(lines[2 * i], lines[2 * i + 1]) for i in range(len(pcs))]


@pytest.mark.parametrize("app", APPS)
@pytest.mark.parametrize(("go", "mode"), CASES)
def test_pcs_match_addr2line(sample: Callable[..., Path], app: str, go: str,
                             mode: str) -> None:
    if mode == "external-pie":
        sample(app, "cgo", go)  # skips when that Go is not installed
        binary = build_external_pie(app, go)
    else:
        binary = sample(app, mode, go)
    # addr2line falls back to .text for stripped external links: ask about the twin.
    oracle_binary = sample(app, "external", go) if mode == "stripped-external" else binary
    table = PclnTable.from_image(ElfImage.open(binary))
    pcs = _sample_pcs(table, f"{app}-{mode}-{go}")
    # Go 1.19's addr2line does not look in .data.rel.ro.gopclntab (internal-link PIE) and
    # answers "?" for every PC there; the newest toolchain's reads that 1.18-format table.
    oracle_go = DEFAULT_GO if (go, mode) == (GO_1_19, "pie") else go
    expected = _addr2line(oracle_binary, pcs, oracle_go)
    mismatches = []
    c_funcs = 0
    for pc, (want_func, want_pos) in zip(pcs, expected, strict=True):
        frames = table.frames(pc)
        assert frames, f"{pc:#x}: no frames"
        func = table.func_for_pc(pc)
        assert func is not None and frames[-1].function == func.name
        assert all(f.inlined for f in frames[:-1]) and not frames[-1].inlined
        if not func.has_line_table:
            # C code linked internally: addr2line invents a position, we report the name.
            c_funcs += 1
            got: tuple[str, str | None] = (frames[-1].function or "", None)
            if got[0] != want_func:
                mismatches.append((hex(pc), got, (want_func, want_pos)))
            continue
        inner = frames[0]
        # Past the end of a line table (alignment padding) addr2line prints ":-1".
        line = -1 if inner.line is None else inner.line
        got_pair = (frames[-1].function or "", f"{inner.file or ''}:{line}")
        if got_pair != (want_func, want_pos):
            mismatches.append((hex(pc), got_pair, (want_func, want_pos)))
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[:5]}"
    assert c_funcs < N_PCS // 10


@pytest.mark.parametrize("app", APPS)
@pytest.mark.parametrize(("go", "mode"), CASES)
def test_buildinfo_matches_go_version_m(sample: Callable[..., Path], app: str, go: str,
                                        mode: str) -> None:
    if mode == "external-pie":
        sample(app, "cgo", go)
        binary = build_external_pie(app, go)
    else:
        binary = sample(app, mode, go)
    proc = subprocess.run([str(go_tool(go)), "version", "-m", str(binary)],
                          capture_output=True, text=True, env=go_env(go), check=True)
    bi = read_buildinfo(ElfImage.open(binary))
    assert bi is not None
    assert bi.go_version == f"go{go}"
    assert format_go_version_m(str(binary), bi) == proc.stdout


@pytest.mark.parametrize("go", ["1.27.3", "1.24.11", "1.21.13", GO_1_19])
def test_pclntab_found_without_its_section(sample: Callable[..., Path], tmp_path: Path,
                                           go: str) -> None:
    """Rename .gopclntab: the magic scan plus moduledata cross-check must find the same
    table (what external-link PIE on 1.21 needs, and what a renamed section would need)."""
    binary = sample("hello", "stripped", go)
    data = binary.read_bytes()
    assert data.count(b".gopclntab\0") == 1
    renamed = tmp_path / "renamed"
    renamed.write_bytes(data.replace(b".gopclntab\0", b".xopclntab\0"))
    img = ElfImage.open(renamed)
    assert ".gopclntab" not in img.sections
    got, want = PclnTable.from_image(img), PclnTable.from_image(ElfImage.open(binary))
    assert (got.vaddr, got.nfunc, got.text_start) == (want.vaddr, want.nfunc, want.text_start)
    main = want.lookup_function("main.main")
    assert main is not None
    for pc in range(main.entry, main.end, 7):
        # identical except the module name (the file name differs)
        assert [replace(f, module=None) for f in got.frames(pc)] == [
            replace(f, module=None) for f in want.frames(pc)]


def test_external_pie_121_has_no_pclntab_section(sample: Callable[..., Path]) -> None:
    sample("hello", "cgo", "1.21.13")
    img = ElfImage.open(build_external_pie("hello", "1.21.13"))
    assert not any("pclntab" in name for name in img.sections)
    assert PclnTable.from_image(img).lookup_function("main.main") is not None


@pytest.mark.parametrize("app", APPS)
@pytest.mark.parametrize("go", ["1.27.3", "1.24.11", "1.21.13", GO_1_19])
def test_inlined_frames_match_dwarf(sample: Callable[..., Path], app: str, go: str) -> None:
    """At every PC of main.main, the inlined frames (names, and each caller's line) equal the
    DWARF inline tree of the same binary (pyelftools), an oracle independent of pclntab."""
    binary = sample(app, "cgo", go)
    calls = inlined_calls(binary, "main.main")
    table = PclnTable.from_image(ElfImage.open(binary))
    main = table.lookup_function("main.main")
    assert main is not None
    seen_inlined = 0
    for pc in range(main.entry, main.end):
        want = expected_frames(calls, "main.main", pc)
        frames = table.frames(pc)
        got = [(f.function, f.line) for f in frames]
        assert [g[0] for g in got] == [w[0] for w in want], hex(pc)
        assert got[1:] == want[1:], hex(pc)
        seen_inlined += len(want) > 1
    assert seen_inlined > 0, "no inlined call in main.main: the check proved nothing"


@pytest.mark.parametrize("max_hits", [None, 0])  # 0: every lookup takes the plain scan
@pytest.mark.parametrize("go", ["1.27.3", "1.21.13", GO_1_19])
def test_lookup_by_name_finds_the_symbol_table_functions(
        sample: Callable[..., Path], go: str, max_hits: int | None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """lookup_functions (which decodes only the names it is asked for) against the ELF
    symbol table read by pyelftools: every FUNC symbol's address is among the entries of
    the functions pclntab names alike (Go's ABI0 wrappers are `NAME.abi0` there)."""
    from elftools.elf.elffile import ELFFile

    if max_hits is not None:
        monkeypatch.setattr("tracer.binary.pclntab._MAX_NAME_HITS", max_hits)
    binary = sample("userlookup", "cgo", go)
    table = PclnTable.from_image(ElfImage.open(binary))
    with open(binary, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        funcs = [(s.name.removesuffix(".abi0"), s["st_value"]) for s in symtab.iter_symbols()
                 if s["st_info"]["type"] == "STT_FUNC" and s["st_value"]]
    # symbols that start a pclntab function of that name (not markers such as runtime.text
    # or C objects' section symbols); address -> function is checked against addr2line above
    text = [(n, a) for n, a in funcs
            if (fn := table.func_for_pc(a)) is not None and fn.entry == a and fn.name == n]
    rng = random.Random(go)
    wanted = {"runtime.asmcgocall", "runtime.goexit", "runtime.mstart", "main.main"}
    picks = [(n, a) for n, a in text if n in wanted] + rng.sample(text, 300)
    assert {n for n, _ in picks} >= wanted
    for name, addr in picks:
        entries = [fn.entry for fn in table.lookup_functions(name)]
        assert addr in entries, (name, hex(addr), [hex(e) for e in entries])
        assert table.lookup_function(name) is not None
    assert table.lookup_functions("runtime.no such function") == []
