"""A small on-disk cache of what `run` needs from static analysis, keyed by build id.

`run` needs two things from `tracer.binary.facts.inspect_binary` before the program starts: the
trace header's static summary and the loader closure the classifier seeds. Computing them
costs tens of milliseconds (ELF parse, pclntab names, loader search); a program traced
again is looked up here instead.

- Location: `$XDG_CACHE_HOME/cgotrace/facts/` (default `~/.cache/cgotrace/facts/`), one JSON
  file per binary. Clear it with `rm -rf ~/.cache/cgotrace` (or `$XDG_CACHE_HOME/cgotrace`);
  `CGOTRACE_NO_CACHE=1` turns it off.
- Key: the binary's GNU build id (else its Go build id, else its device, inode, size and
  mtime), its real path, the root it runs in, the size, mtime and inode of the root's files
  the facts come from (`ROOT_FILES`: ld.so.cache, nsswitch.conf, resolv.conf, ...), the
  same stamp of cgotrace's own fact-computing code and rules, plus FORMAT.
- Bound: at most MAX_BYTES in total; older entries are removed first (by mtime; a hit
  touches its file).
- Failures never surface: an unwritable or corrupt cache is the same as no cache.
- Also kept here, under the same bound: a Go image's runtime facts for the attributor
  (GoRuntime, keyed by build id and the code that reads them: `entry_key`, `code_stamp`).
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from pathlib import Path
from typing import Any

try:  # the builtin module hashlib wraps: importing hashlib loads OpenSSL (~3 ms a run)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - a Python built without it
    from hashlib import blake2b

# 2: `static` is the findings engine's header (tracer.binary.facts.static_header);
# 3: + main_module; 4: + go_build and cgo_links (the SBOM's)
FORMAT = 4
MAX_BYTES = 8 * 1024 * 1024
_PT_NOTE = 4
_NT_GNU_BUILD_ID = 3
_NT_GO_BUILD_ID = 4


def cache_dir() -> Path | None:
    """The facts directory, or None when caching is off."""
    from tracer.cachedir import small_caches_off, user_cache

    return None if small_caches_off() else user_cache() / "facts"


def build_id(path: str) -> str | None:
    """The GNU build id (hex) or Go build id of an x86-64/ELF64 file, from its PT_NOTE
    segments (a few hundred bytes read; None when there is none or the file is odd)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                return None
            phoff, = struct.unpack_from("<Q", head, 32)
            phentsize, phnum = struct.unpack_from("<HH", head, 54)
            if phentsize < 56 or phnum > 128:
                return None
            f.seek(phoff)
            table = f.read(phentsize * phnum)
            go_id = None
            for i in range(len(table) // phentsize):
                p_type, _, p_offset, _, _, p_filesz = struct.unpack_from(
                    "<IIQQQQ", table, i * phentsize)
                if p_type != _PT_NOTE or p_filesz > 65536:
                    continue
                f.seek(p_offset)
                found = _notes(f.read(p_filesz))
                if _NT_GNU_BUILD_ID in found:
                    return "gnu-" + found[_NT_GNU_BUILD_ID].hex()
                go_id = go_id or found.get(_NT_GO_BUILD_ID)
            return "go-" + go_id.rstrip(b"\0").decode("ascii", "replace") if go_id else None
    except (OSError, struct.error, ValueError):
        return None


def _notes(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        name_end = pos + 12 + ((namesz + 3) & ~3)
        desc_end = name_end + ((descsz + 3) & ~3)
        if desc_end > len(data):
            break
        name = data[pos + 12:pos + 12 + namesz].rstrip(b"\0")
        if (name, ntype) in ((b"GNU", _NT_GNU_BUILD_ID), (b"Go", _NT_GO_BUILD_ID)):
            out[ntype] = data[name_end:name_end + descsz]
        pos = desc_end
    return out


def cache_key(program: str, root: str | None, path_in_root: str | None) -> str | None:
    """The entry name for this binary in this root (None: do not cache)."""
    real = os.path.realpath(program)
    try:
        st = os.stat(real)
    except OSError:
        return None
    ident = build_id(real) or f"stat-{st.st_dev}-{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"
    base = root or "/"
    rootkey = _stamp(os.path.join(base, f) for f in ROOT_FILES)
    raw = "\0".join((str(FORMAT), ident, real, base, path_in_root or "", rootkey,
                     _code_stamp()))
    return blake2b(raw.encode(), digest_size=16).hexdigest()


# Files of the root the static facts are derived from: the loader's search (ld.so.cache,
# musl's path file) and the lookup configuration the header reports (nsswitch sources,
# resolver options). Any change to one of them is a different entry.
ROOT_FILES = ("etc/ld.so.cache", "etc/ld-musl-x86_64.path", "etc/nsswitch.conf",
              "etc/resolv.conf", "etc/host.conf")
# The code that computes the facts: an edited or reinstalled cgotrace never reads entries
# an older one wrote (FORMAT only covers deliberate format changes).
_CODE = Path(__file__).resolve().parents[1]
CODE_FILES = ("binary/facts.py", "binary/elf.py", "binary/loader.py", "binary/ldcache.py",
              "binary/nsswitch.py", "binary/rootpath.py", "binary/buildinfo.py",
              "binary/pclntab.py", "recording/classify.py")


def _stamp(paths: Any) -> str:
    out = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append(f"{st.st_size}-{st.st_mtime_ns}-{st.st_ino}")
        except OSError:
            out.append("-")
    return ",".join(out)


def _code_stamp() -> str:
    rules = sorted((_CODE.parent / "probes" / "rules").glob("*.toml"))
    return _stamp([*(_CODE / f for f in CODE_FILES), *rules])


def entry_key(*parts: str) -> str:
    """The entry name of another kind of entry kept here (the attributor's Go runtime facts:
    tracer/attribution/modules.py), from what identifies it; FORMAT included."""
    raw = "\0".join((str(FORMAT), *parts))
    return blake2b(raw.encode(), digest_size=16).hexdigest()


def code_stamp(files: tuple[str, ...]) -> str:
    """The size, mtime and inode of cgotrace's own `files` (paths under tracer/): part of
    the key of an entry those files compute, so an edited cgotrace never reads it."""
    return _stamp(_CODE / f for f in files)


def load(key: str) -> dict[str, Any] | None:
    d = cache_dir()
    if d is None:
        return None
    path = d / f"{key}.json"
    try:
        data = json.loads(path.read_text())
        os.utime(path)  # recently used: pruned last
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def store(key: str, data: dict[str, Any]) -> None:
    d = cache_dir()
    if d is None:
        return
    with contextlib.suppress(OSError, TypeError, ValueError):
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({**data, "format": FORMAT}))
        os.replace(tmp, d / f"{key}.json")
        _prune(d)


def _prune(d: Path, limit: int = MAX_BYTES) -> None:
    entries = []
    total = 0
    for p in d.glob("*.json"):
        with contextlib.suppress(OSError):
            st = p.stat()
            entries.append((st.st_mtime_ns, st.st_size, p))
            total += st.st_size
    for _, size, p in sorted(entries):
        if total <= limit:
            break
        with contextlib.suppress(OSError):
            p.unlink()
            total -= size
