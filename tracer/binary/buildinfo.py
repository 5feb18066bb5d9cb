"""`.go.buildinfo`: the Go version, modules and build settings stamped into a Go binary.

Both formats are read: the 1.18+ inline format (two uvarint-prefixed strings after the
32-byte header) and the older pointer format (two pointers to Go string headers). The
section keeps its name when stripped; without it we scan writable PT_LOAD data for the
16-byte-aligned magic. `format_go_version_m` reproduces `go version -m FILE` byte for byte
(docs/go-runtime.md, "Build info"): it re-serializes the parsed info the way runtime/debug does.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from typing import Final

from tracer.binary.elf import ElfImage
from tracer.errors import BadBinaryError

MAGIC: Final = b"\xff Go buildinf:"
HEADER_SIZE: Final = 32
ALIGN: Final = 16
MAX_STRING: Final = 1 << 20  # modinfo is a few KiB; anything larger is corrupt
_FLAG_BIG_ENDIAN: Final = 0x1
_FLAG_INLINE: Final = 0x2
_SENTINEL_LEN: Final = 16


@dataclass(frozen=True)
class Module:
    path: str
    version: str
    sum: str = ""
    replace: Module | None = None


@dataclass(frozen=True)
class BuildInfo:
    """What `go version -m` shows. `lines` are its output lines after the first, exactly as
    printed (each starts with a tab). `settings` maps each `build KEY=VALUE` key to its
    unquoted value (`setting_list` keeps order and duplicates). `error` is set, and the
    module fields are empty, when the module info does not parse (Go then refuses too)."""

    go_version: str
    path: str = ""
    main: Module | None = None
    deps: tuple[Module, ...] = ()
    setting_list: tuple[tuple[str, str], ...] = ()
    settings: dict[str, str] = field(default_factory=dict)
    lines: tuple[str, ...] = ()
    error: str | None = None


def read_buildinfo(img: ElfImage) -> BuildInfo | None:
    """Build info of a Go binary, or None when it has none (not Go, or packed).

    Raises BadBinaryError when the blob exists but is corrupt.
    """
    located = _locate(img)
    if located is None:
        return None
    off, stop, vaddr = located
    data = img.data
    if off + HEADER_SIZE > stop:
        raise BadBinaryError(f"{img.path}: .go.buildinfo header truncated")
    ptr_size, flags = data[off + 14], data[off + 15]
    if flags & _FLAG_INLINE:
        pos = off + HEADER_SIZE
        version, pos = _varint_string(data, pos, stop)
        modinfo, _ = _varint_string(data, pos, stop)
    else:
        if ptr_size not in (4, 8):
            raise BadBinaryError(f"{img.path}: .go.buildinfo has pointer size {ptr_size}")
        order = ">" if flags & _FLAG_BIG_ENDIAN else "<"
        version = _pointer_string(img, off + 16, ptr_size, order)
        modinfo = _pointer_string(img, off + 16 + ptr_size, ptr_size, order)
    if not version:
        return None
    return parse_modinfo(version.decode("utf-8", "surrogateescape"), _strip_sentinels(modinfo))


def _locate(img: ElfImage) -> tuple[int, int, int] | None:
    data = img.data
    s = img.section(".go.buildinfo")
    if s is not None and s.sh_type != "SHT_NOBITS":
        stop = s.offset + s.size
        if stop > len(data):
            raise BadBinaryError(f"{img.path}: .go.buildinfo runs past the end of the file "
                                 "(truncated?)")
        if data[s.offset:s.offset + len(MAGIC)] == MAGIC:
            return s.offset, stop, s.addr
    for seg in img.load_segments():
        if not seg.writable:
            continue
        start, stop = seg.offset, min(len(data), seg.offset + seg.filesz)
        pos = data.find(MAGIC, start, stop)
        while pos >= 0:
            if (seg.vaddr + pos - seg.offset) % ALIGN == 0:
                return pos, stop, seg.vaddr + pos - seg.offset
            pos = data.find(MAGIC, pos + 1, stop)
    return None


def _varint_string(buf: bytes | mmap.mmap, pos: int, stop: int) -> tuple[bytes, int]:
    n = 0
    shift = 0
    for _ in range(10):
        if pos >= stop:
            raise BadBinaryError(".go.buildinfo: string length runs past the blob")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
    else:
        raise BadBinaryError(".go.buildinfo: overlong string length")
    if n > MAX_STRING or pos + n > stop:
        raise BadBinaryError(".go.buildinfo: string runs past the blob")
    return bytes(buf[pos:pos + n]), pos + n


def _pointer_string(img: ElfImage, off: int, ptr: int, order: str) -> bytes:
    fmt = order + ("Q" if ptr == 8 else "I")
    if off + ptr > len(img.data):
        raise BadBinaryError(f"{img.path}: .go.buildinfo truncated")
    header_addr = struct.unpack_from(fmt, img.data, off)[0]
    header = img.read_vaddr(header_addr, 2 * ptr)
    str_addr, length = struct.unpack(order + ("QQ" if ptr == 8 else "II"), header)
    if length == 0:
        return b""
    if length > MAX_STRING:
        raise BadBinaryError(f"{img.path}: .go.buildinfo string too long ({length})")
    return img.read_vaddr(str_addr, length)


def _strip_sentinels(mod: bytes) -> str:
    if len(mod) >= 2 * _SENTINEL_LEN + 1 and mod[-(_SENTINEL_LEN + 1)] == 0x0A:
        return mod[_SENTINEL_LEN:-_SENTINEL_LEN].decode("utf-8", "surrogateescape")
    return ""


# --- module info text --------------------------------------------------------------------
def parse_modinfo(go_version: str, text: str) -> BuildInfo:
    """Parse the modinfo body the way runtime/debug.ParseBuildInfo does."""
    try:
        path, main, deps, settings = _parse(text)
    except ValueError as e:
        return BuildInfo(go_version, error=f"could not parse Go build info: {e}")
    body = _serialize(path, main, deps, settings)
    lines = tuple("\t" + line for line in body.split("\n")[:-1]) if body else ()
    return BuildInfo(go_version, path, main, tuple(deps), tuple(settings), dict(settings),
                     lines)


def _parse(text: str) -> tuple[str, Module | None, list[Module], list[tuple[str, str]]]:
    path = ""
    main: Module | None = None
    deps: list[Module] = []
    settings: list[tuple[str, str]] = []
    last: str | None = None  # "main" or "dep": what a "=>" line replaces
    for lineno, line in enumerate(text.split("\n")[:-1], start=1):  # unterminated tail ignored
        try:
            if line.startswith("path\t"):
                path = line[5:]
            elif line.startswith("mod\t"):
                main, last = _module(line[4:].split("\t")), "main"
            elif line.startswith("dep\t"):
                deps.append(_module(line[4:].split("\t")))
                last = "dep"
            elif line.startswith("=>\t"):
                elem = line[3:].split("\t")
                if len(elem) != 3:
                    raise ValueError(f"expected 3 columns for replacement; got {len(elem)}")
                rep = Module(elem[0], elem[1], elem[2])
                if last == "main" and main is not None:
                    main = Module(main.path, main.version, main.sum, rep)
                elif last == "dep":
                    d = deps[-1]
                    deps[-1] = Module(d.path, d.version, d.sum, rep)
                else:
                    raise ValueError("replacement with no module on previous line")
                last = None
            elif line.startswith("build\t"):
                settings.append(_setting(line[6:]))
        except ValueError as e:
            raise ValueError(f"line {lineno}: {e}") from None
    return path, main, deps, settings


def _module(elem: list[str]) -> Module:
    if len(elem) not in (2, 3):
        raise ValueError(f"expected 2 or 3 columns; got {len(elem)}")
    return Module(elem[0], elem[1], elem[2] if len(elem) == 3 else "")


def _setting(kv: str) -> tuple[str, str]:
    if not kv:
        raise ValueError("build line missing '='")
    if kv[0] == "=":
        raise ValueError("build line with missing key")
    if kv[0] in "`\"":
        raw_key = go_quoted_prefix(kv)
        rest = kv[len(raw_key):]
        if not rest or rest[0] != "=":
            raise ValueError("build line missing '=' after quoted key")
        key, raw = go_unquote(raw_key), rest[1:]
    else:
        key, sep, raw = kv.partition("=")
        if not sep:
            raise ValueError("build line missing '=' after key")
        if _quote_key(key):
            raise ValueError(f"unquoted key {key!r} must be quoted")
    if raw and raw[0] in "`\"":
        value = go_unquote(raw)
    else:
        value = raw
        if _quote_value(value):
            raise ValueError(f"unquoted value {value!r} must be quoted")
    return key, value


def _quote_key(key: str) -> bool:
    return not key or any(c in key for c in "= \t\r\n\"`")


def _quote_value(value: str) -> bool:
    return any(c in value for c in " \t\r\n\"`")


def _serialize(path: str, main: Module | None, deps: list[Module],
               settings: list[tuple[str, str]]) -> str:
    out: list[str] = []
    if path:
        out.append(f"path\t{path}\n")

    def fmt_mod(word: str, m: Module) -> None:
        out.append(f"{word}\t{m.path}\t{m.version}")
        if m.replace is None:
            out.append(f"\t{m.sum}")
        else:
            out.append("\n")
            fmt_mod("=>", m.replace)
        out.append("\n")

    if main is not None and main != Module("", ""):
        fmt_mod("mod", main)
    for d in deps:
        fmt_mod("dep", d)
    for key, value in settings:
        k = go_quote(key) if _quote_key(key) else key
        v = go_quote(value) if _quote_value(value) else value
        out.append(f"build\t{k}={v}\n")
    return "".join(out)


def format_go_version_m(path: str, bi: BuildInfo) -> str:
    """Exactly what `go version -m PATH` prints to stdout for this binary."""
    head = f"{path}: {bi.go_version}\n"
    return head + "".join(line + "\n" for line in bi.lines)


# --- Go string literals (strconv.Quote / Unquote / QuotedPrefix) ---------------------------
_SIMPLE_ESCAPES: Final = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11,
                          "\\": 92, "\"": 34, "'": 39}
_QUOTE_ESCAPES: Final = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t",
                         11: "\\v"}


def go_quoted_prefix(s: str) -> str:
    """The Go string literal at the start of `s` (ValueError if there is none)."""
    if s.startswith("`"):
        end = s.find("`", 1)
        if end < 0:
            raise ValueError("invalid quoted key in build line")
        return s[:end + 1]
    i = 1
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "\n":
            break
        if c == "\"":
            lit = s[:i + 1]
            go_unquote(lit)  # validates
            return lit
        i += 1
    raise ValueError("invalid quoted key in build line")


def go_unquote(s: str) -> str:
    """strconv.Unquote for "..." and `...` literals (ValueError on bad syntax)."""
    if len(s) < 2 or s[0] != s[-1] or s[0] not in "`\"":
        raise ValueError("invalid quoted value in build line")
    body = s[1:-1]
    if s[0] == "`":
        if "`" in body:
            raise ValueError("invalid quoted value in build line")
        return body.replace("\r", "")
    raw = body.encode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == 0x22 or c == 0x0A:
            raise ValueError("invalid quoted value in build line")
        if c != 0x5C:
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(raw):
            raise ValueError("invalid quoted value in build line")
        e = chr(raw[i + 1])
        i += 2
        if e in _SIMPLE_ESCAPES and e != "'":
            out.append(_SIMPLE_ESCAPES[e])
        elif e in "01234567":
            digits = raw[i - 1:i + 2].decode("ascii", "replace")
            if len(digits) != 3 or any(d not in "01234567" for d in digits):
                raise ValueError("invalid quoted value in build line")
            v = int(digits, 8)
            if v > 255:
                raise ValueError("invalid quoted value in build line")
            out.append(v)
            i += 2
        elif e in "xuU":
            n = {"x": 2, "u": 4, "U": 8}[e]
            digits = raw[i:i + n].decode("ascii", "replace")
            if len(digits) != n or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise ValueError("invalid quoted value in build line")
            v = int(digits, 16)
            i += n
            if e == "x":
                out.append(v)
            else:
                if v > 0x10FFFF or 0xD800 <= v <= 0xDFFF:
                    raise ValueError("invalid quoted value in build line")
                out += chr(v).encode("utf-8")
        else:
            raise ValueError("invalid quoted value in build line")
    return out.decode("utf-8", "surrogateescape")


def go_quote(s: str) -> str:
    """strconv.Quote: a double-quoted Go literal, non-printable runes escaped."""
    out = ["\""]
    for ch in s:
        r = ord(ch)
        if 0xDC80 <= r <= 0xDCFF:  # an invalid UTF-8 byte kept by surrogateescape
            out.append(f"\\x{r - 0xDC00:02x}")
        elif ch in "\"\\":
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif r in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[r])
        elif r < 0x20 or r == 0x7F:
            out.append(f"\\x{r:02x}")
        elif r < 0x10000:
            out.append(f"\\u{r:04x}")
        else:
            out.append(f"\\U{r:08x}")
    out.append("\"")
    return "".join(out)
