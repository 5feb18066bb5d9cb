"""Can this machine run a class of tests? Each function returns None, or the reason it can't."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

from sample_apps import build as sample_build


def which(cmd: str) -> str | None:
    return shutil.which(cmd)


@functools.cache
def ptrace_reason() -> str | None:
    """Try PTRACE_SEIZE on a child of our own, the way the tracer will."""
    code = (
        "import ctypes,os,signal,sys\n"
        "libc=ctypes.CDLL(None,use_errno=True)\n"
        "pid=os.fork()\n"
        "if pid==0:\n"
        "    os.kill(os.getpid(),signal.SIGSTOP); os._exit(0)\n"
        "os.waitpid(pid,os.WUNTRACED)\n"
        "r=libc.ptrace(0x4206,pid,0,0)\n"
        "e=ctypes.get_errno()\n"
        "os.kill(pid,signal.SIGKILL); os.waitpid(pid,0)\n"
        "sys.exit(0 if r==0 else e)\n"
    )
    rc = subprocess.run([sys.executable, "-c", code]).returncode
    if rc == 0:
        return None
    return f"PTRACE_SEIZE on a child failed (errno {rc}); check kernel.yama.ptrace_scope / seccomp"


@functools.cache
def netns_reason() -> str | None:
    flag = "--user --map-root-user " if os.geteuid() != 0 else ""
    unshare = shutil.which("unshare")
    if unshare is None:
        return "unshare(1) not found"
    rc = subprocess.run(f"{unshare} {flag}--mount --pid --fork --net true", shell=True,
                        capture_output=True).returncode
    return None if rc == 0 else "cannot create mount/pid/net namespaces here"


# Host programs tests use as oracles or fixtures, and the Debian package that has each.
TOOL_PACKAGES = {"gcc": "gcc", "cc": "gcc", "readelf": "binutils", "objdump": "binutils",
                 "ip": "iproute2", "strace": "strace", "musl-gcc": "musl-tools",
                 "unshare": "util-linux", "mount": "mount"}


def tool_reason(*tools: str) -> str | None:
    """None when every program is on PATH, else which are missing and how to get them."""
    missing = [t for t in tools if which(t) is None]
    if not missing:
        return None
    packages = sorted({TOOL_PACKAGES.get(t, t) for t in missing})
    return (f"needs {', '.join(missing)} (Debian: {' '.join(packages)}; "
            f"`make system-deps` as root)")


def require(*tools: str) -> None:
    """Skip the calling test, saying why, when a program it runs is missing (under
    CGOTRACE_REQUIRE_PRIV=1 the skip is a failure: tests/conftest.py)."""
    reason = tool_reason(*tools)
    if reason:
        import pytest

        pytest.skip(reason)


def go_reason(version: str = sample_build.DEFAULT_GO) -> str | None:
    try:
        sample_build.goroot(version)
    except sample_build.BuildError as e:
        return str(e)
    return None
