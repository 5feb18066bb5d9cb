"""ELF images as data: a lazy, error-wrapping view over pyelftools.

Every pyelftools failure becomes a `BadBinaryError` with a one-line reason; nothing above
this module sees an `ELFError`. Sections and segments are parsed on first use only.
pyelftools is imported lazily (it costs ~50 ms) so `cgotrace --help` stays instant.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import IO, Any, cast

from tracer.errors import BadBinaryError, NotFoundError, PermissionDeniedError


@dataclass(frozen=True)
class Segment:
    p_type: str
    vaddr: int
    offset: int
    filesz: int
    memsz: int
    flags: int  # PF_X=1, PF_W=2, PF_R=4

    @property
    def executable(self) -> bool:
        return bool(self.flags & 1)

    @property
    def writable(self) -> bool:
        return bool(self.flags & 2)


@dataclass(frozen=True)
class Section:
    name: str
    addr: int
    offset: int
    size: int
    sh_type: str


# === facts for `inspect` and the engine (static analysis) ==================================
# Everything below is parsed by hand from the bytes (bounds-checked) rather than through
# pyelftools: it is small, it works on images without section headers (UPX), and a Go
# binary's .symtab is parsed in milliseconds instead of seconds.

_DT_NULL, _DT_NEEDED, _DT_STRTAB, _DT_STRSZ = 0, 1, 5, 10
_DT_SONAME, _DT_RPATH, _DT_FLAGS, _DT_RUNPATH = 14, 15, 30, 29
_DT_FLAGS_1 = 0x6FFFFFFB
_DF_1_PIE = 0x08000000
_NT_GNU_BUILD_ID = 3
_NT_GO_BUILD_ID = 4
_SUPPORTED_MACHINES = {"EM_X86_64"}


@dataclass(frozen=True)
class DynamicInfo:
    """The parts of PT_DYNAMIC the loader acts on, strings already resolved."""

    needed: tuple[str, ...] = ()
    rpath: tuple[str, ...] = ()
    runpath: tuple[str, ...] = ()
    soname: str | None = None
    flags: int = 0
    flags_1: int = 0


@dataclass(frozen=True)
class ElfSymbol:
    name: str
    addr: int
    size: int
    kind: str  # "func", "object", "notype", "tls", "ifunc", "other"
    bind: str  # "local", "global", "weak", "other"
    defined: bool
    source: str  # ".symtab" or ".dynsym"


# Names as pyelftools spells them, for the values cgotrace meets; others print as numbers.
_ET_NAMES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}
_EM_NAMES = {3: "EM_386", 8: "EM_MIPS", 20: "EM_PPC", 21: "EM_PPC64", 22: "EM_S390",
             40: "EM_ARM", 62: "EM_X86_64", 183: "EM_AARCH64", 243: "EM_RISCV",
             258: "EM_LOONGARCH"}
_PT_NAMES = {0: "PT_NULL", 1: "PT_LOAD", 2: "PT_DYNAMIC", 3: "PT_INTERP", 4: "PT_NOTE",
             5: "PT_SHLIB", 6: "PT_PHDR", 7: "PT_TLS", 0x6474E550: "PT_GNU_EH_FRAME",
             0x6474E551: "PT_GNU_STACK", 0x6474E552: "PT_GNU_RELRO",
             0x6474E553: "PT_GNU_PROPERTY"}
_SHT_NAMES = {0: "SHT_NULL", 1: "SHT_PROGBITS", 2: "SHT_SYMTAB", 3: "SHT_STRTAB",
              4: "SHT_RELA", 5: "SHT_HASH", 6: "SHT_DYNAMIC", 7: "SHT_NOTE", 8: "SHT_NOBITS",
              9: "SHT_REL", 10: "SHT_SHLIB", 11: "SHT_DYNSYM", 14: "SHT_INIT_ARRAY",
              15: "SHT_FINI_ARRAY", 16: "SHT_PREINIT_ARRAY", 17: "SHT_GROUP",
              18: "SHT_SYMTAB_SHNDX", 19: "SHT_RELR", 0x6FFFFFF6: "SHT_GNU_HASH",
              0x6FFFFFFD: "SHT_GNU_verdef", 0x6FFFFFFE: "SHT_GNU_verneed",
              0x6FFFFFFF: "SHT_GNU_versym",
              0x70000001: "SHT_AMD64_UNWIND"}


class ElfImage:
    """One ELF file on disk (or bytes in memory), read lazily."""

    def __init__(self, data: bytes | mmap.mmap, path: str = "<memory>") -> None:
        self.path = path
        self.data = data
        if len(data) < 16 or data[:4] != b"\x7fELF":
            raise BadBinaryError(f"{path}: not an ELF file")
        # The header is read with struct: importing pyelftools costs ~50 ms, which
        # `cgotrace run` would pay before the program starts. pyelftools is loaded only
        # for DWARF/CFI (`self.elf`).
        try:
            order, is64 = self._layout
            fields = self._unpack("16xHHIQQQIHHHHHH" if is64 else "16xHHIIIIIHHHHHH", 0,
                                  "ELF header")
        except BadBinaryError as e:
            raise BadBinaryError(f"{path}: unreadable ELF header "
                                 f"({e.message.split(': ', 1)[-1]})") from None
        keys = ("e_type", "e_machine", "e_version", "e_entry", "e_phoff", "e_shoff",
                "e_flags", "e_ehsize", "e_phentsize", "e_phnum", "e_shentsize", "e_shnum",
                "e_shstrndx")
        self.header: dict[str, Any] = dict(zip(keys, fields, strict=True))
        self.header["e_type"] = _ET_NAMES.get(fields[0], f"ET_{fields[0]:#x}")
        self.header["e_machine"] = _EM_NAMES.get(fields[1], f"EM_{fields[1]}")

    @cached_property
    def elf(self) -> Any:
        """pyelftools' ELFFile over the same bytes, for DWARF and CFI (imported on use)."""
        try:
            from elftools.elf.elffile import ELFFile

            self._stream = cast(IO[bytes], _BytesStream(self.data))
            return ELFFile(self._stream)
        except Exception as e:  # pyelftools raises many types on hostile input
            raise BadBinaryError(f"{self.path}: unreadable ELF file ({_reason(e)})") from None

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ElfImage:
        p = os.fspath(path)
        try:
            with open(p, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    raise BadBinaryError(f"{p}: empty file, not an ELF binary")
                data: bytes | mmap.mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise NotFoundError(f"{p}: no such file") from None
        except IsADirectoryError:
            raise BadBinaryError(f"{p}: is a directory, not an ELF binary") from None
        except PermissionError:
            raise PermissionDeniedError(f"{p}: permission denied") from None
        return cls(data, p)

    # --- header -------------------------------------------------------------------------
    @property
    def machine(self) -> str:
        return str(self.header["e_machine"])  # 'EM_X86_64', 'EM_AARCH64', ...

    @property
    def elfclass(self) -> int:
        return 64 if self._layout[1] else 32

    @property
    def little_endian(self) -> bool:
        return self._layout[0] == "<"

    @property
    def etype(self) -> str:
        return str(self.header["e_type"])  # 'ET_EXEC', 'ET_DYN', 'ET_CORE', 'ET_REL'

    @property
    def entry(self) -> int:
        return int(self.header["e_entry"])

    # --- sections and segments ---------------------------------------------------------
    # Section and program headers are read with struct, not pyelftools: building its
    # section objects costs ~4 ms an image, paid for every module the unwinder maps.
    @cached_property
    def _layout(self) -> tuple[str, bool]:
        """(struct byte-order prefix, is 64-bit) from e_ident."""
        ei_class, ei_data = self.data[4], self.data[5]
        if ei_class not in (1, 2) or ei_data not in (1, 2):
            raise BadBinaryError(f"{self.path}: bad ELF class/data bytes")
        return ("<" if ei_data == 1 else ">"), ei_class == 2

    def _unpack(self, fmt: str, off: int, what: str) -> tuple[int, ...]:
        order, _ = self._layout
        size = struct.calcsize(order + fmt)
        if off < 0 or off + size > len(self.data):
            raise BadBinaryError(f"{self.path}: {what} run past the end of the file "
                                 "(truncated?)")
        return struct.unpack_from(order + fmt, self.data, off)

    @cached_property
    def sections(self) -> dict[str, Section]:
        names = _SHT_NAMES
        _, is64 = self._layout
        hdr = "16xHHIQQQIHHHHHH" if is64 else "16xHHIIIIIHHHHHH"
        (_, _, _, _, _, shoff, _, _, _, _, shentsize, shnum,
         shstrndx) = self._unpack(hdr, 0, "ELF header")
        if shoff == 0:
            return {}
        ent = "IIQQQQIIQQ" if is64 else "IIIIIIIIII"
        if shentsize < struct.calcsize(ent):
            raise BadBinaryError(f"{self.path}: corrupt section headers (entry size "
                                 f"{shentsize})")
        raw = []
        if shnum == 0 or shstrndx == 0xFFFF:  # extended numbering lives in section 0
            first = self._unpack(ent, shoff, "section headers")
            shnum = shnum or first[5]
            shstrndx = first[6] if shstrndx == 0xFFFF else shstrndx
        if shnum > 65536 * 16:
            raise BadBinaryError(f"{self.path}: corrupt section headers ({shnum} sections)")
        for i in range(shnum):
            raw.append(self._unpack(ent, shoff + i * shentsize, "section headers"))
        if not 0 <= shstrndx < len(raw):
            raise BadBinaryError(f"{self.path}: corrupt section headers (no name table)")
        stroff, strsize = raw[shstrndx][4], raw[shstrndx][5]
        if stroff + strsize > len(self.data):
            raise BadBinaryError(f"{self.path}: truncated file (the section name table ends "
                                 f"at {stroff + strsize:#x}, file has {len(self.data):#x} bytes)")
        out: dict[str, Section] = {}
        for (name_off, sh_type, _, addr, off, size, *_rest) in raw:
            if name_off >= strsize or stroff + name_off >= len(self.data):
                continue
            start = stroff + name_off
            end = self.data.find(b"\0", start, min(len(self.data), stroff + strsize))
            name = bytes(self.data[start:end if end >= 0 else start]).decode("utf-8",
                                                                              "replace")
            if name and name not in out:
                out[name] = Section(name, addr, off, size, names.get(sh_type, str(sh_type)))
        return out

    @cached_property
    def segments(self) -> list[Segment]:
        names = _PT_NAMES
        _, is64 = self._layout
        hdr = "16xHHIQQQIHHH" if is64 else "16xHHIIIIIHHH"
        _, _, _, _, phoff, _, _, _, phentsize, phnum = self._unpack(hdr, 0, "ELF header")
        ent = "IIQQQQQQ" if is64 else "IIIIIIII"
        if phoff == 0 or phnum == 0:
            return []
        if phentsize < struct.calcsize(ent):
            raise BadBinaryError(f"{self.path}: corrupt program headers (entry size "
                                 f"{phentsize})")
        out: list[Segment] = []
        for i in range(phnum):
            f = self._unpack(ent, phoff + i * phentsize, "program headers")
            if is64:
                p_type, flags, off, vaddr, _, filesz, memsz, _ = f
            else:
                p_type, off, vaddr, _, filesz, memsz, flags, _ = f
            out.append(Segment(names.get(p_type, str(p_type)), vaddr, off, filesz, memsz,
                               flags))
        return out

    def section(self, name: str) -> Section | None:
        return self.sections.get(name)

    def section_data(self, name: str) -> bytes | None:
        """Raw bytes of a section, or None if absent or NOBITS. Bounds-checked."""
        s = self.sections.get(name)
        if s is None or s.sh_type == "SHT_NOBITS":
            return None
        if s.offset + s.size > len(self.data):
            raise BadBinaryError(f"{self.path}: section {name} runs past the end of the file "
                                 "(truncated?)")
        return bytes(self.data[s.offset:s.offset + s.size])

    def load_segments(self) -> Iterator[Segment]:
        return (s for s in self.segments if s.p_type == "PT_LOAD")

    def vaddr_to_offset(self, vaddr: int) -> int | None:
        for s in self.load_segments():
            if s.vaddr <= vaddr < s.vaddr + s.filesz:
                return s.offset + (vaddr - s.vaddr)
        return None

    def read_vaddr(self, vaddr: int, size: int) -> bytes:
        """Read `size` bytes at a link-time virtual address from the file (PT_LOAD mapping).

        Raises BadBinaryError when the range is not backed by the file.
        """
        off = self.vaddr_to_offset(vaddr)
        if off is None or size < 0 or off + size > len(self.data):
            raise BadBinaryError(f"{self.path}: address {vaddr:#x} (+{size}) is not in the file")
        return bytes(self.data[off:off + size])

    def min_vaddr(self) -> int:
        """Lowest page-aligned p_vaddr - p_offset over PT_LOAD: what a load bias is relative to."""
        loads = list(self.load_segments())
        if not loads:
            return 0
        return min(s.vaddr - s.offset for s in loads)


    # --- loader facts (static analysis) ------------------------------------------------
    @cached_property
    def interpreter(self) -> str | None:
        """PT_INTERP: the program that loads this one (None for a static binary)."""
        for s in self.segments:
            if s.p_type == "PT_INTERP":
                if s.offset + s.filesz > len(self.data):
                    raise BadBinaryError(f"{self.path}: PT_INTERP runs past the end of the file "
                                         "(truncated?)")
                raw = bytes(self.data[s.offset:s.offset + s.filesz])
                return raw.split(b"\0", 1)[0].decode("utf-8", "replace") or None
        return None

    @cached_property
    def dynamic(self) -> DynamicInfo:
        """DT_NEEDED, RPATH, RUNPATH, SONAME and flags, read from PT_DYNAMIC."""
        seg = next((s for s in self.segments if s.p_type == "PT_DYNAMIC"), None)
        if seg is None:
            return DynamicInfo()
        if seg.offset + seg.filesz > len(self.data):
            raise BadBinaryError(f"{self.path}: PT_DYNAMIC runs past the end of the file "
                                 "(truncated?)")
        entries = _unpack_dyn(self, bytes(self.data[seg.offset:seg.offset + seg.filesz]))
        tags: dict[int, int] = {}
        for tag, val in entries:
            tags.setdefault(tag, val)
        strtab = b""
        if _DT_STRTAB in tags:
            strsz = tags.get(_DT_STRSZ, 0)
            try:
                strtab = self.read_vaddr(tags[_DT_STRTAB], strsz)
            except BadBinaryError:
                # Some linkers leave DT_STRTAB unrelocated in shared objects: try the section.
                strtab = self.section_data(".dynstr") or b""
        needed = tuple(_cstr(strtab, v) for t, v in entries if t == _DT_NEEDED)
        rpath = tuple(p for t, v in entries if t == _DT_RPATH
                      for p in _split_path_list(_cstr(strtab, v)))
        runpath = tuple(p for t, v in entries if t == _DT_RUNPATH
                        for p in _split_path_list(_cstr(strtab, v)))
        soname = _cstr(strtab, tags[_DT_SONAME]) if _DT_SONAME in tags else None
        return DynamicInfo(needed=needed, rpath=rpath, runpath=runpath, soname=soname,
                           flags=tags.get(_DT_FLAGS, 0), flags_1=tags.get(_DT_FLAGS_1, 0))

    @property
    def needed(self) -> tuple[str, ...]:
        return self.dynamic.needed

    @property
    def rpath(self) -> tuple[str, ...]:
        return self.dynamic.rpath

    @property
    def runpath(self) -> tuple[str, ...]:
        return self.dynamic.runpath

    @property
    def soname(self) -> str | None:
        return self.dynamic.soname

    @property
    def is_dynamic(self) -> bool:
        """Needs a loader: has PT_INTERP or PT_DYNAMIC with NEEDED entries."""
        return self.interpreter is not None or bool(self.needed)

    @property
    def is_static(self) -> bool:
        return not self.is_dynamic

    @property
    def is_pie(self) -> bool:
        """Position-independent executable: ET_DYN with an interpreter, or DF_1_PIE
        (static-pie has no interpreter but sets the flag)."""
        if self.etype != "ET_DYN":
            return False
        return self.interpreter is not None or bool(self.dynamic.flags_1 & _DF_1_PIE)

    @property
    def is_shared_library(self) -> bool:
        return self.etype == "ET_DYN" and not self.is_pie

    # --- symbols and debug info ---------------------------------------------------------
    @property
    def stripped(self) -> bool:
        """No .symtab (what `file` calls stripped)."""
        return ".symtab" not in self.sections

    @property
    def has_dwarf(self) -> bool:
        return any(n.startswith((".debug_", ".zdebug_")) for n in self.sections)

    @cached_property
    def _notes(self) -> list[tuple[str, int, bytes]]:
        out: list[tuple[str, int, bytes]] = []
        for s in self.segments:
            if s.p_type == "PT_NOTE" and s.offset + s.filesz <= len(self.data):
                out.extend(_parse_notes(self, bytes(self.data[s.offset:s.offset + s.filesz])))
        if not out:  # relocatable objects or odd layouts: fall back to note sections
            for sec in self.sections.values():
                if sec.sh_type == "SHT_NOTE" and sec.offset + sec.size <= len(self.data):
                    raw = bytes(self.data[sec.offset:sec.offset + sec.size])
                    out.extend(_parse_notes(self, raw))
        return out

    @property
    def gnu_build_id(self) -> str | None:
        for name, ntype, desc in self._notes:
            if name == "GNU" and ntype == _NT_GNU_BUILD_ID:
                return desc.hex()
        return None

    @property
    def go_build_id(self) -> str | None:
        """The Go build ID (.note.go.buildid), as `go tool buildid` prints it."""
        for name, ntype, desc in self._notes:
            if name == "Go" and ntype == _NT_GO_BUILD_ID:
                return desc.rstrip(b"\0").decode("utf-8", "replace")
        return None

    @cached_property
    def has_go_sections(self) -> bool:
        """Go's own sections or build-id note: cheap, and true of every Go image the
        linker wrote (stripped, PIE, external) — false for libc, ld.so and C programs."""
        secs = self.sections
        return (any(n in secs for n in (".gopclntab", ".data.rel.ro.gopclntab",
                                        ".go.buildinfo", ".note.go.buildid"))
                or self.go_build_id is not None)

    @cached_property
    def upx_packed(self) -> bool:
        """UPX-compressed: the `UPX!` marker near the start or the end of the file.

        A packed image has no section headers and its pclntab and buildinfo are
        compressed: static analysis sees only the stub; the names exist after the
        stub has unpacked the program in memory.
        """
        head = bytes(self.data[:4096])
        tail = bytes(self.data[-4096:]) if len(self.data) > 4096 else b""
        return b"UPX!" in head or b"UPX!" in tail

    @cached_property
    def dynamic_symbols(self) -> tuple[ElfSymbol, ...]:
        return tuple(s for s in _read_symbols(self, ".dynsym") if s.name)

    @property
    def imports(self) -> tuple[str, ...]:
        """Undefined dynamic symbols (what the binary needs from its libraries), sorted."""
        return tuple(sorted({s.name for s in self.dynamic_symbols if not s.defined}))

    @property
    def exports(self) -> tuple[str, ...]:
        """Defined global/weak dynamic symbols, sorted."""
        return tuple(sorted({s.name for s in self.dynamic_symbols
                             if s.defined and s.bind != "local"}))

    def defined_symbol_names(self) -> frozenset[str]:
        """Every defined name in .symtab and .dynsym (aliases included)."""
        return frozenset(s.name for name in (".symtab", ".dynsym")
                         for s in _read_symbols(self, name) if s.defined and s.name)

    @cached_property
    def _symbol_table(self) -> tuple[list[int], list[tuple[int, int, int, int]]]:
        """Sorted (addr, size, name offset, string table) of defined function/object
        symbols, one per address. Names are decoded only when asked for: a Go binary's
        .symtab has 10k+ entries and the unwinder names a handful of C frames."""
        seen: dict[int, tuple[int, int, int, int]] = {}
        order = "<" if self.little_endian else ">"
        is64 = self.elfclass == 64
        fmt, size = (order + "IBBHQQ", 24) if is64 else (order + "IIIBBH", 16)
        self._strtabs: list[bytes] = []
        for symname, strname in ((".symtab", ".strtab"), (".dynsym", ".dynstr")):
            sec = self.sections.get(symname)
            if sec is None or sec.sh_type == "SHT_NOBITS":
                continue
            try:
                raw = self.section_data(symname) or b""
                strtab = self.section_data(strname) or b""
            except BadBinaryError:
                continue
            tab = len(self._strtabs)
            self._strtabs.append(strtab)
            body = raw[size:len(raw) - (len(raw) % size)]  # entry 0 is the null symbol
            for entry in struct.iter_unpack(fmt, body):
                if is64:
                    st_name, info, _other, shndx, value, sz = entry
                else:
                    st_name, value, sz, info, _other, shndx = entry
                if shndx == 0 or st_name == 0 or value == 0 or (info & 0xF) not in _NAMED_KINDS:
                    continue
                prev = seen.get(value)
                # Prefer a sized function symbol over a marker at the same address.
                if prev is None or (prev[1] == 0 and sz > 0):
                    seen[value] = (value, sz, st_name, tab)
        table = sorted(seen.values())
        return [t[0] for t in table], table

    def _symbol_name(self, name_off: int, tab: int) -> str:
        return _cstr(self._strtabs[tab], name_off)

    def symbols(self) -> list[tuple[int, int, str]]:
        """Defined symbols from .symtab and .dynsym as sorted (addr, size, name), one per
        address, link-time addresses (add the load bias for PIE/shared objects)."""
        out = []
        for addr, size, off, tab in self._symbol_table[1]:
            name = self._symbol_name(off, tab)
            if name:
                out.append((addr, size, name))
        return out

    def symbol_for(self, addr: int) -> tuple[str, int] | None:
        """(name, offset) of the symbol containing link-time address `addr`, or None.

        A symbol with size 0 covers up to the next symbol (assembly labels)."""
        import bisect

        addrs, table = self._symbol_table
        i = bisect.bisect_right(addrs, addr) - 1
        if i < 0:
            return None
        start, size, off, tab = table[i]
        if size and addr >= start + size:
            return None
        if not size and i + 1 < len(table) and addr >= table[i + 1][0]:
            return None
        name = self._symbol_name(off, tab)
        return (name, addr - start) if name else None

    # --- architecture -------------------------------------------------------------------
    @property
    def arch_supported(self) -> bool:
        """x86-64 is what the tracer supports; other arches still get ELF facts."""
        return self.machine in _SUPPORTED_MACHINES and self.elfclass == 64 and self.little_endian

    @property
    def arch_note(self) -> str | None:
        if self.arch_supported:
            return None
        return (f"{self.machine.removeprefix('EM_').lower()} ({self.elfclass}-bit): cgotrace "
                "traces x86-64 only; ELF facts are reported, tracing is not possible")


class _BytesStream:
    """A seekable read-only stream over bytes or an mmap, for pyelftools."""

    def __init__(self, data: bytes | mmap.mmap) -> None:
        self._data = data
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n is None or n < 0 else min(len(self._data), self._pos + n)
        chunk = bytes(self._data[self._pos:end])
        self._pos = end
        return chunk

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 0:
            self._pos = pos
        elif whence == 1:
            self._pos += pos
        else:
            self._pos = len(self._data) + pos
        self._pos = max(0, self._pos)
        return self._pos

    def tell(self) -> int:
        return self._pos


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:160]


def _split_path_list(value: str) -> tuple[str, ...]:
    return tuple(p for p in value.split(":") if p)


def _cstr(blob: bytes, off: int) -> str:
    if off < 0 or off >= len(blob):
        return ""
    end = blob.find(b"\0", off)
    if end < 0:
        end = len(blob)
    return blob[off:end].decode("utf-8", "replace")


def _unpack_dyn(img: ElfImage, raw: bytes) -> list[tuple[int, int]]:
    import struct

    size = 16 if img.elfclass == 64 else 8
    fmt = ("<" if img.little_endian else ">") + ("qQ" if img.elfclass == 64 else "iI")
    out: list[tuple[int, int]] = []
    for i in range(0, len(raw) - size + 1, size):
        tag, val = struct.unpack_from(fmt, raw, i)
        if tag == _DT_NULL:
            break
        out.append((int(tag), int(val)))
    return out


def _parse_notes(img: ElfImage, raw: bytes) -> list[tuple[str, int, bytes]]:
    import struct

    end = "<" if img.little_endian else ">"
    out: list[tuple[str, int, bytes]] = []
    pos = 0
    while pos + 12 <= len(raw):
        namesz, descsz, ntype = struct.unpack_from(end + "III", raw, pos)
        pos += 12
        name = raw[pos:pos + namesz].rstrip(b"\0").decode("ascii", "replace")
        pos += (namesz + 3) & ~3
        desc = raw[pos:pos + descsz]
        pos += (descsz + 3) & ~3
        if len(desc) != descsz:
            break
        out.append((name, int(ntype), bytes(desc)))
    return out


# st_info types whose symbols name code or data: NOTYPE, OBJECT, FUNC, GNU_IFUNC
_NAMED_KINDS = frozenset({0, 1, 2, 10})


def _sym_kind(info: int) -> str:
    return {0: "notype", 1: "object", 2: "func", 6: "tls", 10: "ifunc"}.get(info & 0xF, "other")


def _sym_bind(info: int) -> str:
    return {0: "local", 1: "global", 2: "weak", 10: "unique"}.get(info >> 4, "other")


def _read_symbols(img: ElfImage, name: str) -> list[ElfSymbol]:
    import struct

    sec = img.sections.get(name)
    if sec is None or sec.sh_type == "SHT_NOBITS":
        return []
    strname = ".strtab" if name == ".symtab" else ".dynstr"
    try:
        raw = img.section_data(name) or b""
        strtab = img.section_data(strname) or b""
    except BadBinaryError:
        return []
    end = "<" if img.little_endian else ">"
    out: list[ElfSymbol] = []
    if img.elfclass == 64:
        size, fmt = 24, end + "IBBHQQ"
        for i in range(size, len(raw) - size + 1, size):  # entry 0 is the null symbol
            st_name, info, _other, shndx, value, sz = struct.unpack_from(fmt, raw, i)
            out.append(ElfSymbol(_cstr(strtab, st_name), int(value), int(sz), _sym_kind(info),
                                 _sym_bind(info), shndx != 0, name))
    else:
        size, fmt = 16, end + "IIIBBH"
        for i in range(size, len(raw) - size + 1, size):
            st_name, value, sz, info, _other, shndx = struct.unpack_from(fmt, raw, i)
            out.append(ElfSymbol(_cstr(strtab, st_name), int(value), int(sz), _sym_kind(info),
                                 _sym_bind(info), shndx != 0, name))
    return out
