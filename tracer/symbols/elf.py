"""ELF images as data: a lazy, error-wrapping view over pyelftools.

Every pyelftools failure becomes a `BadBinaryError` with a one-line reason; nothing above
this module sees an `ELFError`. Sections and segments are parsed on first use only.
pyelftools is imported lazily (it costs ~50 ms) so `cgotrace --help` stays instant.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import IO, Any

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


class ElfImage:
    """One ELF file on disk (or bytes in memory), read lazily."""

    def __init__(self, data: bytes | mmap.mmap, path: str = "<memory>") -> None:
        self.path = path
        self.data = data
        if len(data) < 16 or data[:4] != b"\x7fELF":
            raise BadBinaryError(f"{path}: not an ELF file")
        try:
            from elftools.elf.elffile import ELFFile

            self._stream: IO[bytes] = _BytesStream(data)
            self.elf: Any = ELFFile(self._stream)
            self.header = self.elf.header
        except Exception as e:  # pyelftools raises many types on hostile input
            raise BadBinaryError(f"{path}: unreadable ELF header ({_reason(e)})") from None

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
        return int(self.elf.elfclass)

    @property
    def little_endian(self) -> bool:
        return bool(self.elf.little_endian)

    @property
    def etype(self) -> str:
        return str(self.header["e_type"])  # 'ET_EXEC', 'ET_DYN', 'ET_CORE', 'ET_REL'

    @property
    def entry(self) -> int:
        return int(self.header["e_entry"])

    # --- sections and segments ---------------------------------------------------------
    @cached_property
    def sections(self) -> dict[str, Section]:
        out: dict[str, Section] = {}
        try:
            for s in self.elf.iter_sections():
                if s.name and s.name not in out:
                    out[s.name] = Section(s.name, int(s["sh_addr"]), int(s["sh_offset"]),
                                          int(s["sh_size"]), str(s["sh_type"]))
        except Exception as e:
            raise BadBinaryError(f"{self.path}: corrupt section headers ({_reason(e)})") from None
        return out

    @cached_property
    def segments(self) -> list[Segment]:
        out: list[Segment] = []
        try:
            for seg in self.elf.iter_segments():
                out.append(Segment(str(seg["p_type"]), int(seg["p_vaddr"]), int(seg["p_offset"]),
                                   int(seg["p_filesz"]), int(seg["p_memsz"]), int(seg["p_flags"])))
        except Exception as e:
            raise BadBinaryError(f"{self.path}: corrupt program headers ({_reason(e)})") from None
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
