"""Namespaces from Python: the libc calls Python 3.11 lacks, and a loopback-only network.

Python 3.11 has no os.unshare/os.setns, and glibc 2.36 has no pivot_root wrapper, so these
go through ctypes. Every failure raises `SandboxError` with one line naming the call and
the errno, because the caller is usually a forked child that can only pass one line back.

`LoopbackNetwork` forks a holder process into a new network namespace with only `lo` up
and optionally runs a service there (the loopback DNS responder); a sandbox joins it with
`network=<LoopbackNetwork>.netns_path`. Nothing in such a namespace can reach another host:
it has no interface but `lo` and no route.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import select
import signal
import socket
import struct
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

from tracer.errors import PermissionDeniedError, SandboxError

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

_SYS_PIVOT_ROOT = 155  # x86-64
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_PR_SET_DUMPABLE = 4

_libc: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


def _fail(what: str, err: int) -> SandboxError:
    name = errno.errorcode.get(err, str(err))
    hint = ""
    if err == errno.EPERM:
        hint = " (needs root, or user namespaces enabled: sysctl user.max_user_namespaces)"
    return SandboxError(f"{what} failed: {name} ({os.strerror(err)}){hint}")


def _check(ret: int, what: str) -> None:
    if ret != 0:
        raise _fail(what, ctypes.get_errno())


def unshare(flags: int) -> None:
    if libc().unshare(ctypes.c_int(flags)) == 0:
        return
    err = ctypes.get_errno()
    if flags & CLONE_NEWUSER and err in (errno.EPERM, errno.ENOSPC, errno.EUSERS):
        raise SandboxError(_userns_refused(err))
    raise _fail(f"unshare({flags:#x})", err)


def _userns_refused(err: int) -> str:
    """Exactly what stops an unprivileged user namespace here (only our own uid is mapped,
    so /etc/subuid is never needed)."""
    settings = [(path, _read_setting(path)) for path in (
        "/proc/sys/kernel/unprivileged_userns_clone", "/proc/sys/user/max_user_namespaces",
        "/proc/sys/kernel/apparmor_restrict_unprivileged_userns")]
    off = [f"{p.removeprefix('/proc/sys/').replace('/', '.')}={v}" for p, v in settings
           if v is not None and (v == "0") != p.endswith("apparmor_restrict_unprivileged_userns")]
    why = ", ".join(off) if off else f"{errno.errorcode.get(err, err)} from unshare"
    return (f"cannot create a user namespace as uid {os.geteuid()} ({why}): enable "
            "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
            "user.max_user_namespaces>0) or run as root")


def _read_setting(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def setns(fd: int, nstype: int) -> None:
    _check(libc().setns(ctypes.c_int(fd), ctypes.c_int(nstype)), f"setns({nstype:#x})")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    def enc(s: str | None) -> bytes | None:
        return None if s is None else os.fsencode(s)

    ret = libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))
    _check(ret, f"mount {fstype or 'bind'} on {target}")


def bind_mount(source: str, target: str, *, readonly: bool = False,
               recursive: bool = False) -> None:
    mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))
    if readonly:
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)


def umount2(target: str, flags: int = 0) -> None:
    _check(libc().umount2(os.fsencode(target), ctypes.c_int(flags)), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    ret = libc().syscall(ctypes.c_long(_SYS_PIVOT_ROOT), os.fsencode(new_root),
                         os.fsencode(put_old))
    _check(ret, f"pivot_root({new_root})")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(libc().sethostname(raw, ctypes.c_size_t(len(raw))), f"sethostname({name})")


def set_link_up(name: str = "lo", up: bool = True) -> None:
    """SIOCSIFFLAGS on an AF_INET socket: what `ip link set lo up` does."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", name.encode(), 0)
        try:
            got = fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, req)
            flags = struct.unpack_from("16sH", got)[1]
            flags = flags | _IFF_UP if up else flags & ~_IFF_UP
            fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack("16sH14x", name.encode(), flags))
        except OSError as e:
            raise _fail(f"bringing {name} {'up' if up else 'down'}", e.errno or 0) from None


def link_is_up(name: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        got = fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, struct.pack("16sH14x", name.encode(), 0))
        return bool(struct.unpack_from("16sH", got)[1] & _IFF_UP)


def interfaces() -> list[str]:
    """Names of the network interfaces in the caller's network namespace."""
    return [name for _, name in socket.if_nameindex()]


def join(netns_path: str) -> None:
    """Move the calling (single-threaded) process into the network namespace at a path."""
    try:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SandboxError(f"network namespace {netns_path}: no such file") from None
    except PermissionError:
        raise PermissionDeniedError(f"network namespace {netns_path}: permission denied") from None
    try:
        setns(fd, CLONE_NEWNET)
    finally:
        os.close(fd)


def enter_loopback_namespace(*, user_namespace: bool | None = None) -> None:
    """unshare a new network namespace (and a user namespace when not root), lo up."""
    userns = (os.geteuid() != 0) if user_namespace is None else user_namespace
    uid, gid = os.geteuid(), os.getegid()
    unshare(CLONE_NEWNET | (CLONE_NEWUSER if userns else 0))
    if userns:
        write_id_maps(uid, gid)
    set_link_up("lo")


def write_id_maps(outer_uid: int, outer_gid: int) -> None:
    """Map root in a fresh user namespace to the caller's outer uid/gid (one id each)."""
    # A process that changed uid is non-dumpable, which makes its /proc/self files root's
    # and the maps unwritable; we own the namespace, so dumpable is safe here.
    libc().prctl(ctypes.c_int(_PR_SET_DUMPABLE), ctypes.c_ulong(1), ctypes.c_ulong(0),
                 ctypes.c_ulong(0), ctypes.c_ulong(0))
    try:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
    except FileNotFoundError:
        pass
    try:
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"0 {outer_uid} 1\n")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"0 {outer_gid} 1\n")
    except OSError as e:
        raise _fail("writing uid_map/gid_map", e.errno or 0) from None


Service = Callable[[], AbstractContextManager[Any]]


class LoopbackNetwork:
    """A network namespace with only `lo` up, held open by a child process.

        with LoopbackNetwork(service=lambda: DnsResponder(...)) as net:
            spec = SandboxSpec(rootfs=..., network=net.netns_path)

    The holder forks, enters a new netns (and user ns when not root), brings `lo` up,
    enters `service()` if given (e.g. a DNS responder binding 127.0.0.1:53 there), then
    reports ready and waits for SIGTERM. Leaving the block terminates and reaps it.
    """

    def __init__(self, service: Service | None = None, *, ready_timeout: float = 10.0,
                 user_namespace: bool | None = None) -> None:
        self.service = service
        self.ready_timeout = ready_timeout
        self.user_namespace = user_namespace
        self.pid: int | None = None

    @property
    def netns_path(self) -> str:
        if self.pid is None:
            raise SandboxError("LoopbackNetwork is not running")
        return f"/proc/{self.pid}/ns/net"

    def __enter__(self) -> LoopbackNetwork:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # holder
            os.close(rfd)
            self._hold(wfd)  # never returns
        self.pid = pid
        os.close(wfd)
        try:
            poller = select.poll()  # not select(): it fails on descriptors >= 1024
            poller.register(rfd, select.POLLIN)
            ready = poller.poll(self.ready_timeout * 1000)
            data = os.read(rfd, 4096) if ready else b""
        finally:
            os.close(rfd)
        if data != b"ok\n":
            self.stop()
            reason = data.decode(errors="replace").strip() or (
                "no answer" if not ready else "exited before it was ready")
            raise SandboxError(f"loopback network holder failed: {reason}")

    def _hold(self, wfd: int) -> None:
        code = 0
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            enter_loopback_namespace(user_namespace=self.user_namespace)
            # Blocked before the service starts, so its threads inherit the mask and the
            # SIGTERM from stop() is taken by sigwait below, letting the service clean up.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            with self.service() if self.service else contextlib.nullcontext():
                os.write(wfd, b"ok\n")
                os.close(wfd)
                signal.sigwait({signal.SIGTERM})
        except BaseException as e:  # the holder must never return into the caller's code
            msg = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
            with contextlib.suppress(OSError):
                os.write(wfd, (" ".join(str(msg).split()) + "\n").encode())
            code = 1
        os._exit(code)

    def stop(self) -> None:
        pid, self.pid = self.pid, None
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            done, _status = os.waitpid(pid, os.WNOHANG)
            if done:
                return
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
