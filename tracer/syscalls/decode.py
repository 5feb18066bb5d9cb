"""Decoders: flags, results, paths, socket addresses and argv, from raw syscall arguments.

Pure functions over ints and bytes, except the path resolvers, which read a `/proc` link
(cwd or a dirfd) only when the path is relative: chdir/fchdir are not watched, so the cwd is
never cached, it is read at the entry stop where it is needed.
"""

from __future__ import annotations

import errno as _errno
import ipaddress
import os
import struct
from collections.abc import Callable

AT_FDCWD = -100

_O_ACCMODE = {0: "O_RDONLY", 1: "O_WRONLY", 2: "O_RDWR", 3: "O_ACCMODE"}
# Order matters: composite flags (O_SYNC includes O_DSYNC, O_TMPFILE includes O_DIRECTORY)
# come first so their bits are consumed before the parts.
_O_FLAGS: tuple[tuple[str, int], ...] = (
    ("O_TMPFILE", 0o20200000),
    ("O_SYNC", 0o4010000),
    ("O_CREAT", 0o100),
    ("O_EXCL", 0o200),
    ("O_NOCTTY", 0o400),
    ("O_TRUNC", 0o1000),
    ("O_APPEND", 0o2000),
    ("O_NONBLOCK", 0o4000),
    ("O_DSYNC", 0o10000),
    ("O_ASYNC", 0o20000),
    ("O_DIRECT", 0o40000),
    ("O_LARGEFILE", 0o100000),
    ("O_DIRECTORY", 0o200000),
    ("O_NOFOLLOW", 0o400000),
    ("O_NOATIME", 0o1000000),
    ("O_CLOEXEC", 0o2000000),
    ("O_PATH", 0o10000000),
)
_AT_FLAGS: tuple[tuple[str, int], ...] = (
    ("AT_SYMLINK_NOFOLLOW", 0x100),
    ("AT_EACCESS", 0x200),
    ("AT_SYMLINK_FOLLOW", 0x400),
    ("AT_NO_AUTOMOUNT", 0x800),
    ("AT_EMPTY_PATH", 0x1000),
    ("AT_STATX_FORCE_SYNC", 0x2000),
    ("AT_STATX_DONT_SYNC", 0x4000),
    ("AT_RECURSIVE", 0x8000),
)
AT_EMPTY_PATH = 0x1000
_ACCESS = (("R_OK", 4), ("W_OK", 2), ("X_OK", 1))

_open_cache: dict[int, str] = {}
_at_cache: dict[int, str] = {}


def _bits(value: int, table: tuple[tuple[str, int], ...]) -> list[str]:
    names = []
    for name, bit in table:
        if value & bit == bit:
            names.append(name)
            value &= ~bit
    if value:
        names.append(hex(value))
    return names


def open_flags(flags: int) -> str:
    """O_RDONLY|O_CLOEXEC style names for an open(2) flags word (cached per value)."""
    s = _open_cache.get(flags)
    if s is None:
        flags &= 0xFFFFFFFF
        s = "|".join([_O_ACCMODE[flags & 3], *_bits(flags & ~3, _O_FLAGS)])
        if len(_open_cache) < 4096:
            _open_cache[flags] = s
    return s


def at_flags(flags: int) -> str | None:
    """AT_* names, or None for 0."""
    flags &= 0xFFFFFFFF
    if not flags:
        return None
    s = _at_cache.get(flags)
    if s is None:
        s = "|".join(_bits(flags, _AT_FLAGS))
        _at_cache[flags] = s
    return s


def access_mode(mode: int) -> str:
    mode &= 0xFFFFFFFF
    if mode == 0:
        return "F_OK"
    return "|".join(_bits(mode, _ACCESS))


_RESTART = {512: "ERESTARTSYS", 513: "ERESTARTNOINTR", 514: "ERESTARTNOHAND",
            516: "ERESTART_RESTARTBLOCK"}
RESTART_ERRNOS = frozenset(_RESTART)


def result_name(rval: int) -> str:
    """"ok" for a non-negative return, else the errno name (ENOENT, ...)."""
    if rval >= 0 or rval < -4095:
        return "ok"
    err = -rval
    return _errno.errorcode.get(err) or _RESTART.get(err) or f"E{err}"


def signed_int(value: int) -> int:
    """A 64-bit register value as the C int it holds (dirfd arguments)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def normalize_path(path: str) -> str:
    """One spelling per file: runs of slashes become one and `.` components go
    (`/usr/share/zoneinfo//Europe/Berlin`, `/etc/./passwd`), so a file is one dependency
    however the program spelled it. `..` stays (through a symlink it may lead elsewhere),
    and so does a trailing slash (it says: a directory)."""
    if "//" not in path and "/." not in path and not path.startswith("./"):
        return path
    parts = [p for p in path.split("/") if p not in ("", ".")]
    lead = "/" if path.startswith("/") else ""
    if not parts:
        return lead or path
    trail = "/" if path.endswith(("/", "/.")) else ""
    return lead + "/".join(parts) + trail


def join_path(base: str, rel: str) -> str:
    """`rel` resolved against directory `base`, textually (no symlink or .. folding)."""
    while rel.startswith("./"):
        rel = rel[2:]
    if rel in ("", "."):
        return base
    return base.rstrip("/") + "/" + rel if base != "/" else "/" + rel


def fd_path(pid: int, fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None


def cwd_path(tid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{tid}/cwd")
    except OSError:
        return None


def resolve_path(tid: int, dirfd: int, path: str,
                 host_to_tracee: Callable[[str], str] | None = None) -> str:
    """An absolute path for `path` as thread `tid` would resolve it.

    Absolute paths are returned as given. Relative ones are joined to the thread's cwd
    (dirfd == AT_FDCWD) or to the directory dirfd refers to. `host_to_tracee` maps a link
    read from the host's /proc back into the tracee's root (sandbox); when the base cannot
    be read the path comes back relative (the thread or fd is gone).
    """
    if path.startswith("/"):
        return path
    base = cwd_path(tid) if dirfd == AT_FDCWD else fd_path(tid, dirfd)
    if base is None or not base.startswith("/"):
        return path
    if host_to_tracee is not None:
        base = host_to_tracee(base)
    return join_path(base, path)


AF_UNSPEC, AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 0, 1, 2, 10, 16
_FAMILY_NAMES = {AF_UNSPEC: "AF_UNSPEC", AF_UNIX: "AF_UNIX", AF_INET: "AF_INET",
                 AF_INET6: "AF_INET6", AF_NETLINK: "AF_NETLINK"}


def sockaddr(raw: bytes) -> tuple[str, str] | None:
    """(family name, address) for a struct sockaddr; None if too short to have a family.

    AF_UNIX: the path, or "@name" for the abstract namespace; AF_INET "1.2.3.4:53";
    AF_INET6 "[::1]:53"; AF_NETLINK "netlink:pid=P,groups=G"; others "family N".
    """
    if len(raw) < 2:
        return None
    (family,) = struct.unpack_from("<H", raw, 0)
    name = _FAMILY_NAMES.get(family, f"AF_{family}")
    body = raw[2:]
    if family == AF_UNIX:
        if not body:
            return name, "(unnamed)"
        if body[0] == 0:
            return name, "@" + body[1:].rstrip(b"\0").decode("utf-8", "surrogateescape")
        return name, body.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    if family == AF_INET and len(raw) >= 8:
        port = struct.unpack_from(">H", raw, 2)[0]
        return name, f"{ipaddress.IPv4Address(raw[4:8])}:{port}"
    if family == AF_INET6 and len(raw) >= 24:
        port = struct.unpack_from(">H", raw, 2)[0]
        return name, f"[{ipaddress.IPv6Address(raw[8:24])}]:{port}"
    if family == AF_NETLINK and len(raw) >= 12:
        nl_pid, groups = struct.unpack_from("<II", raw, 4)
        return name, f"netlink:pid={nl_pid},groups={groups}"
    return name, f"family {family}"


def decode_text(raw: bytes) -> str:
    """Tracee bytes as str: non-UTF-8 bytes survive as surrogate escapes (round-trips)."""
    return raw.decode("utf-8", "surrogateescape")


def read_argv(read: Callable[[int, int], bytes], read_str: Callable[[int], bytes | None],
              addr: int, max_args: int = 32) -> tuple[str, ...] | None:
    """Up to `max_args` strings of a NULL-terminated char*[]; "..." marks truncation."""
    if addr == 0:
        return None
    table = read(addr, 8 * (max_args + 1))
    out: list[str] = []
    for i in range(len(table) // 8):
        (ptr,) = struct.unpack_from("<Q", table, 8 * i)
        if ptr == 0:
            return tuple(out)
        if i == max_args:
            out.append("...")
            return tuple(out)
        s = read_str(ptr)
        out.append("?" if s is None else decode_text(s))
    return tuple(out)
