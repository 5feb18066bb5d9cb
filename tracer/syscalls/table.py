"""The watched syscalls: numbers per ABI, and which argument holds what.

Numbers come from python-ptrace's x86_64 table, restricted to nr < 512: that table also
lists the x32 variants (execve is 520 there) under the same names. The i386 numbers of the
watched calls are listed here because python-ptrace's i386 table lacks several of them
(connect, execveat, statx, openat2, faccessat2); they matter only for int 0x80 calls from a
64-bit process, which the filter traces instead of letting them slip through.
"""

from __future__ import annotations

from dataclasses import dataclass

from ptrace.syscall.linux.x86_64 import SYSCALL_NAMES as _X86_64_NAMES

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

X86_64_NUMBERS: dict[str, int] = {name: nr for nr, name in _X86_64_NAMES.items() if nr < 512}


def _by_name() -> dict[str, SyscallSpec]:
    return {s.name: s for s in WATCHED}


def x86_64_table() -> dict[int, SyscallSpec]:
    """nr -> spec for the native ABI."""
    return {X86_64_NUMBERS[s.name]: s for s in WATCHED}


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
    return _X86_64_NAMES.get(nr, f"syscall_{nr}") if nr < 512 else f"syscall_{nr}"
