"""The BPF filter: assembled instructions, evaluated in Python, and installed for real."""

from __future__ import annotations

import os
import struct

import pytest

from tracer.syscalls import seccomp
from tracer.syscalls.table import AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, WATCHED, X86_64_NUMBERS

WATCHED_NRS = [X86_64_NUMBERS[s.name] for s in WATCHED]


def test_layout_checks_arch_first_then_numbers() -> None:
    prog = seccomp.build_filter(WATCHED_NRS)
    assert prog[0] == (seccomp.BPF_LD_W_ABS, 0, 0, seccomp.SECCOMP_DATA_ARCH)
    assert prog[1][0] == seccomp.BPF_JEQ_K and prog[1][3] == AUDIT_ARCH_X86_64
    assert prog[3] == (seccomp.BPF_LD_W_ABS, 0, 0, seccomp.SECCOMP_DATA_NR)
    assert prog[-2] == (seccomp.BPF_RET_K, 0, 0, seccomp.SECCOMP_RET_ALLOW)
    assert prog[-1] == (seccomp.BPF_RET_K, 0, 0, seccomp.SECCOMP_RET_TRACE)
    assert len(prog) == 4 + 1 + len(set(WATCHED_NRS)) + 2
    assert len(seccomp.encode(prog)) == 8 * len(prog)


def test_watched_are_traced_everything_else_allowed() -> None:
    prog = seccomp.build_filter(WATCHED_NRS)
    for nr in WATCHED_NRS:
        assert seccomp.evaluate(prog, nr) == seccomp.SECCOMP_RET_TRACE, nr
    for nr in range(0, 460):
        if nr not in WATCHED_NRS:
            assert seccomp.evaluate(prog, nr) == seccomp.SECCOMP_RET_ALLOW, nr


def test_foreign_arch_and_x32_are_traced_not_allowed() -> None:
    prog = seccomp.build_filter(WATCHED_NRS)
    assert seccomp.evaluate(prog, 5, arch=AUDIT_ARCH_I386) == seccomp.SECCOMP_RET_TRACE
    assert seccomp.evaluate(prog, 0, arch=AUDIT_ARCH_I386) == seccomp.SECCOMP_RET_TRACE
    assert seccomp.evaluate(prog, 0x40000000 | 257) == seccomp.SECCOMP_RET_TRACE  # x32 openat
    assert seccomp.evaluate(prog, 0x40000000) == seccomp.SECCOMP_RET_TRACE


def test_installed_filter_traces_watched_calls_for_real() -> None:
    """Without a tracer, RET_TRACE makes a call fail with ENOSYS: the filter is live and
    catches exactly the watched calls (getpid still works, open does not)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            seccomp.install(seccomp.build_filter(WATCHED_NRS))
            ok_pid = os.getpid() > 0
            try:
                os.open("/etc/hostname", os.O_RDONLY)
                open_err = 0
            except OSError as e:
                open_err = e.errno or 0
            os.write(w, struct.pack("<ii", int(ok_pid), open_err))
        finally:
            os._exit(0)
    os.close(w)
    try:
        data = os.read(r, 8)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    ok_pid, open_err = struct.unpack("<ii", data)
    assert ok_pid == 1
    assert open_err == 38  # ENOSYS


def test_too_many_numbers_rejected() -> None:
    with pytest.raises(ValueError):
        seccomp.build_filter(range(300))


def test_notify_filter_notifies_native_calls_and_traces_foreign_ones() -> None:
    prog = seccomp.build_filter(WATCHED_NRS, seccomp.SECCOMP_RET_USER_NOTIF)
    for nr in WATCHED_NRS:
        assert seccomp.evaluate(prog, nr) == seccomp.SECCOMP_RET_USER_NOTIF, nr
    for nr in range(0, 460):
        if nr not in WATCHED_NRS:
            assert seccomp.evaluate(prog, nr) == seccomp.SECCOMP_RET_ALLOW, nr
    assert seccomp.evaluate(prog, 5, arch=AUDIT_ARCH_I386) == seccomp.SECCOMP_RET_TRACE
    assert seccomp.evaluate(prog, 0x40000000 | 257) == seccomp.SECCOMP_RET_TRACE  # x32
