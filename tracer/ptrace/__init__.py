"""The only code that issues ptrace requests.

Requests go through a raw `ptrace(2)` binding with ctypes structures of its own
(`user_regs_struct`, `siginfo_t`, PTRACE_GET_SYSCALL_INFO's), which covers what
python-ptrace lacks (SEIZE, INTERRUPT, LISTEN, GET_SYSCALL_INFO, the seccomp option and
event) and is what the hot loop needs: python-ptrace's debugger layer is much slower per
stop (docs/ptrace-facts.md). python-ptrace still gives the x86_64 syscall names
(tracer/syscalls/table.py).

Every failing request raises `PtraceRequestError` carrying `errno`; ESRCH is routine
(threads vanish during exit_group and exec).
"""

from __future__ import annotations

from tracer.ptrace.memory import (
    memory_reader,
    pages_reader,
    read_cstring,
    read_memory,
    read_pages,
)
from tracer.ptrace.requests import (
    EVENT_CLONE,
    EVENT_EXEC,
    EVENT_EXIT,
    EVENT_FORK,
    EVENT_SECCOMP,
    EVENT_STOP,
    EVENT_VFORK,
    EVENT_VFORK_DONE,
    LAUNCH_OPTIONS,
    O_EXITKILL,
    O_TRACECLONE,
    O_TRACEEXEC,
    O_TRACEFORK,
    O_TRACESECCOMP,
    O_TRACESYSGOOD,
    O_TRACEVFORK,
    ORIG_RAX,
    PTRACE_PEEKUSER,
    PTRACE_SYSCALL,
    SYSCALL_INFO_ENTRY,
    SYSCALL_INFO_EXIT,
    SYSCALL_INFO_NONE,
    SYSCALL_INFO_SECCOMP,
    PtraceRequestError,
    SyscallInfo,
    cont,
    detach,
    get_eventmsg,
    get_regs,
    get_siginfo,
    interrupt,
    listen,
    raw_ptrace,
    regs_from,
    seize,
    syscall,
    syscall_info,
    syscall_nr,
)

__all__ = [
    "EVENT_CLONE", "EVENT_EXEC", "EVENT_EXIT", "EVENT_FORK", "EVENT_SECCOMP", "EVENT_STOP",
    "EVENT_VFORK", "EVENT_VFORK_DONE", "LAUNCH_OPTIONS", "O_EXITKILL", "O_TRACECLONE",
    "O_TRACEEXEC", "O_TRACEFORK", "O_TRACESECCOMP", "O_TRACESYSGOOD", "O_TRACEVFORK",
    "SYSCALL_INFO_ENTRY", "SYSCALL_INFO_EXIT", "SYSCALL_INFO_NONE", "SYSCALL_INFO_SECCOMP",
    "PtraceRequestError", "SyscallInfo", "cont", "detach", "get_eventmsg", "get_regs",
    "get_siginfo",
    "interrupt", "listen", "memory_reader", "pages_reader", "read_cstring", "read_memory",
    "read_pages", "seize", "syscall",
    "syscall_info", "syscall_nr", "ORIG_RAX", "PTRACE_PEEKUSER", "PTRACE_SYSCALL",
    "raw_ptrace", "regs_from",
]
