"""glibc ld.so.cache parser: the host cache against `ldconfig -p` (oracle), fabricated
old/compat layouts, and garbage."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tracer.binary.ldcache import NEW_MAGIC, OLD_MAGIC, parse_ld_cache, read_ld_cache
from tracer.errors import BadBinaryError

HOST_CACHE = Path("/etc/ld.so.cache")
_LINE = re.compile(r"^\s+(\S+) \(([^)]*)\) => (\S+)$")


def _ldconfig_entries() -> list[tuple[str, str, str]]:
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines()[1:]:
        m = _LINE.match(line)
        if m:
            rows.append((m.group(1), m.group(2), m.group(3)))
    return rows


@pytest.mark.skipif(not HOST_CACHE.exists(), reason="no /etc/ld.so.cache on this host")
def test_host_cache_matches_ldconfig_p() -> None:
    cache = read_ld_cache(str(HOST_CACHE))
    assert cache is not None
    oracle = _ldconfig_entries()
    assert oracle, "ldconfig -p printed no entries"
    ours = [(e.soname, e.path) for e in cache.entries]
    assert sorted(ours) == sorted((name, path) for name, _, path in oracle)
    # ldconfig prints the flags as "libc6,x86-64" (plus ", hwcap: ..." for hwcap entries)
    flags = {(e.soname, e.path): e.describe_flags() for e in cache.entries}
    for name, text, path in oracle:
        assert text.split(", hwcap")[0] == flags[(name, path)], (name, text)


@pytest.mark.skipif(not HOST_CACHE.exists(), reason="no /etc/ld.so.cache on this host")
def test_host_cache_lookup_libc() -> None:
    cache = read_ld_cache(str(HOST_CACHE))
    assert cache is not None
    path = cache.lookup("libc.so.6")
    assert path is not None and path.endswith("/libc.so.6")
    assert cache.lookup("libdoes-not-exist.so.9") is None


def _new_format(entries: list[tuple[str, str, int]]) -> bytes:
    header_size, entry_size = 48, 24
    strings = b""
    offsets = []
    base = header_size + entry_size * len(entries)
    for key, value, _ in entries:
        k = base + len(strings)
        strings += key.encode() + b"\0"
        v = base + len(strings)
        strings += value.encode() + b"\0"
        offsets.append((k, v))
    out = NEW_MAGIC + struct.pack("<IIB3xI12x", len(entries), len(strings), 2, 0)
    assert len(out) == header_size
    for (k, v), (_, _, flags) in zip(offsets, entries, strict=True):
        out += struct.pack("<iIIIQ", flags, k, v, 0, 0)
    return out + strings


def test_new_format_fabricated() -> None:
    data = _new_format([("libfoo.so.1", "/opt/x/libfoo.so.1", 0x303),
                        ("libfoo.so.1", "/opt/i386/libfoo.so.1", 0x3)])
    cache = parse_ld_cache(data)
    assert cache.format == "new"
    assert [e.describe_flags() for e in cache.entries] == ["libc6,x86-64", "libc6"]
    assert cache.lookup("libfoo.so.1") == "/opt/x/libfoo.so.1"


def _old_entries(entries: list[tuple[str, str]]) -> tuple[bytes, bytes]:
    strings = b""
    table = b""
    for key, value in entries:
        k = len(strings)
        strings += key.encode() + b"\0"
        v = len(strings)
        strings += value.encode() + b"\0"
        table += struct.pack("<iII", 0x303, k, v)
    head = OLD_MAGIC + b"\0" + struct.pack("<I", len(entries))
    return head + table, strings


def test_old_format_fabricated() -> None:
    head, strings = _old_entries([("libold.so.2", "/lib/libold.so.2")])
    cache = parse_ld_cache(head + strings)
    assert cache.format == "old"
    assert cache.lookup("libold.so.2") == "/lib/libold.so.2"


def test_compat_layout_prefers_new_table() -> None:
    head, _ = _old_entries([("libold.so.2", "/lib/libold.so.2")])
    pad = b"\0" * (-len(head) % 8)
    cache = parse_ld_cache(head + pad + _new_format([("libnew.so.3", "/usr/lib/libnew.so.3",
                                                      0x303)]))
    assert cache.format == "compat"
    assert cache.lookup("libnew.so.3") == "/usr/lib/libnew.so.3"


@pytest.mark.parametrize("data", [b"", b"not a cache at all", NEW_MAGIC + b"\xff" * 8,
                                  NEW_MAGIC + struct.pack("<IIB3xI12x", 1000, 0, 2, 0)])
def test_garbage_is_bad_binary(data: bytes) -> None:
    with pytest.raises(BadBinaryError):
        parse_ld_cache(data)


def test_missing_cache_is_none(tmp_path: Path) -> None:
    assert read_ld_cache(str(tmp_path / "ld.so.cache")) is None
