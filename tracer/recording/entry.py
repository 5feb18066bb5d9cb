"""Turn a seccomp stop (nr + args) into an `AccessDraft`: the access before its result.

`EntryDecoder.decode(view, nr, arch, args, ip, sp, now)` is called by the collector once
per watched entry; memory comes from the engine's `ThreadView` (tracer/engine/base.py),
at most one read per string (plus one for connect's sockaddr, argv's table and openat2's
struct), and one /proc readlink only for relative paths.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tracer.syscalls import decode
from tracer.syscalls.table import (
    AUDIT_ARCH_X86_64,
    CONNECT,
    EXEC,
    SyscallSpec,
    i386_table,
    x86_64_table,
)

if TYPE_CHECKING:
    from tracer.engine.base import ThreadView


@dataclass(slots=True)
class AccessDraft:
    """A watched call at its entry stop. Filled in further at the exit stop by the loop."""

    pid: int
    tid: int
    nr: int
    syscall: str
    cls: str  # open, exec, connect, probe
    path: str
    flags: str | None
    args: tuple[int, ...]
    ip: int
    sp: int
    time: float
    argv: tuple[str, ...] | None = None
    family: str | None = None
    kind: object = None  # AccessKind, set by the classifier at entry
    attribution: object = None  # Attribution | None, from the attributor
    loader_phase: bool = False  # made by the interpreter before the entry point ran
    flag_arg: int | None = None  # index of the raw open flags in args (open/openat)
    observed: bool = True  # False: let run without a stop, its result not seen


class EntryDecoder:
    """Decoders for the watched syscalls, keyed by number per ABI."""

    def __init__(self, host_to_tracee: Callable[[str], str] | None = None,
                 argv_limit: int = 32, path_limit: int = 4096):
        self._native = x86_64_table()
        self._compat = i386_table()
        self._map = host_to_tracee
        self._argv_limit = argv_limit
        self._path_limit = path_limit

    def spec(self, nr: int, arch: int) -> SyscallSpec | None:
        return (self._native if arch == AUDIT_ARCH_X86_64 else self._compat).get(nr)

    def decode(self, view: ThreadView, nr: int, arch: int, args: tuple[int, ...], ip: int,
               sp: int, now: float) -> AccessDraft | None:
        """The draft for this call, or None when it is not worth a record (unwatched nr under
        a foreign ABI, fstat-style AT_EMPTY_PATH calls, connect(AF_UNSPEC))."""
        spec = (self._native if arch == AUDIT_ARCH_X86_64 else self._compat).get(nr)
        if spec is None:
            return None
        tid = view.tid
        read = view.read
        flags: str | None = None
        family: str | None = None
        argv: tuple[str, ...] | None = None
        if spec.cls == CONNECT:
            raw = read(args[1], min(args[2] & 0xFFFFFFFF, 128))
            addr = decode.sockaddr(raw)
            if addr is None or addr[0] == "AF_UNSPEC":
                return None
            family, path = addr
            if path.startswith("/"):  # an AF_UNIX socket file
                path = decode.normalize_path(path)
        else:
            at = 0
            if spec.flag_kind is not None and spec.flags is not None:
                value = args[spec.flags]
                if spec.flag_kind == "open":
                    flags = decode.open_flags(value)
                elif spec.flag_kind == "at":
                    at = value
                    flags = decode.at_flags(value)
                elif spec.flag_kind == "access":
                    flags = decode.access_mode(value)
                    if spec.name == "faccessat2" and args[3]:
                        at = args[3]
                        flags += "," + (decode.at_flags(args[3]) or "")
                elif spec.flag_kind == "openhow":
                    how = read(value, 8)
                    if len(how) == 8:
                        flags = decode.open_flags(struct.unpack("<Q", how)[0])
            elif spec.name == "creat":
                flags = "O_WRONLY|O_CREAT|O_TRUNC"
            raw_path = view.read_cstring(args[spec.path or 0], self._path_limit)
            if raw_path is None:
                path = "(unreadable)"
            else:
                path = decode.decode_text(raw_path)
                dirfd = decode.signed_int(args[spec.dirfd]) if spec.dirfd is not None \
                    else decode.AT_FDCWD
                if not path:
                    if not at & decode.AT_EMPTY_PATH:
                        path = "(empty)"
                    elif spec.cls != EXEC:
                        return None  # fstat(fd) spelled newfstatat(fd, "", AT_EMPTY_PATH)
                    else:
                        path = decode.fd_path(tid, dirfd) or f"(fd {dirfd})"
                elif path[0] != "/":
                    path = decode.resolve_path(tid, dirfd, path, self._map)
                path = decode.normalize_path(path)
            if spec.argv is not None:
                argv = decode.read_argv(read, lambda a: view.read_cstring(a, 1024),
                                        args[spec.argv], self._argv_limit)
        return AccessDraft(view.pid, tid, nr, spec.name, spec.cls, path, flags, args, ip, sp,
                           now, argv, family,
                           flag_arg=spec.flags if spec.flag_kind == "open" else None)
