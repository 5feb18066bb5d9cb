"""glibc's /etc/ld.so.cache, read as data (never by running ldconfig).

Two on-disk formats exist: the current `glibc-ld.so.cache1.1` and the old `ld.so-1.7.0`,
which older glibc wrote first with the new table appended after it (the "compat" layout).
Both are parsed; the new table wins when present, as in glibc's dl-cache.c.

New format, little-endian on x86-64:
  header (48 bytes): magic[20] nlibs:u32 len_strings:u32 flags:u8 pad[3]
                     extension_offset:u32 unused[3]:u32
  entries (24 bytes each): flags:i32 key:u32 value:u32 osversion:u32 hwcap:u64
  string offsets are relative to the start of the new header.
Old format: magic "ld.so-1.7.0" (12 bytes with NUL) nlibs:u32, entries of
  flags:i32 key:u32 value:u32; string offsets relative to the end of the entry array.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tracer.errors import BadBinaryError

NEW_MAGIC = b"glibc-ld.so.cache1.1"
OLD_MAGIC = b"ld.so-1.7.0"

FLAG_TYPE_MASK = 0x00FF
FLAG_ELF_LIBC6 = 0x0003
FLAG_REQUIRED_MASK = 0xFF00
FLAG_X8664_LIB64 = 0x0300

_TYPE_NAMES = {0: "libc4", 1: "ELF", 2: "libc5", 3: "libc6"}
# Only the arch markers this tool meets on x86-64 machines; others print as a hex value.
_ARCH_NAMES = {0x0000: "", 0x0300: "x86-64", 0x0800: "x32", 0x0A00: "AArch64"}


@dataclass(frozen=True)
class CacheEntry:
    soname: str  # the key: the name a DT_NEEDED entry is matched against
    path: str  # where the library is (inside the root the cache belongs to)
    flags: int
    hwcap: int = 0

    @property
    def is_x86_64_libc6(self) -> bool:
        return (self.flags & FLAG_TYPE_MASK == FLAG_ELF_LIBC6
                and self.flags & FLAG_REQUIRED_MASK == FLAG_X8664_LIB64)

    def describe_flags(self) -> str:
        """The flag text `ldconfig -p` prints in parentheses, e.g. `libc6,x86-64`."""
        kind = _TYPE_NAMES.get(self.flags & FLAG_TYPE_MASK, f"unknown={self.flags & 0xFF:#x}")
        arch_bits = self.flags & FLAG_REQUIRED_MASK
        arch = _ARCH_NAMES.get(arch_bits, f"{arch_bits:#x}")
        return f"{kind},{arch}" if arch else kind


@dataclass(frozen=True)
class LdCache:
    format: str  # "new", "old", or "compat" (old table followed by a new one)
    entries: tuple[CacheEntry, ...]

    def lookup(self, soname: str, x86_64_only: bool = True) -> str | None:
        """The path ld.so would take for `soname` (first match, plain entries first)."""
        matches = [e for e in self.entries if e.soname == soname
                   and (not x86_64_only or e.is_x86_64_libc6 or self.format == "old")]
        if not matches:
            return None
        plain = [e for e in matches if e.hwcap == 0]
        return (plain or matches)[0].path


def _cstr(data: bytes, off: int) -> str:
    if not 0 <= off < len(data):
        raise BadBinaryError(f"ld.so.cache: string offset {off:#x} outside the file")
    end = data.find(b"\0", off)
    if end < 0:
        raise BadBinaryError("ld.so.cache: unterminated string")
    return data[off:end].decode("utf-8", "replace")


def _parse_new(data: bytes, base: int) -> list[CacheEntry]:
    if len(data) < base + 48:
        raise BadBinaryError("ld.so.cache: truncated header")
    nlibs, _len_strings = struct.unpack_from("<II", data, base + 20)
    start = base + 48
    if start + nlibs * 24 > len(data):
        raise BadBinaryError(f"ld.so.cache: {nlibs} entries do not fit in {len(data)} bytes")
    out: list[CacheEntry] = []
    for i in range(nlibs):
        flags, key, value, _osv, hwcap = struct.unpack_from("<iIIIQ", data, start + i * 24)
        out.append(CacheEntry(_cstr(data, base + key), _cstr(data, base + value), flags, hwcap))
    return out


def parse_ld_cache(data: bytes) -> LdCache:
    """Parse the bytes of an ld.so.cache; BadBinaryError if they are not one."""
    if data.startswith(NEW_MAGIC):
        return LdCache("new", tuple(_parse_new(data, 0)))
    if data.startswith(OLD_MAGIC):
        if len(data) < 16:
            raise BadBinaryError("ld.so.cache: truncated header")
        (nlibs,) = struct.unpack_from("<I", data, 12)
        entries_end = 16 + nlibs * 12
        if entries_end > len(data):
            raise BadBinaryError(f"ld.so.cache: {nlibs} entries do not fit in {len(data)} bytes")
        new_base = (entries_end + 7) & ~7  # the new table is aligned like its uint64 field
        if data[new_base:new_base + len(NEW_MAGIC)] == NEW_MAGIC:
            return LdCache("compat", tuple(_parse_new(data, new_base)))
        out = []
        for i in range(nlibs):
            flags, key, value = struct.unpack_from("<iII", data, 16 + i * 12)
            out.append(CacheEntry(_cstr(data, entries_end + key),
                                  _cstr(data, entries_end + value), flags))
        return LdCache("old", tuple(out))
    raise BadBinaryError("ld.so.cache: unknown format (no glibc-ld.so.cache1.1 or "
                         "ld.so-1.7.0 magic)")


def read_ld_cache(host_path: str) -> LdCache | None:
    """Read and parse a cache file; None if it does not exist."""
    try:
        with open(host_path, "rb") as f:
            data = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return parse_ld_cache(data)
