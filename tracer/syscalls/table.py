"""The watched syscalls: numbers per ABI, and which argument holds what.

The x86_64 numbers of the watched calls are written here (importing python-ptrace's
syscall package costs ~90 ms of start-up); tests/unit/test_syscall_decode.py checks them
against python-ptrace's x86_64 table, restricted to nr < 512 (that table also lists the x32
variants, execve is 520 there, under the same names), which `X86_64_NUMBERS` and
`x86_64_name` still read, lazily, for other calls. The i386 numbers of the
watched calls are listed here because python-ptrace's i386 table lacks several of them
(connect, execveat, statx, openat2, faccessat2); they matter only for int 0x80 calls from a
64-bit process, which the filter traces instead of letting them slip through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
X32_SYSCALL_BIT = 0x40000000

# class: what the call means for a dependency report.
OPEN, EXEC, CONNECT, PROBE = "open", "exec", "connect", "probe"


@dataclass(frozen=True, slots=True)
class SyscallSpec:
    """How to read one watched syscall's arguments.

    `path` and `dirfd` are argument indexes (None: not present); `flags` names the
    argument holding flags and `flag_kind` how to name them ("open", "at", "access",
    "openhow": a struct open_how pointer).
    """

    name: str
    cls: str
    path: int | None = None
    dirfd: int | None = None
    flags: int | None = None
    flag_kind: str | None = None
    argv: int | None = None


WATCHED: tuple[SyscallSpec, ...] = (
    SyscallSpec("open", OPEN, path=0, flags=1, flag_kind="open"),
    SyscallSpec("openat", OPEN, path=1, dirfd=0, flags=2, flag_kind="open"),
    SyscallSpec("openat2", OPEN, path=1, dirfd=0, flags=2, flag_kind="openhow"),
    SyscallSpec("creat", OPEN, path=0),
    SyscallSpec("execve", EXEC, path=0, argv=1),
    SyscallSpec("execveat", EXEC, path=1, dirfd=0, flags=4, flag_kind="at", argv=2),
    SyscallSpec("connect", CONNECT),
    SyscallSpec("stat", PROBE, path=0),
    SyscallSpec("lstat", PROBE, path=0),
    SyscallSpec("newfstatat", PROBE, path=1, dirfd=0, flags=3, flag_kind="at"),
    SyscallSpec("statx", PROBE, path=1, dirfd=0, flags=2, flag_kind="at"),
    SyscallSpec("access", PROBE, path=0, flags=1, flag_kind="access"),
    SyscallSpec("faccessat", PROBE, path=1, dirfd=0, flags=2, flag_kind="access"),
    SyscallSpec("faccessat2", PROBE, path=1, dirfd=0, flags=2, flag_kind="access"),
    SyscallSpec("readlink", PROBE, path=0),
    SyscallSpec("readlinkat", PROBE, path=1, dirfd=0),
)
WATCHED_NAMES = frozenset(s.name for s in WATCHED)

# i386 (compat) numbers, from asm/unistd_32.h; stat64/lstat64/fstatat64 are the 32-bit
# spellings of the stat family, socketcall multiplexes connect.
_I386_NUMBERS = {
    "open": 5, "openat": 295, "openat2": 437, "creat": 8, "execve": 11, "execveat": 358,
    "connect": 362, "stat": 106, "lstat": 107, "stat64": 195, "lstat64": 196,
    "fstatat64": 300, "statx": 383, "access": 33, "faccessat": 307, "faccessat2": 439,
    "readlink": 85, "readlinkat": 305,
}
_I386_ALIASES = {"stat64": "stat", "lstat64": "lstat", "fstatat64": "newfstatat"}

# asm/unistd_64.h
WATCHED_X86_64: dict[str, int] = {
    "open": 2, "openat": 257, "openat2": 437, "creat": 85, "execve": 59, "execveat": 322,
    "connect": 42, "stat": 4, "lstat": 6, "newfstatat": 262, "statx": 332, "access": 21,
    "faccessat": 269, "faccessat2": 439, "readlink": 89, "readlinkat": 267,
}


def _all_x86_64_names() -> dict[int, str]:
    from ptrace.syscall.linux.x86_64 import SYSCALL_NAMES

    return {nr: name for nr, name in SYSCALL_NAMES.items() if nr < 512}


def __getattr__(name: str) -> Any:
    if name == "X86_64_NUMBERS":  # every x86_64 call by name (python-ptrace, lazily)
        numbers = {n: nr for nr, n in _all_x86_64_names().items()}
        globals()["X86_64_NUMBERS"] = numbers
        return numbers
    raise AttributeError(name)


def _by_name() -> dict[str, SyscallSpec]:
    return {s.name: s for s in WATCHED}


def x86_64_table() -> dict[int, SyscallSpec]:
    """nr -> spec for the native ABI."""
    return {WATCHED_X86_64[s.name]: s for s in WATCHED}


def i386_table() -> dict[int, SyscallSpec]:
    """nr -> spec for int 0x80 calls (arguments are 32-bit, zero-extended by the kernel)."""
    specs = _by_name()
    out: dict[int, SyscallSpec] = {}
    for name, nr in _I386_NUMBERS.items():
        spec = specs[_I386_ALIASES.get(name, name)]
        out[nr] = SyscallSpec(name, spec.cls, spec.path, spec.dirfd, spec.flags,
                              spec.flag_kind, spec.argv)
    return out


def x86_64_name(nr: int) -> str:
    return _all_x86_64_names().get(nr, f"syscall_{nr}") if nr < 512 else f"syscall_{nr}"
