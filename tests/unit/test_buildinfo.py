""".go.buildinfo from hand-made ELF images (both formats, found by scan) and the Go string
quoting that `go version -m` output depends on. Real binaries: tests/integration."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracer.binary.buildinfo import (
    MAGIC,
    Module,
    format_go_version_m,
    go_quote,
    go_unquote,
    parse_modinfo,
    read_buildinfo,
)
from tracer.binary.elf import ElfImage
from tracer.errors import BadBinaryError

START = bytes.fromhex("3077af0c9274080241e1c107e6d618e6")
END = bytes.fromhex("f932433186182072008242104116d8f2")
MODINFO = (
    "path\tcorp.cgotrace.test/app\n"
    "mod\tcorp.cgotrace.test/app\t(devel)\t\n"
    "dep\tgolang.org/x/sys\tv0.1.0\th1:abc=\n"
    "dep\tcorp.cgotrace.test/old\tv1.0.0\n"
    "=>\t../local\t(devel)\t\n"
    "build\t-buildmode=exe\n"
    "build\t-ldflags=\"-s -w\"\n"
    "build\tCGO_ENABLED=1\n"
    "build\t\"we ird\"=`raw value`\n"
    "build\tDefaultGODEBUG=netdns=go\n"
)
VADDR = 0x400000


def elf_with_data(blob: bytes) -> bytes:
    """ELF64 x86-64 ET_EXEC, no section headers, one RW PT_LOAD holding the whole file."""
    ehdr = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + b"\0" * 9, 2, 62, 1,
                       VADDR, 64, 0, 0, 64, 56, 1, 64, 0, 0)
    size = 64 + 56 + len(blob)
    phdr = struct.pack("<IIQQQQQQ", 1, 6, 0, VADDR, VADDR, size, size, 0x1000)
    return ehdr + phdr + blob


def pad_to(buf: bytearray, align: int) -> None:
    buf += b"\0" * (-(64 + 56 + len(buf)) % align)


def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def test_inline_format_found_by_scan() -> None:
    mod = (START + MODINFO.encode() + END)
    blob = bytearray(b"junk" * 5)
    pad_to(blob, 16)
    blob += MAGIC + bytes([8, 0x2]) + b"\0" * 16
    blob += uvarint(len(b"go1.27.3")) + b"go1.27.3" + uvarint(len(mod)) + mod
    bi = read_buildinfo(ElfImage(elf_with_data(bytes(blob))))
    assert bi is not None and bi.error is None
    assert bi.go_version == "go1.27.3" and bi.path == "corp.cgotrace.test/app"
    assert bi.main == Module("corp.cgotrace.test/app", "(devel)", "")
    assert bi.deps[0] == Module("golang.org/x/sys", "v0.1.0", "h1:abc=")
    assert bi.deps[1].replace == Module("../local", "(devel)", "")
    assert bi.settings["-ldflags"] == "-s -w"
    assert bi.settings["we ird"] == "raw value"
    assert bi.settings["DefaultGODEBUG"] == "netdns=go"
    out = format_go_version_m("app", bi)
    assert out.splitlines()[0] == "app: go1.27.3"
    # re-serialized the way runtime/debug does: the raw `...` becomes "..."
    assert "\tbuild\t\"we ird\"=\"raw value\"" in out.splitlines()
    assert "\tbuild\t-ldflags=\"-s -w\"" in out.splitlines()
    assert "\tdep\tcorp.cgotrace.test/old\tv1.0.0" in out.splitlines()
    assert "\t=>\t../local\t(devel)\t" in out.splitlines()
    assert out == "app: go1.27.3\n" + "".join(line + "\n" for line in bi.lines)


def test_pointer_format_pre_1_18() -> None:
    """Before 1.18: two pointers to Go string headers {ptr, len}, all link-time addresses."""
    mod = START + MODINFO.encode() + END
    blob = bytearray()
    pad_to(blob, 16)
    hdr_at = len(blob)
    blob += MAGIC + bytes([8, 0]) + b"\0" * 16  # pointers patched below
    base = VADDR + 64 + 56

    def put_string(data: bytes) -> int:
        pad_to(blob, 8)
        data_addr = base + len(blob)
        blob.extend(data)
        pad_to(blob, 8)
        header_addr = base + len(blob)
        blob.extend(struct.pack("<QQ", data_addr, len(data)))
        return header_addr

    vers, modp = put_string(b"go1.16.15"), put_string(mod)
    struct.pack_into("<QQ", blob, hdr_at + 16, vers, modp)
    bi = read_buildinfo(ElfImage(elf_with_data(bytes(blob))))
    assert bi is not None and bi.go_version == "go1.16.15"
    assert bi.path == "corp.cgotrace.test/app" and len(bi.deps) == 2


def test_no_buildinfo_and_corrupt_lengths() -> None:
    assert read_buildinfo(ElfImage(elf_with_data(b"\0" * 64))) is None
    blob = bytearray()
    pad_to(blob, 16)
    blob += MAGIC + bytes([8, 0x2]) + b"\0" * 16 + uvarint(1 << 30) + b"go"
    with pytest.raises(BadBinaryError):
        read_buildinfo(ElfImage(elf_with_data(bytes(blob))))


def test_modinfo_without_sentinels_has_no_module_lines() -> None:
    bi = parse_modinfo("go1.21.13", "")
    assert bi.lines == () and format_go_version_m("x", bi) == "x: go1.21.13\n"


def test_unparsable_modinfo_is_reported_not_raised() -> None:
    bi = parse_modinfo("go1.27.3", "mod\tonly-one-column\n")
    assert bi.error is not None and "2 or 3 columns" in bi.error
    assert parse_modinfo("go1.27.3", "build\tkey=has space\n").error is not None
    assert parse_modinfo("go1.27.3", "=>\ta\tb\tc\n").error is not None


def test_unterminated_last_line_is_ignored_like_go() -> None:
    bi = parse_modinfo("go1.27.3", "path\tp\nbuild\tA=1")
    assert bi.path == "p" and bi.settings == {}


@pytest.mark.parametrize(("literal", "value"), [
    ('"-s -w"', "-s -w"),
    ('"a\\tb\\n\\"q\\"\\\\"', 'a\tb\n"q"\\'),
    ('"\\x41\\101\\u00e9\\U0001F600"', "AAé😀"),
    ("`raw \\n`", "raw \\n"),
    ("`a\rb`", "ab"),
])
def test_go_unquote(literal: str, value: str) -> None:
    assert go_unquote(literal) == value


@pytest.mark.parametrize("bad", ['"open', '"bad \\q"', '"\\400"', '"\\ud800"', "`a`b`",
                                 '"new\nline"', '"'])
def test_go_unquote_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        go_unquote(bad)


@pytest.mark.parametrize(("value", "quoted"), [
    ("-s -w", '"-s -w"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("tab\there", '"tab\\there"'),
    ("\x01\x7f", '"\\x01\\x7f"'),
    ("é\u00a0", '"é\\u00a0"'),
    ("\U000e0001", '"\\U000e0001"'),
])
def test_go_quote(value: str, quoted: str) -> None:
    assert go_quote(value) == quoted
    assert go_unquote(go_quote(value)) == value


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["path\t", "mod\t", "dep\t", "=>\t", "build\t", "\t", "=", "\"",
                                 "`", "\\", "\n", "x", " ", "\\x4", "é"]), max_size=40))
def test_parse_modinfo_never_raises(parts: list[str]) -> None:
    bi = parse_modinfo("go1.27.3", "".join(parts))
    assert bi.error is not None or format_go_version_m("f", bi).startswith("f: go1.27.3\n")
    if bi.error is None:
        # what we print parses back to the same settings (Go's round trip)
        again = parse_modinfo("go1.27.3", "".join(line[1:] + "\n" for line in bi.lines))
        assert again.setting_list == bi.setting_list and again.lines == bi.lines
