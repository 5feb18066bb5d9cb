"""Tracee memory: process_vm_readv (one syscall per read), falling back to /proc/PID/mem.

Readers never raise for unmapped addresses: they return what could be read (possibly b"").
A read is split at the first page boundary into two iovecs so a string that ends just
before an unmapped page is still returned whole by a single call.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
from collections.abc import Callable

PAGE = os.sysconf("SC_PAGE_SIZE")
PATH_MAX = 4096
CSTRING_HEAD = 256


class _Iovec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


_libc = ctypes.CDLL(None, use_errno=True)
_readv = _libc.process_vm_readv
_readv.restype = ctypes.c_ssize_t
_readv.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p,
                   ctypes.c_ulong, ctypes.c_ulong)

_BUF_SIZE = 2 * PATH_MAX
_buf = ctypes.create_string_buffer(_BUF_SIZE)
_buf_addr = ctypes.addressof(_buf)
_string_at = ctypes.string_at
_local = _Iovec(ctypes.addressof(_buf), 0)
_remote = (_Iovec * 2)()
_local_ref = ctypes.addressof(_local)
_remote_ref = ctypes.addressof(_remote)
_vm_readv_ok = True


def _read_vm(pid: int, addr: int, n: int) -> bytes | None:
    """One process_vm_readv; None when the syscall itself is unavailable (ENOSYS/EPERM)."""
    global _vm_readv_ok
    first = min(n, PAGE - (addr % PAGE))
    _local.len = n
    _remote[0].base = addr
    _remote[0].len = first
    _remote[1].base = addr + first
    _remote[1].len = n - first
    got = _readv(pid, _local_ref, 1, _remote_ref, 2 if n > first else 1, 0)
    if got < 0:
        err = ctypes.get_errno()
        if err in (_errno.ENOSYS, _errno.EPERM):
            _vm_readv_ok = False
            return None
        return b""
    return _string_at(_buf_addr, got)  # (.raw would copy the whole buffer first)


def _read_procmem(pid: int, addr: int, n: int) -> bytes:
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        out = b""
        while len(out) < n:
            try:
                chunk = os.pread(fd, min(n - len(out), PAGE - ((addr + len(out)) % PAGE)),
                                 addr + len(out))
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        os.close(fd)


def read_memory(pid: int, addr: int, n: int) -> bytes:
    """Up to `n` bytes of `pid`'s memory at `addr` (short at the end of the readable range)."""
    if n <= 0 or addr <= 0:
        return b""
    out = b""
    while n > 0:
        step = min(n, _BUF_SIZE)
        data = _read_vm(pid, addr, step) if _vm_readv_ok else None
        if data is None:
            data = _read_procmem(pid, addr, step)
        out += data
        if len(data) < step:
            break
        addr += step
        n -= step
    return out


def read_cstring(pid: int, addr: int, limit: int = PATH_MAX) -> bytes | None:
    """The NUL-terminated string at `addr`, at most `limit` bytes; None when unreadable
    (NULL or unmapped pointer). A string longer than `limit` comes back truncated."""
    if addr == 0:
        return None
    # most paths are short: read a small head first, the rest only without a NUL in it
    data = read_memory(pid, addr, min(limit, CSTRING_HEAD))
    if not data:
        return None
    end = data.find(b"\0")
    if end >= 0:
        return data[:end]
    if len(data) < min(limit, CSTRING_HEAD):
        return data  # the readable range ended
    data += read_memory(pid, addr + len(data), limit - len(data))
    end = data.find(b"\0")
    return data if end < 0 else data[:end]


MAX_BATCH_PAGES = 64
_batch_buf = ctypes.create_string_buffer(MAX_BATCH_PAGES * PAGE)
_batch_addr = ctypes.addressof(_batch_buf)
_batch_local = _Iovec(_batch_addr, 0)
_batch_remote = (_Iovec * MAX_BATCH_PAGES)()


def read_pages(pid: int, pages: list[int]) -> list[bytes]:
    """Whole pages at the page-aligned addresses `pages`, in one process_vm_readv (at most
    MAX_BATCH_PAGES); the kernel stops at the first unreadable page, which and every page
    after it come back as b"" (callers re-read those one by one)."""
    pages = pages[:MAX_BATCH_PAGES]
    if not pages or not _vm_readv_ok:
        return [b""] * len(pages)
    for i, page in enumerate(pages):
        _batch_remote[i].base = page
        _batch_remote[i].len = PAGE
    _batch_local.len = PAGE * len(pages)
    got = _readv(pid, ctypes.addressof(_batch_local), 1, ctypes.addressof(_batch_remote),
                 len(pages), 0)
    full = max(0, got) // PAGE
    raw = _string_at(_batch_addr, full * PAGE)  # .raw would copy the whole 256 KiB buffer
    return [raw[i * PAGE:(i + 1) * PAGE] if i < full else b"" for i in range(len(pages))]


def pages_reader(pid: int) -> Callable[[list[int]], list[bytes]]:
    """`read_pages` bound to one process (the unwinder's batch prefetch)."""

    def read(pages: list[int]) -> list[bytes]:
        return read_pages(pid, pages)

    return read


def memory_reader(pid: int) -> Callable[[int, int], bytes]:
    """`read(addr, n) -> bytes` for one process: what unwinders and symbolizers take."""

    def read(addr: int, n: int) -> bytes:
        return read_memory(pid, addr, n)

    return read
