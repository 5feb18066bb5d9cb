"""Go's pclntab: PC -> function, file:line and inlined frames, without DWARF or `.symtab`.

Go keeps its PC/line table (pclntab) even in `-s -w` binaries, so this is what makes stripped
Go binaries symbolizable. Supported header magics (docs/go-runtime.md, "pclntab"):

    0xFFFFFFF1  Go 1.20-1.27      0xFFFFFFF0  Go 1.18-1.19
    0xFFFFFFFA  Go 1.16-1.17      0xFFFFFFFB  Go 1.2-1.15

Design: the function table is decoded once into two `array`s (entry offsets, record offsets)
and searched with `bisect`; a `Func` is built on first use of an index; each pcvalue table
(pcsp/pcfile/pcln/pcdata) is decoded once into (end-pc, value) arrays and cached. Every read
is bounds-checked against the table, varints are capped at 5 bytes and inline trees at
`MAX_INLINE_DEPTH`, so hostile input raises `BadBinaryError` and never loops.

All PCs are link-time addresses: callers subtract the PIE load bias first.
"""

from __future__ import annotations

import mmap
import os
import struct
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from tracer.binary.elf import ElfImage
from tracer.errors import BadBinaryError, NotGoBinaryError
from tracer.trace.model import Frame

MAGIC_1_20: Final = 0xFFFFFFF1
MAGIC_1_18: Final = 0xFFFFFFF0
MAGIC_1_16: Final = 0xFFFFFFFA
MAGIC_1_2: Final = 0xFFFFFFFB
FAMILIES: Final = {MAGIC_1_20: "1.20+", MAGIC_1_18: "1.18-1.19", MAGIC_1_16: "1.16-1.17",
                   MAGIC_1_2: "1.2-1.15"}

PCDATA_INL_TREE_INDEX: Final = 2
FUNCDATA_INL_TREE: Final = 3
MAX_INLINE_DEPTH: Final = 256  # real trees are < 20 deep; a cycle in hostile data stops here
MAX_NAME_LEN: Final = 1 << 16  # longest C string we accept (generic instances can be long)
MAX_VARINT_BYTES: Final = 5  # pcvalue deltas are uint32
MAX_TABLE_STEPS: Final = 1 << 20  # pcvalue pairs per table; real tables have < 100k
MAX_CACHED_TABLES: Final = 16_384  # decoded pcvalue tables kept (bounded memory)
FLAG_TOP_FRAME: Final = 1
FLAG_SPWRITE: Final = 2
FLAG_ASM: Final = 4
NO_FUNCDATA: Final = 0xFFFFFFFF

# moduledata field offsets (amd64, bytes), checked against DWARF for 1.19 and 1.21-1.27
# (docs/go-runtime.md, "pclntab"; tests/unit/test_unwind.py).
_MD_TEXT: Final = 176
_MD_TYPES_1_20: Final = 296
_MD_GOFUNC_1_18: Final = 304  # 1.18-1.19: no covctrs fields yet
_MD_GOFUNC_1_20: Final = 320  # 1.20-1.26
_MD_GOFUNC_1_27: Final = 344  # 1.27 inserted typedesclen/itaboffset/itabsize


@dataclass(frozen=True, slots=True)
class Func:
    """One function-table entry. `entry`/`end` are link-time addresses; `end` is exclusive."""

    name: str
    entry: int
    end: int
    func_id: int
    flag: int
    has_pcsp: bool
    index: int
    record: int  # offset of the _func record inside the table
    pcsp: int
    pcfile: int
    pcln: int
    npcdata: int
    cu_offset: int
    nfuncdata: int
    start_line: int

    @property
    def has_line_table(self) -> bool:
        """False for C functions placed in pclntab by internal linking (name only)."""
        return self.pcln != 0


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where things are in one pclntab version family."""

    magic: int
    ptr_size: int
    min_lc: int
    nfunc: int
    funcname_off: int  # all *_off are relative to the table start
    cutab_off: int | None  # None: pre-1.16 (file numbers index filetab directly)
    filetab_off: int
    pctab_off: int
    functab_off: int
    functab_word: int  # bytes per functab field
    entries_absolute: bool  # pre-1.18: functab entries are PCs, not text offsets
    header_text_start: int  # 0 when absent (pre-1.18, or 1.26+)
    func_struct: struct.Struct  # the fixed part of a _func record
    inl_struct: struct.Struct  # one inline-tree record
    inl_name_field: int  # index of nameOff in inl_struct's tuple
    inl_parent_pc_field: int


_SHARED: dict[tuple[int, int, int, int], PclnTable] = {}
_MAX_NAME_HITS = 4096  # byte-pattern hits before a name lookup scans every record instead
_SHARED_MAX = 8


class PclnTable:
    """A parsed pclntab. Build it with `PclnTable.from_image(img)`."""

    def __init__(self, data: bytes | mmap.mmap, base: int, limit: int, vaddr: int, *,
                 text_start: int | None = None, image: ElfImage | None = None,
                 module: str | None = None) -> None:
        """Parse the table at file offset `base` (exclusive upper bound `limit`) of `data`.

        `vaddr` is the table's link-time address; `text_start` overrides the header's; `image`
        (optional) lets us find moduledata (text start on 1.26+, inline trees) and read
        pre-1.18 funcdata pointers.
        """
        self._data = data
        self._base = base
        self._limit = min(limit, len(data))
        self.vaddr = vaddr
        self.module = module
        self._image = image
        if base < 0 or self._limit - base < 16:
            raise BadBinaryError("pclntab: table too small")
        self._layout = self._parse_header()
        lay = self._layout
        self.nfunc = lay.nfunc
        self.go_version_family = FAMILIES[lay.magic]
        self._entries, self._funcoffs = self._decode_functab()
        self._moduledata: int | None = None
        self._gofunc: int | None = None
        if image is not None:
            self._moduledata = find_moduledata(image, vaddr, lay)
        self.text_start = self._text_start(text_start)
        if lay.entries_absolute:
            self._entry_base = 0
        else:
            self._entry_base = self.text_start
        if self._moduledata is not None and image is not None and lay.magic in (MAGIC_1_18,
                                                                                MAGIC_1_20):
            self._gofunc = _gofunc(image, self._moduledata, lay.magic)
        self._funcs: dict[int, Func] = {}
        self._tables: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
        self._names: list[str] | None = None
        self._name_offs: list[int] | None = None  # each function's funcnametab offset
        # the record bytes from the first name field, the record offsets, whether ascending
        self._records: tuple[bytes, list[int], bool] | None = None
        self._name_blob: bytes | None = None

    # --- construction ------------------------------------------------------------------
    @classmethod
    def shared(cls, img: ElfImage) -> PclnTable:
        """`from_image`, memoised per file (device, inode, size, mtime) for the life of the
        process: static facts and the unwinder then decode one table, and its names once."""
        try:
            st = os.stat(img.path)
            key: tuple[int, int, int, int] | None = (st.st_dev, st.st_ino, st.st_size,
                                                     st.st_mtime_ns)
        except (OSError, ValueError):
            key = None
        if key is not None and (hit := _SHARED.get(key)) is not None:
            return hit
        table = cls.from_image(img)
        if key is not None:
            if len(_SHARED) >= _SHARED_MAX:
                _SHARED.pop(next(iter(_SHARED)))
            _SHARED[key] = table
        return table

    @classmethod
    def from_image(cls, img: ElfImage) -> PclnTable:
        """Locate and parse the pclntab of an ELF image.

        Raises NotGoBinaryError when there is none, BadBinaryError when it is corrupt.
        """
        base, limit, vaddr = locate(img)
        module = None if img.path.startswith("<") else os.path.basename(img.path)
        return cls(img.data, base, limit, vaddr, image=img, module=module)

    def _u(self, fmt: str, off: int) -> int:
        """One integer at table offset `off`, bounds-checked."""
        size = struct.calcsize(fmt)
        if off < 0 or self._base + off + size > self._limit:
            raise BadBinaryError(f"pclntab: read at {off:#x} runs past the table")
        value: int = struct.unpack_from(fmt, self._data, self._base + off)[0]
        return value

    def _parse_header(self) -> _Layout:
        magic = self._u("<I", 0)
        pad1, pad2, min_lc, ptr = (self._u("<B", 4), self._u("<B", 5), self._u("<B", 6),
                                   self._u("<B", 7))
        if magic not in FAMILIES:
            raise BadBinaryError(f"pclntab: unknown magic {magic:#x}")
        if pad1 or pad2 or min_lc not in (1, 2, 4) or ptr not in (4, 8):
            raise BadBinaryError("pclntab: bad header (pad/minLC/ptrSize)")
        wfmt = "<Q" if ptr == 8 else "<I"

        def word(i: int) -> int:
            return self._u(wfmt, 8 + i * ptr)

        pc = "Q" if ptr == 8 else "I"
        nfunc = word(0)
        if magic == MAGIC_1_2:
            functab_off = 8 + ptr
            filetab_off = self._u("<I", functab_off + (2 * nfunc + 1) * ptr) if nfunc < (
                1 << 28) else 0
            lay = _Layout(magic, ptr, min_lc, nfunc, 0, None, filetab_off, 0, functab_off, ptr,
                          True, 0, struct.Struct(f"<{pc}iiIiiiiBBBB"),
                          struct.Struct("<hBBiiii"), 5, 6)
        elif magic == MAGIC_1_16:
            lay = _Layout(magic, ptr, min_lc, nfunc, word(2), word(3), word(4), word(5),
                          word(6), ptr, True, 0, struct.Struct(f"<{pc}iiIIIIIIBBBB"),
                          struct.Struct("<hBBiiii"), 5, 6)
        elif magic == MAGIC_1_18:
            lay = _Layout(magic, ptr, min_lc, nfunc, word(3), word(4), word(5), word(6),
                          word(7), 4, False, word(2), struct.Struct("<IiiIIIIIIBBBB"),
                          struct.Struct("<hBBiiii"), 5, 6)
        else:
            lay = _Layout(magic, ptr, min_lc, nfunc, word(3), word(4), word(5), word(6),
                          word(7), 4, False, word(2), struct.Struct("<IiiIIIIIIiBBBB"),
                          struct.Struct("<BBBBiii"), 4, 5)
        size = self._limit - self._base
        for off in (lay.funcname_off, lay.cutab_off or 0, lay.filetab_off, lay.pctab_off,
                    lay.functab_off):
            if not 0 <= off < size:
                raise BadBinaryError(f"pclntab: header offset {off:#x} outside the table")
        if nfunc <= 0 or lay.functab_off + (nfunc + 1) * 2 * lay.functab_word > size:
            raise BadBinaryError(f"pclntab: function count {nfunc} does not fit the table")
        return lay

    def _decode_functab(self) -> tuple[array[int], array[int]]:
        lay = self._layout
        code = "Q" if lay.functab_word == 8 else "I"
        start = self._base + lay.functab_off
        # Pre-1.18 the last entry is the end PC alone; reading one extra word keeps the
        # stride uniform and still lies inside the table (filetab offset follows).
        n = (lay.nfunc + 1) * 2
        raw = array(code)
        raw.frombytes(self._data[start:start + n * lay.functab_word])
        if len(raw) != n:
            raise BadBinaryError("pclntab: function table truncated")
        entries, funcoffs = raw[0::2], raw[1::2]
        if entries[0] > entries[-1]:
            raise BadBinaryError("pclntab: function table is not sorted")
        return entries, funcoffs

    def _text_start(self, override: int | None) -> int:
        lay = self._layout
        if override is not None:
            return override
        if lay.header_text_start:
            return lay.header_text_start
        # moduledata.text sits at +176 from 1.16 on; 1.2-1.15 used another layout.
        if self._moduledata is not None and self._image is not None and lay.magic != MAGIC_1_2:
            text = _read_word(self._image, self._moduledata + _MD_TEXT, lay.ptr_size)
            if text:
                return text
        if lay.entries_absolute:
            return self._entries[0]
        if self._image is not None:
            found = _text_from_symbols(self._image, self)
            if found is not None:
                return found
        raise BadBinaryError("pclntab: cannot determine the text start (header word is 0 and "
                             "no moduledata was found)")

    # --- function lookup -----------------------------------------------------------------
    @property
    def text_end(self) -> int:
        return self._entry_base + self._entries[self.nfunc]

    def func_for_pc(self, pc: int) -> Func | None:
        """The function containing link-time address `pc`, or None."""
        rel = pc - self._entry_base
        entries = self._entries
        if rel < entries[0] or rel >= entries[self.nfunc]:
            return None
        i = bisect_right(entries, rel, 0, self.nfunc) - 1
        return self.func_at(i)

    def func_at(self, i: int) -> Func:
        """The i-th function in address order (0 <= i < nfunc)."""
        f = self._funcs.get(i)
        if f is None:
            f = self._decode_func(i)
            self._funcs[i] = f
        return f

    def _decode_func(self, i: int) -> Func:
        lay = self._layout
        rec = self._record_offset(i)
        t = lay.func_struct.unpack_from(self._data, self._base + rec)
        entry = self._entry_base + self._entries[i]
        end = self._entry_base + self._entries[i + 1]
        if lay.magic == MAGIC_1_20:
            (_, name_off, _, _, pcsp, pcfile, pcln, npcdata, cu, start_line, func_id, flag, _,
             nfuncdata) = t
        elif lay.magic == MAGIC_1_2:
            (_, name_off, _, _, pcsp, pcfile, pcln, npcdata, func_id, _, _, nfuncdata) = t
            cu, flag, start_line = 0, 0, 0
        else:
            (_, name_off, _, _, pcsp, pcfile, pcln, npcdata, cu, func_id, flag, _,
             nfuncdata) = t
            start_line = 0
            if lay.magic == MAGIC_1_16:
                flag = 0  # 1.16 has a pad byte here, 1.17 the flag: no way to tell, ignore
        if npcdata < 0 or npcdata > 1 << 16:
            raise BadBinaryError(f"pclntab: function record {i} has a bad pcdata count")
        name = self._cstring(lay.funcname_off + name_off)
        return Func(name, entry, end, func_id, flag, pcsp != 0, i, rec, pcsp, pcfile, pcln,
                    npcdata, cu, nfuncdata, start_line)

    def _record_offset(self, i: int) -> int:
        lay = self._layout
        # funcoff is relative to the functab on 1.16+, to the table start before.
        rec = self._funcoffs[i] + (0 if lay.magic == MAGIC_1_2 else lay.functab_off)
        if self._base + rec + lay.func_struct.size > self._limit:
            raise BadBinaryError(f"pclntab: function record {i} lies outside the table")
        return rec

    def _funcname_at(self, i: int) -> str:
        """Name of the i-th function without building a Func (usable before text start)."""
        lay = self._layout
        name_off = self._u("<i", self._record_offset(i) + lay.ptr_size if lay.entries_absolute
                           else self._record_offset(i) + 4)
        return self._cstring(lay.funcname_off + name_off)

    def _cstring(self, off: int) -> str:
        start = self._base + off
        if off < 0 or start >= self._limit:
            raise BadBinaryError(f"pclntab: string offset {off:#x} outside the table")
        end = self._data.find(b"\0", start, min(self._limit, start + MAX_NAME_LEN))
        if end < 0:
            raise BadBinaryError(f"pclntab: unterminated string at {off:#x}")
        return bytes(self._data[start:end]).decode("utf-8", "replace")

    def function_names(self) -> Iterator[str]:
        """Every function name in address order (duplicates kept: ABI wrappers share names)."""
        return iter(self._all_names())

    def functions(self) -> Iterator[Func]:
        for i in range(self.nfunc):
            yield self.func_at(i)

    def _name_field_base(self) -> int:
        """Where record i's name offset lies in the data: this + funcoffs[i] (funcoff is
        relative to the functab on 1.16+, to the table start before)."""
        lay = self._layout
        field = lay.ptr_size if lay.entries_absolute else 4
        return self._base + (0 if lay.magic == MAGIC_1_2 else lay.functab_off) + field

    def _offsets_and_blob(self) -> tuple[list[int], bytes]:
        """Every function's name offset (one pass over the records) and funcnametab."""
        if self._name_offs is not None and self._name_blob is not None:
            return self._name_offs, self._name_blob
        data, limit, at0 = self._data, self._limit, self._name_field_base()
        unpack = struct.Struct("<i").unpack_from
        offs = []
        for funcoff in self._funcoffs[:self.nfunc]:
            at = at0 + funcoff
            if at + 4 > limit:
                raise BadBinaryError("pclntab: function record lies outside the table")
            offs.append(unpack(data, at)[0])
        self._name_offs = offs
        return offs, self._funcname_blob()

    def _all_names(self) -> list[str]:
        """All names, read in bulk: one pass over the records for name offsets, one split of
        funcnametab. ~10x faster than building every Func (inspect lists them all)."""
        if self._names is not None:
            return self._names
        offs, blob = self._offsets_and_blob()
        find = blob.find
        names: list[str] = []
        seen: dict[int, str] = {}
        for off in offs:
            name = seen.get(off)
            if name is None:
                end = find(b"\0", off, off + MAX_NAME_LEN) if off >= 0 else -1
                if end < 0:
                    raise BadBinaryError(f"pclntab: bad function name offset {off:#x}")
                name = seen[off] = blob[off:end].decode("utf-8", "replace")
            names.append(name)
        self._names = names
        return names

    def _indexes_named(self, name: str) -> list[int]:
        """Indexes (address order) of the functions named `name`, without decoding every
        name (the unwinder looks up a handful of runtime functions; on a 20k-function
        binary two lookups cost ~8 ms, decoding and indexing every name 16-32 ms): each
        occurrence of the name in funcnametab gives a name offset, and the records holding
        that offset are found by searching the records for its four bytes, each hit checked
        against the record starts."""
        if self._records is None:
            funcoffs = list(self._funcoffs[:self.nfunc])
            # the name field of record i is at rec_lo + funcoffs[i] - funcoffs[0]
            at0 = self._name_field_base()
            rec_lo, rec_hi = at0 + funcoffs[0], min(self._limit, at0 + max(funcoffs) + 4)
            ordered = all(a < b for a, b in zip(funcoffs, funcoffs[1:], strict=False))
            self._records = (bytes(self._data[rec_lo:rec_hi]), funcoffs, ordered)
        records, funcoffs, ordered = self._records
        if not ordered:  # never seen: records out of address order; scan them all
            return self._scan_named(name)
        blob = self._funcname_blob()
        needle = name.encode("utf-8") + b"\0"
        first, n = funcoffs[0], len(funcoffs)
        found: list[int] = []
        hits = 0
        at = blob.find(needle)
        while at >= 0:
            pattern = struct.pack("<i", at)
            p = records.find(pattern)
            while p >= 0:
                hits += 1
                if hits > _MAX_NAME_HITS:  # a common byte pattern: the plain scan is faster
                    return self._scan_named(name)
                off = p + first
                i = bisect_left(funcoffs, off)
                if i < n and funcoffs[i] == off:
                    found.append(i)
                p = records.find(pattern, p + 1)
            at = blob.find(needle, at + 1)
        return sorted(set(found))

    def _funcname_blob(self) -> bytes:
        """funcnametab alone (it is followed by cutab on 1.16+)."""
        if self._name_blob is None:
            lay = self._layout
            lo, hi = lay.funcname_off, self._limit - self._base
            if lay.cutab_off is not None and lay.cutab_off > lo:
                hi = min(hi, lay.cutab_off)
            self._name_blob = bytes(self._data[self._base + lo:self._base + hi])
        return self._name_blob

    def _scan_named(self, name: str) -> list[int]:
        return [i for i, n in enumerate(self._all_names()) if n == name]

    def lookup_function(self, name: str) -> Func | None:
        """The first function (by address) named `name`, or None.

        `runtime.asmcgocall` and a few others exist twice (ABI0 body + ABIInternal wrapper);
        use `lookup_functions` and `func_id` to choose.
        """
        idx = self._indexes_named(name)
        return self.func_at(idx[0]) if idx else None

    def lookup_functions(self, name: str) -> list[Func]:
        return [self.func_at(i) for i in self._indexes_named(name)]

    # --- pcvalue tables --------------------------------------------------------------------
    def _table(self, off: int, func: Func) -> tuple[list[int], list[int]]:
        """Decode the pcvalue table at pctab offset `off` for `func`: (end pcs, values)."""
        key = (off, func.entry)
        cached = self._tables.get(key)
        if cached is not None:
            return cached
        decoded = decode_pcvalue(self._data, self._base + self._layout.pctab_off + off,
                                 self._limit, func.entry, func.end, self._layout.min_lc)
        if len(self._tables) >= MAX_CACHED_TABLES:
            self._tables.clear()  # crude but bounded; an unwinder's working set is small
        self._tables[key] = decoded
        return decoded

    def pcvalue(self, off: int, func: Func, pc: int) -> int:
        """Value of the table at pctab offset `off` at `pc`; -1 if none (offset 0: no table)."""
        if off == 0:
            return -1
        pcs, vals = self._table(off, func)
        i = bisect_right(pcs, pc)
        return vals[i] if i < len(vals) else -1

    def sp_delta(self, func: Func, pc: int) -> int | None:
        """Bytes between SP and the return-address slot at `pc` (pcsp), or None if unknown."""
        if not func.has_pcsp:
            return None
        v = self.pcvalue(func.pcsp, func, pc)
        return None if v < 0 else v

    def pcdata_offset(self, func: Func, table: int) -> int:
        """pctab offset of pcdata[table] (0 = absent)."""
        if table >= func.npcdata:
            return 0
        return self._u("<I", func.record + self._layout.func_struct.size + 4 * table)

    def funcdata_vaddr(self, func: Func, index: int) -> int | None:
        """Link-time address of funcdata[index], or None."""
        lay = self._layout
        if index >= func.nfuncdata:
            return None
        start = func.record + lay.func_struct.size + 4 * func.npcdata
        if lay.magic in (MAGIC_1_18, MAGIC_1_20):
            off = self._u("<I", start + 4 * index)
            if off == NO_FUNCDATA or self._gofunc is None:
                return None
            return self._gofunc + off
        # pre-1.18: pointer-aligned absolute pointers
        vaddr = self.vaddr + start
        if vaddr % lay.ptr_size:
            start += lay.ptr_size - vaddr % lay.ptr_size
        p = self._u("<Q" if lay.ptr_size == 8 else "<I", start + lay.ptr_size * index)
        return p or None

    def file_line(self, func: Func, pc: int) -> tuple[str | None, int | None]:
        """(file, line) at `pc` inside `func` (the innermost inlined position)."""
        if not func.has_line_table:
            return None, None
        line = self.pcvalue(func.pcln, func, pc)
        fileno = self.pcvalue(func.pcfile, func, pc)
        return self._file_name(func, fileno), (line if line >= 0 else None)

    def _file_name(self, func: Func, fileno: int) -> str | None:
        lay = self._layout
        if fileno < 0:
            return None
        if lay.cutab_off is None:
            if fileno == 0:
                return None
            off = self._u("<I", lay.filetab_off + 4 * fileno)
            return self._cstring(off)
        off = self._u("<I", lay.cutab_off + 4 * (func.cu_offset + fileno))
        if off == 0xFFFFFFFF:
            return None
        return self._cstring(lay.filetab_off + off)

    # --- frames ----------------------------------------------------------------------------
    def frames(self, pc: int, *, is_return_address: bool = False) -> list[Frame]:
        """Frames at link-time `pc`, innermost first; inlined calls expanded (inlined=True).

        For a return address, the lookup uses pc-1 so it lands inside the CALL.
        """
        look = pc - 1 if is_return_address else pc
        func = self.func_for_pc(look)
        if func is None:
            return []
        if not func.has_line_table:
            return [Frame(func.name, module=self.module, pc=pc)]
        out: list[Frame] = []
        tree = self._inline_tree(func)
        cur = look
        if tree is not None:
            inl_off, inl_base = tree
            lay = self._layout
            st = lay.inl_struct
            for _ in range(MAX_INLINE_DEPTH):
                idx = self.pcvalue(inl_off, func, cur)
                if idx < 0:
                    break
                rec = self._read_vaddr(inl_base + idx * st.size, st.size)
                t = st.unpack(rec)
                name_off, parent_pc = t[lay.inl_name_field], t[lay.inl_parent_pc_field]
                file, line = self.file_line(func, cur)
                out.append(Frame(self._cstring(lay.funcname_off + name_off), file, line,
                                 module=self.module, pc=pc, inlined=True))
                cur = func.entry + parent_pc
            else:
                raise BadBinaryError(f"pclntab: inline tree of {func.name} is too deep "
                                     "(cycle?)")
        file, line = self.file_line(func, cur)
        out.append(Frame(func.name, file, line, module=self.module, pc=pc))
        return out

    def _inline_tree(self, func: Func) -> tuple[int, int] | None:
        """(pcdata offset of the inline index table, address of the tree) or None."""
        inl_off = self.pcdata_offset(func, PCDATA_INL_TREE_INDEX)
        if inl_off == 0:
            return None
        base = self.funcdata_vaddr(func, FUNCDATA_INL_TREE)
        if base is None:
            return None
        return inl_off, base

    def _read_vaddr(self, vaddr: int, size: int) -> bytes:
        # 1.27 puts go:func.* inside the table itself: read it from there when possible.
        off = vaddr - self.vaddr
        if off >= 0 and self._base + off + size <= self._limit:
            return bytes(self._data[self._base + off:self._base + off + size])
        if self._image is None:
            raise BadBinaryError(f"pclntab: inline tree at {vaddr:#x} is not readable")
        return self._image.read_vaddr(vaddr, size)


# --- pcvalue decoding --------------------------------------------------------------------
def read_uvarint(data: bytes | mmap.mmap, pos: int, limit: int) -> tuple[int, int]:
    """Decode an unsigned LEB128 varint (at most 5 bytes, 32 bits) -> (value, next pos)."""
    value = 0
    shift = 0
    for _ in range(MAX_VARINT_BYTES):
        if pos >= limit or pos < 0:
            raise BadBinaryError("pclntab: varint runs past the table")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value & 0xFFFFFFFF, pos
        shift += 7
    raise BadBinaryError("pclntab: varint longer than 5 bytes")


def decode_pcvalue(data: bytes | mmap.mmap, pos: int, limit: int, entry: int, end: int,
                   min_lc: int = 1) -> tuple[list[int], list[int]]:
    """Decode a whole pcvalue table starting at `pos`: value v applies to [prev pc, pcs[i]).

    Stops at the terminator, at `end` (the function's end) or after a step cap, so a hostile
    table costs O(function size). Single-byte varints (the common case) take a fast path.
    """
    pcs: list[int] = []
    vals: list[int] = []
    value = -1
    pc = entry
    first = True
    limit = min(limit, len(data))
    if pos < 0:
        raise BadBinaryError("pclntab: pcvalue table outside the table")
    for _ in range(min(MAX_TABLE_STEPS, 2 * max(0, end - entry) + 16)):
        if pos >= limit:
            raise BadBinaryError("pclntab: pcvalue table runs past the table")
        uv = data[pos]
        if uv < 0x80:
            pos += 1
        else:
            uv, pos = read_uvarint(data, pos, limit)
        if uv == 0 and not first:
            break
        first = False
        value += (uv >> 1) ^ -(uv & 1)
        if pos >= limit:
            raise BadBinaryError("pclntab: pcvalue table runs past the table")
        delta = data[pos]
        if delta < 0x80:
            pos += 1
        else:
            delta, pos = read_uvarint(data, pos, limit)
        pc += delta * min_lc
        pcs.append(pc)
        vals.append(value)
        if pc >= end:
            break
    return pcs, vals


# --- locating the table and moduledata -----------------------------------------------------
def locate(img: ElfImage) -> tuple[int, int, int]:
    """(file offset, file end, vaddr) of the pclntab. Raises NotGoBinaryError if absent."""
    for name in (".gopclntab", ".data.rel.ro.gopclntab"):
        s = img.section(name)
        if s is not None and s.sh_type != "SHT_NOBITS" and s.size >= 16:
            if s.offset + s.size > len(img.data):
                raise BadBinaryError(f"{img.path}: section {name} runs past the end of the "
                                     "file (truncated?)")
            return s.offset, s.offset + s.size, _section_vaddr(img, s.offset, s.addr)
    found = _locate_by_symbol(img)
    if found is not None:
        return found
    found = _locate_by_scan(img)
    if found is not None:
        return found
    _check_not_truncated(img)
    raise NotGoBinaryError(f"{img.path}: no Go pclntab (not a Go binary, or packed/obfuscated)",
                           help="cgotrace needs a Go binary; UPX-packed files must be unpacked")


def _section_vaddr(img: ElfImage, offset: int, sh_addr: int) -> int:
    """The address a file offset is loaded at, per the program headers (what the loader
    uses); sh_addr only when no PT_LOAD covers it."""
    for seg in img.load_segments():
        if seg.offset <= offset < seg.offset + seg.filesz:
            return seg.vaddr + offset - seg.offset
    return sh_addr


def _check_not_truncated(img: ElfImage) -> None:
    """A cut-off file loses its section headers first: say so instead of "not Go"."""
    size = len(img.data)
    shoff = int(img.header["e_shoff"])
    shend = shoff + int(img.header["e_shnum"]) * int(img.header["e_shentsize"])
    if shoff and shend > size:
        raise BadBinaryError(f"{img.path}: truncated file (section headers end at {shend:#x}, "
                             f"file has {size:#x} bytes)")
    for seg in img.load_segments():
        if seg.offset + seg.filesz > size:
            raise BadBinaryError(f"{img.path}: truncated file (a PT_LOAD segment ends past "
                                 "the end of the file)")


def _segment_end(img: ElfImage, vaddr: int) -> tuple[int, int] | None:
    for seg in img.load_segments():
        if seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
            off = seg.offset + vaddr - seg.vaddr
            return off, min(len(img.data), seg.offset + seg.filesz)
    return None


def _locate_by_symbol(img: ElfImage) -> tuple[int, int, int] | None:
    if ".symtab" not in img.sections:
        return None
    try:
        symtab = img.elf.get_section_by_name(".symtab")
        syms = {}
        for name in ("runtime.pclntab", "runtime.pcheader", "runtime.epclntab"):
            found = symtab.get_symbol_by_name(name)
            if found:
                syms[name] = int(found[0]["st_value"])
    except Exception as e:
        raise BadBinaryError(f"{img.path}: corrupt symbol table ({type(e).__name__})") from None
    start = syms.get("runtime.pclntab") or syms.get("runtime.pcheader")
    if not start:
        return None
    where = _segment_end(img, start)
    if where is None:
        return None
    off, end = where
    stop = syms.get("runtime.epclntab")
    if stop and start < stop:
        end = min(end, off + (stop - start))
    return off, end, start


def _header_plausible(data: bytes | mmap.mmap, off: int) -> bool:
    if off + 16 > len(data):
        return False
    magic = struct.unpack_from("<I", data, off)[0]
    return (magic in FAMILIES and data[off + 4] == 0 and data[off + 5] == 0
            and data[off + 6] in (1, 2, 4) and data[off + 7] in (4, 8))


def _locate_by_scan(img: ElfImage) -> tuple[int, int, int] | None:
    """Scan non-executable PT_LOAD data for an 8-aligned header; prefer one moduledata
    points at (external-link PIE on 1.21 merges the table into .data.rel.ro)."""
    candidates: list[tuple[int, int, int]] = []
    data = img.data
    for seg in img.load_segments():
        if seg.executable:
            continue
        start, stop = seg.offset, min(len(data), seg.offset + seg.filesz)
        for magic in (MAGIC_1_20, MAGIC_1_18, MAGIC_1_16, MAGIC_1_2):
            needle = struct.pack("<I", magic) + b"\x00\x00"
            pos = data.find(needle, start, stop)
            scanned = 0
            while pos >= 0 and scanned < 4096:
                scanned += 1
                vaddr = seg.vaddr + pos - seg.offset
                if vaddr % 8 == 0 and _header_plausible(data, pos):
                    candidates.append((pos, stop, vaddr))
                pos = data.find(needle, pos + 1, stop)
    for cand in candidates:
        try:
            # text_start=0: only the header layout matters for the cross-check
            table = PclnTable(data, cand[0], cand[1], cand[2], text_start=0)
        except BadBinaryError:
            continue
        if find_moduledata(img, cand[2], table._layout) is not None:
            return cand
    return candidates[0] if len(candidates) == 1 else None


def find_moduledata(img: ElfImage, pcln_vaddr: int, lay: _Layout) -> int | None:
    """Link-time address of runtime.firstmoduledata, or None.

    moduledata starts with a pointer to the pclntab followed by the funcnametab slice
    (1.16+), or with the pclntable slice (1.2-1.15). The file holds link-time values even
    for PIE.
    """
    ptr = lay.ptr_size
    fmt = "<Q" if ptr == 8 else "<I"
    needle = struct.pack(fmt, pcln_vaddr)
    expect_second = None if lay.magic == MAGIC_1_2 else pcln_vaddr + lay.funcname_off
    regions: list[tuple[int, int, int]] = []  # (file start, file end, vaddr of start)
    for name in (".go.module", ".noptrdata"):
        s = img.section(name)
        if s is not None and s.sh_type != "SHT_NOBITS":
            regions.append((s.offset, min(len(img.data), s.offset + s.size),
                            _section_vaddr(img, s.offset, s.addr)))
    for seg in img.load_segments():
        if seg.writable:
            regions.append((seg.offset, min(len(img.data), seg.offset + seg.filesz), seg.vaddr))
    data = img.data
    for start, stop, vaddr in regions:
        pos = data.find(needle, start, stop)
        tries = 0
        while pos >= 0 and tries < 1024:
            tries += 1
            md = vaddr + pos - start
            if md % ptr == 0 and pos + 2 * ptr <= stop:
                second = struct.unpack_from(fmt, data, pos + ptr)[0]
                if expect_second is None or second == expect_second:
                    return md
            pos = data.find(needle, pos + 1, stop)
    return None


def _read_word(img: ElfImage, vaddr: int, ptr: int) -> int:
    raw = img.read_vaddr(vaddr, ptr)
    value: int = struct.unpack("<Q" if ptr == 8 else "<I", raw)[0]
    return value


def _gofunc(img: ElfImage, md: int, magic: int) -> int | None:
    try:
        if magic == MAGIC_1_18:
            return _read_word(img, md + _MD_GOFUNC_1_18, 8) or None
        types = _read_word(img, md + _MD_TYPES_1_20, 8)
        after = _read_word(img, md + _MD_TYPES_1_20 + 8, 8)
        # 1.27: the word after `types` is typedesclen (a small length), not etypes.
        off = _MD_GOFUNC_1_27 if after < types else _MD_GOFUNC_1_20
        return _read_word(img, md + off, 8) or None
    except BadBinaryError:
        return None


def _text_from_symbols(img: ElfImage, table: PclnTable) -> int | None:
    """runtime.text from .symtab, else `crosscall2`'s .dynsym value minus its entry offset."""
    try:
        for secname, sym in ((".symtab", "runtime.text"), (".dynsym", "crosscall2")):
            sec = img.elf.get_section_by_name(secname) if secname in img.sections else None
            if sec is None:
                continue
            found = sec.get_symbol_by_name(sym)
            if not found:
                continue
            value = int(found[0]["st_value"])
            if sym == "runtime.text":
                return value
            for i in range(table.nfunc):
                if table._funcname_at(i) == sym:
                    return value - table._entries[i]
    except BadBinaryError:
        raise
    except Exception as e:
        raise BadBinaryError(f"{img.path}: corrupt symbol table ({type(e).__name__})") from None
    return None
