"""Raw ptrace requests: a ctypes binding to libc's ptrace(2), typed and errno-carrying.

The hot loop calls `cont`, `syscall` and `syscall_info` tens of thousands of times per
second, so each is one foreign call with preallocated buffers and no keyword handling.
"""

from __future__ import annotations

import ctypes
import struct
from typing import Any, NamedTuple


class _Regs(ctypes.Structure):
    """struct user_regs_struct (x86-64, <sys/user.h>), the layout PTRACE_GETREGS fills.

    Defined here rather than taken from python-ptrace: importing its binding runs
    ctypes.util.find_library (a subprocess), tens of milliseconds of every `run`."""

    _fields_ = [(name, ctypes.c_ulong) for name in (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
        "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base",
        "gs_base", "ds", "es", "fs", "gs")]


class _SigFault(ctypes.Structure):
    _fields_ = (("_addr", ctypes.c_void_p),)


class _Siginfo(ctypes.Structure):
    """siginfo_t (128 bytes): the header and, for fault signals, si_addr at offset 16."""

    _fields_ = (("si_signo", ctypes.c_int), ("si_errno", ctypes.c_int),
                ("si_code", ctypes.c_int), ("_pad0", ctypes.c_int),
                ("_sigfault", _SigFault), ("_rest", ctypes.c_byte * 104))

# Requests python-ptrace lacks (linux/ptrace.h).
PTRACE_PEEKUSER = 3
PTRACE_CONT = 7
PTRACE_DETACH = 17
PTRACE_GETREGS = 12
PTRACE_SYSCALL = 24
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETEVENTMSG = 0x4201
PTRACE_GETSIGINFO = 0x4202
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208
PTRACE_GET_SYSCALL_INFO = 0x420E

O_TRACESYSGOOD = 0x1
O_TRACEFORK = 0x2
O_TRACEVFORK = 0x4
O_TRACECLONE = 0x8
O_TRACEEXEC = 0x10
O_TRACEVFORKDONE = 0x20
O_TRACEEXIT = 0x40
O_TRACESECCOMP = 0x80
O_EXITKILL = 0x100000

# What a launched program is seized with (docs/ptrace-facts.md, "Launching"). EXITKILL is
# not optional: a RET_TRACE filter outlives its tracer and would turn every watched call into
# ENOSYS.
LAUNCH_OPTIONS = (O_TRACESECCOMP | O_TRACECLONE | O_TRACEFORK | O_TRACEVFORK | O_TRACEEXEC
                  | O_TRACESYSGOOD | O_EXITKILL)

EVENT_FORK = 1
EVENT_VFORK = 2
EVENT_CLONE = 3
EVENT_EXEC = 4
EVENT_VFORK_DONE = 5
EVENT_EXIT = 6
EVENT_SECCOMP = 7
EVENT_STOP = 128

SYSCALL_INFO_NONE = 0
SYSCALL_INFO_ENTRY = 1
SYSCALL_INFO_EXIT = 2
SYSCALL_INFO_SECCOMP = 3

_libc = ctypes.CDLL(None, use_errno=True)
_ptrace = _libc.ptrace
_ptrace.restype = ctypes.c_long
_ptrace.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_get_errno = ctypes.get_errno
# The bare foreign function, for the attach engine's per-stop path where a Python wrapper
# per request shows in the profile: raw_ptrace(request, tid, addr, data) -> -1 on failure.
# It holds the GIL across the call (PyDLL): these requests never block, and handing the
# GIL over twice per request costs more than the request.
raw_ptrace = ctypes.PyDLL(None, use_errno=True).ptrace
raw_ptrace.restype = ctypes.c_long
raw_ptrace.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


class PtraceRequestError(OSError):
    """A ptrace request failed; `errno` says why (ESRCH: the thread is gone)."""

    def __init__(self, errno: int, request: int, tid: int):
        super().__init__(errno, f"ptrace(0x{request:x}, {tid}): {_strerror(errno)}")
        self.request = request
        self.tid = tid


def _strerror(errno: int) -> str:
    import os

    return os.strerror(errno)


def _fail(request: int, tid: int) -> PtraceRequestError:
    return PtraceRequestError(_get_errno(), request, tid)


def seize(tid: int, options: int) -> None:
    if _ptrace(PTRACE_SEIZE, tid, None, options) == -1:
        raise _fail(PTRACE_SEIZE, tid)


def cont(tid: int, sig: int = 0) -> None:
    """PTRACE_CONT, delivering `sig` (0: none)."""
    if _ptrace(PTRACE_CONT, tid, None, sig) == -1:
        raise _fail(PTRACE_CONT, tid)


def syscall(tid: int, sig: int = 0) -> None:
    """PTRACE_SYSCALL: resume and stop again at the next syscall entry or exit."""
    if _ptrace(PTRACE_SYSCALL, tid, None, sig) == -1:
        raise _fail(PTRACE_SYSCALL, tid)


ORIG_RAX = 15 * 8  # offset of orig_rax in struct user_regs_struct (x86-64)


def syscall_nr(tid: int) -> int:
    """The syscall number at a syscall stop: orig_rax through PTRACE_PEEKUSER, one request
    with no buffer to decode (the attach engine's per-stop filter). -1 when the request
    fails (the thread is gone) or for syscall(-1). Says nothing about the ABI or whether
    the stop is an entry or an exit; `syscall_info` does."""
    nr: int = _ptrace(PTRACE_PEEKUSER, tid, ORIG_RAX, None)
    return nr


def detach(tid: int, sig: int = 0) -> None:
    """PTRACE_DETACH from a ptrace-stop, delivering `sig` (0: none) as the thread resumes."""
    if _ptrace(PTRACE_DETACH, tid, None, sig) == -1:
        raise _fail(PTRACE_DETACH, tid)


def listen(tid: int) -> None:
    """PTRACE_LISTEN: leave a group-stopped tracee stopped, but let SIGCONT wake it."""
    if _ptrace(PTRACE_LISTEN, tid, None, None) == -1:
        raise _fail(PTRACE_LISTEN, tid)


def interrupt(tid: int) -> None:
    if _ptrace(PTRACE_INTERRUPT, tid, None, None) == -1:
        raise _fail(PTRACE_INTERRUPT, tid)


_eventmsg = ctypes.c_ulong()
_eventmsg_ref = ctypes.byref(_eventmsg)


def get_eventmsg(tid: int) -> int:
    """PTRACE_GETEVENTMSG: the new tid at clone/fork events, the former tid at exec."""
    if _ptrace(PTRACE_GETEVENTMSG, tid, None, _eventmsg_ref) == -1:
        raise _fail(PTRACE_GETEVENTMSG, tid)
    return _eventmsg.value


def get_regs(tid: int) -> Any:
    """The thread's registers as a `user_regs_struct` (rip, rsp, rbp, fs_base...).

    The thread must be in a ptrace-stop of this tracer.
    """
    regs = _Regs()
    if _ptrace(PTRACE_GETREGS, tid, None, ctypes.addressof(regs)) == -1:
        raise _fail(PTRACE_GETREGS, tid)
    return regs


def regs_from(raw: bytes) -> Any:
    """A `user_regs_struct` from the bytes PTRACE_GETREGS wrote (the native core's copy)."""
    return _Regs.from_buffer_copy(raw)


def get_siginfo(tid: int) -> Any:
    """PTRACE_GETSIGINFO as a `siginfo_t` (si_signo, si_code, _sigfault._addr)."""
    info = _Siginfo()
    if _ptrace(PTRACE_GETSIGINFO, tid, None, ctypes.addressof(info)) == -1:
        raise _fail(PTRACE_GETSIGINFO, tid)
    return info


class SyscallInfo(NamedTuple):
    """struct ptrace_syscall_info, flattened.

    For op SECCOMP/ENTRY: `nr` and `args`; for op EXIT: `rval` (negative errno when
    `is_error`). `ret_data` is the filter's SECCOMP_RET_DATA at a seccomp stop.
    """

    op: int
    arch: int
    ip: int
    sp: int
    nr: int
    args: tuple[int, int, int, int, int, int]
    rval: int
    is_error: bool
    ret_data: int


# op(u8) pad[3] arch(u32) ip(u64) sp(u64) | union (entry/seccomp: nr + 6 args + ret_data;
# exit: s64 rval + u8 is_error). 88 bytes on x86_64.
_INFO_SIZE = 88
_info_buf = ctypes.create_string_buffer(_INFO_SIZE)
_info_addr = ctypes.addressof(_info_buf)
_HEAD = struct.Struct("<B3xIQQ")
_ENTRY = struct.Struct("<7QI")
_EXIT = struct.Struct("<qB")


def syscall_info(tid: int) -> SyscallInfo:
    """PTRACE_GET_SYSCALL_INFO: nr+args at a seccomp/entry stop, rval at an exit stop."""
    if _ptrace(PTRACE_GET_SYSCALL_INFO, tid, _INFO_SIZE, _info_addr) == -1:
        raise _fail(PTRACE_GET_SYSCALL_INFO, tid)
    raw = _info_buf.raw
    op, arch, ip, sp = _HEAD.unpack_from(raw, 0)
    if op == SYSCALL_INFO_EXIT:
        rval, is_error = _EXIT.unpack_from(raw, 24)
        return SyscallInfo(op, arch, ip, sp, -1, (0, 0, 0, 0, 0, 0), rval, bool(is_error), 0)
    if op in (SYSCALL_INFO_SECCOMP, SYSCALL_INFO_ENTRY):
        nr, a0, a1, a2, a3, a4, a5, ret_data = _ENTRY.unpack_from(raw, 24)
        return SyscallInfo(op, arch, ip, sp, nr, (a0, a1, a2, a3, a4, a5), 0, False,
                           ret_data if op == SYSCALL_INFO_SECCOMP else 0)
    return SyscallInfo(op, arch, ip, sp, -1, (0, 0, 0, 0, 0, 0), 0, False, 0)
