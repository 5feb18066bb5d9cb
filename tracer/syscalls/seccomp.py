"""The seccomp-BPF filter: SECCOMP_RET_TRACE for the watched syscalls, ALLOW for the rest.

Layout (classic BPF over struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6]}):

    ld  [4]                      arch
    jeq AUDIT_ARCH_X86_64, +1    else -> TRACE
    ret TRACE
    ld  [0]                      nr
    jge X32_SYSCALL_BIT          -> TRACE  (x32 ABI calls)
    jeq nr_1 -> TRACE ... jeq nr_n -> TRACE
    ret ALLOW
    ret TRACE

A foreign arch (i386 via int 0x80) or the x32 ABI is *traced*, not killed and not
allowed: a 64-bit Go program never makes such calls, so tracing all of them costs nothing
in practice, while allowing them would let a watched call slip through unseen and killing
would change the program's behaviour. The loop decodes the watched ones with the i386
table and resumes the rest.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Iterable

from tracer.syscalls.table import AUDIT_ARCH_X86_64, X32_SYSCALL_BIT

BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_JGE_K = 0x35
BPF_RET_K = 0x06

SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_TRACE = 0x7FF00000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_DATA_NR = 0
SECCOMP_DATA_ARCH = 4

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

Insn = tuple[int, int, int, int]  # (code, jt, jf, k)


def build_filter(numbers: Iterable[int], action: int = SECCOMP_RET_TRACE) -> list[Insn]:
    """The instructions for a filter tracing `numbers` (x86_64 syscall numbers).

    `action` is what a watched native call returns: RET_TRACE (ptrace engine) or
    RET_USER_NOTIF (notify engine). Foreign-ABI calls are always RET_TRACE."""
    nrs = sorted(set(numbers))
    if len(nrs) > 250:  # jump offsets are 8-bit
        raise ValueError("too many watched syscalls for one filter block")
    prog: list[Insn] = [
        (BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH),
        (BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        (BPF_RET_K, 0, 0, SECCOMP_RET_TRACE),
        (BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_NR),
    ]
    # After the jge and the n jeqs come `ret ALLOW` then `ret TRACE`; offsets count from
    # the next instruction.
    n = len(nrs)
    prog.append((BPF_JGE_K, n + 1, 0, X32_SYSCALL_BIT))
    for i, nr in enumerate(nrs):
        prog.append((BPF_JEQ_K, n - i, 0, nr))
    prog.append((BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    prog.append((BPF_RET_K, 0, 0, action))
    if action != SECCOMP_RET_TRACE:  # the x32 jump lands on `ret action`: route it apart
        prog[4] = (BPF_JGE_K, n + 2, 0, X32_SYSCALL_BIT)
        prog.append((BPF_RET_K, 0, 0, SECCOMP_RET_TRACE))
    return prog


def evaluate(prog: list[Insn], nr: int, arch: int = AUDIT_ARCH_X86_64) -> int:
    """Run the filter in Python (for tests): the SECCOMP_RET_* value for (nr, arch)."""
    data = struct.pack("<iI", nr & 0xFFFFFFFF if nr < 0 else nr, arch) + bytes(56)
    acc = 0
    pc = 0
    while True:
        code, jt, jf, k = prog[pc]
        pc += 1
        if code == BPF_LD_W_ABS:
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == BPF_JEQ_K:
            pc += jt if acc == k else jf
        elif code == BPF_JGE_K:
            pc += jt if acc >= k else jf
        elif code == BPF_RET_K:
            return k
        else:
            raise ValueError(f"unknown BPF opcode {code:#x}")


def encode(prog: list[Insn]) -> bytes:
    """struct sock_filter[] as the kernel expects it."""
    return b"".join(struct.pack("<HBBI", *insn) for insn in prog)


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


SYS_SECCOMP = 317
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_NOTIF_SIZES = 3
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5


def install_listener(prog: list[Insn], wait_killable: bool = False) -> int:
    """NO_NEW_PRIVS, then seccomp(SET_MODE_FILTER, NEW_LISTENER): the listener fd.
    `wait_killable` adds SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (kernel 6.0+): once the
    tracer has received a notification, only a fatal signal ends the thread's wait for the
    reply (the notify engine's one-stop upgrade relies on it, docs/engines.md).

    Raises OSError (EBUSY when a filter with a listener is already installed, EINVAL on
    kernels without user notification or without the flag). Makes no watched syscall."""
    libc = ctypes.CDLL(None, use_errno=True)
    raw = ctypes.create_string_buffer(encode(prog))
    fprog = _SockFprog(len(prog), ctypes.addressof(raw))
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "prctl(PR_SET_NO_NEW_PRIVS)")
    flags = SECCOMP_FILTER_FLAG_NEW_LISTENER
    if wait_killable:
        flags |= SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
    fd = int(libc.syscall(SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(fprog)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, "seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER)")
    return fd


def install(prog: list[Insn]) -> None:
    """PR_SET_NO_NEW_PRIVS then PR_SET_SECCOMP in the calling process (the forked child).

    Raises OSError. Makes no watched syscall, so it is safe right before the handshake.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    raw = ctypes.create_string_buffer(encode(prog))
    fprog = _SockFprog(len(prog), ctypes.addressof(raw))
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "prctl(PR_SET_SECCOMP)")
