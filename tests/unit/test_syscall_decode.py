"""Decoders: flags, results, sockaddr, paths, argv (pure functions over ints and bytes)."""

from __future__ import annotations

import os
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracer.syscalls import decode
from tracer.syscalls.table import X86_64_NUMBERS, i386_table, x86_64_table


def test_open_flags_names_access_mode_and_bits() -> None:
    assert decode.open_flags(os.O_RDONLY | os.O_CLOEXEC) == "O_RDONLY|O_CLOEXEC"
    assert decode.open_flags(os.O_WRONLY | os.O_CREAT | os.O_TRUNC) == \
        "O_WRONLY|O_CREAT|O_TRUNC"
    assert decode.open_flags(os.O_RDWR | os.O_SYNC) == "O_RDWR|O_SYNC"  # not O_DSYNC too
    assert decode.open_flags(os.O_PATH | os.O_DIRECTORY) == "O_RDONLY|O_DIRECTORY|O_PATH"
    assert decode.open_flags(0x80000000) == "O_RDONLY|0x80000000"  # unknown bits survive


def test_at_flags_and_access_modes() -> None:
    assert decode.at_flags(0) is None
    assert decode.at_flags(0x100 | 0x1000) == "AT_SYMLINK_NOFOLLOW|AT_EMPTY_PATH"
    assert decode.access_mode(0) == "F_OK"
    assert decode.access_mode(os.R_OK | os.X_OK) == "R_OK|X_OK"


def test_result_names() -> None:
    assert decode.result_name(3) == "ok"
    assert decode.result_name(0) == "ok"
    assert decode.result_name(-2) == "ENOENT"
    assert decode.result_name(-13) == "EACCES"
    assert decode.result_name(-512) == "ERESTARTSYS"
    assert decode.result_name(-(1 << 40)) == "ok"  # a large pointer-like value, not an errno


def test_signed_int_dirfd() -> None:
    assert decode.signed_int(0xFFFFFF9C) == decode.AT_FDCWD
    assert decode.signed_int(0xFFFFFFFFFFFFFF9C) == decode.AT_FDCWD
    assert decode.signed_int(3) == 3


def test_sockaddr_unix_abstract_inet_inet6_netlink() -> None:
    path = struct.pack("<H", socket.AF_UNIX) + b"/var/run/nscd/socket\0"
    assert decode.sockaddr(path) == ("AF_UNIX", "/var/run/nscd/socket")
    abstract = struct.pack("<H", socket.AF_UNIX) + b"\0userdb"
    assert decode.sockaddr(abstract) == ("AF_UNIX", "@userdb")
    inet = struct.pack("<H", socket.AF_INET) + struct.pack(">H", 53) + \
        socket.inet_aton("127.0.0.1") + bytes(8)
    assert decode.sockaddr(inet) == ("AF_INET", "127.0.0.1:53")
    inet6 = struct.pack("<H", socket.AF_INET6) + struct.pack(">H", 443) + bytes(4) + \
        socket.inet_pton(socket.AF_INET6, "::1") + bytes(4)
    assert decode.sockaddr(inet6) == ("AF_INET6", "[::1]:443")
    netlink = struct.pack("<HHII", 16, 0, 0, 0)
    assert decode.sockaddr(netlink) == ("AF_NETLINK", "netlink:pid=0,groups=0")
    assert decode.sockaddr(b"\x01") is None


def test_join_path_is_textual() -> None:
    assert decode.join_path("/srv", "./a/b") == "/srv/a/b"
    assert decode.join_path("/", "etc") == "/etc"
    assert decode.join_path("/x", ".") == "/x"
    assert decode.join_path("/x/", "../y") == "/x/../y"  # no folding: symlinks may matter


def test_resolve_path_uses_cwd_and_dirfd(tmp_path: os.PathLike[str]) -> None:
    base = str(tmp_path)
    old = os.getcwd()
    os.chdir(base)
    fd = os.open("/etc", os.O_RDONLY | os.O_DIRECTORY)
    try:
        me = os.getpid()
        assert decode.resolve_path(me, decode.AT_FDCWD, "f.txt") == os.path.realpath(base) + \
            "/f.txt"
        assert decode.resolve_path(me, fd, "passwd") == "/etc/passwd"
        assert decode.resolve_path(me, fd, "/abs") == "/abs"
        assert decode.resolve_path(me, 999, "x") == "x"  # bad fd: left relative
    finally:
        os.close(fd)
        os.chdir(old)


def test_read_argv_bounded() -> None:
    strings = {0x1000: b"prog", 0x2000: b"-v"}
    table = struct.pack("<QQQ", 0x1000, 0x2000, 0)

    def read(addr: int, n: int) -> bytes:
        return table[:n] if addr == 0x500 else b""

    assert decode.read_argv(read, strings.get, 0x500) == ("prog", "-v")
    assert decode.read_argv(read, strings.get, 0x500, max_args=1) == ("prog", "...")
    assert decode.read_argv(read, strings.get, 0) is None


def test_tables_use_native_numbers_not_x32() -> None:
    native = {s.name: nr for nr, s in x86_64_table().items()}
    assert native["execve"] == 59 and native["execveat"] == 322  # not 520/545 (x32)
    assert native["open"] == 2 and native["openat"] == 257 and native["openat2"] == 437
    assert X86_64_NUMBERS["connect"] == 42
    compat = {s.name: nr for nr, s in i386_table().items()}
    assert compat["open"] == 5 and compat["execve"] == 11 and compat["connect"] == 362


@given(st.integers(min_value=0, max_value=0xFFFFFFFF))
def test_open_flags_never_lose_bits(flags: int) -> None:
    names = decode.open_flags(flags).split("|")
    value = {"O_RDONLY": 0, "O_WRONLY": 1, "O_RDWR": 2, "O_ACCMODE": 3}[names[0]]
    table = dict(decode._O_FLAGS)
    for n in names[1:]:
        value |= int(n, 16) if n.startswith("0x") else table[n]
    assert value == flags


@pytest.mark.parametrize("errno_value", [1, 2, 13, 20, 40])
def test_result_name_matches_errno_module(errno_value: int) -> None:
    import errno

    assert decode.result_name(-errno_value) == errno.errorcode[errno_value]


def test_watched_x86_64_numbers_match_python_ptrace() -> None:
    from ptrace.syscall.linux.x86_64 import SYSCALL_NAMES

    from tracer.syscalls.table import WATCHED, WATCHED_X86_64

    by_name = {name: nr for nr, name in SYSCALL_NAMES.items() if nr < 512}
    assert set(WATCHED_X86_64) == {s.name for s in WATCHED}
    assert {n: by_name[n] for n in WATCHED_X86_64} == WATCHED_X86_64


def test_register_and_siginfo_layouts_match_python_ptrace() -> None:
    import ctypes

    from ptrace.binding.func import ptrace_registers_t
    from ptrace.binding.linux_struct import siginfo

    from tracer.ptrace.requests import _Regs, _Siginfo

    assert [f[0] for f in _Regs._fields_] == [f[0] for f in ptrace_registers_t._fields_]
    assert ctypes.sizeof(_Regs) == ctypes.sizeof(ptrace_registers_t)
    for field in ("si_signo", "si_errno", "si_code", "_sigfault"):
        assert getattr(_Siginfo, field).offset == getattr(siginfo, field).offset
    assert ctypes.sizeof(_Siginfo) == 128  # siginfo_t, what PTRACE_GETSIGINFO writes


def test_normalize_path_one_spelling_per_file() -> None:
    assert decode.normalize_path("/usr/share/zoneinfo//Europe/Berlin") == \
        "/usr/share/zoneinfo/Europe/Berlin"
    assert decode.normalize_path("//etc/./passwd") == "/etc/passwd"
    assert decode.normalize_path("/run/systemd/userdb/") == "/run/systemd/userdb/"
    assert decode.normalize_path("/etc/.") == "/etc/"
    assert decode.normalize_path("/x/../y") == "/x/../y"  # symlinks may make .. matter
    assert decode.normalize_path("/") == "/" and decode.normalize_path("//") == "/"
    assert decode.normalize_path("/etc/.hidden") == "/etc/.hidden"
    assert decode.normalize_path("(fd 3)") == "(fd 3)"
