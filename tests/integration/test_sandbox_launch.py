"""End to end: launch.py's hooks + the sandbox + the loop, on real Go binaries."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import pytest

from tracer.loop import Loop
from tracer.model import Access, ExitStatus
from tracer.session import rootfs, sandbox
from tracer.session.launch import LaunchSpec, launch
from tracer.session.sandbox import PreparedSandbox, SandboxSpec

pytestmark = [pytest.mark.netns, pytest.mark.ptrace, pytest.mark.go]


def trace(prep: PreparedSandbox) -> tuple[ExitStatus, list[Access], int | None]:
    spec = LaunchSpec(argv=[prep.program_in_root], exec_path=prep.program_in_root,
                      child_setup=prep.child_setup, enter_namespaces=prep.enter_namespaces,
                      setup_root=prep.setup_root, pid_namespace=prep.pid_namespace)
    tracee = launch(spec)
    accesses: list[Access] = []
    try:
        status = Loop(tracee.pid, on_access=accesses.append).run()
        return status, accesses, tracee.exec_errno()
    finally:
        tracee.close()


@pytest.mark.parametrize("pid_namespace", [False, True])
def test_musl_userlookup_traced_in_musl_rootfs(sample: Callable[..., Path],
                                               pid_namespace: bool) -> None:
    prep = sandbox.prepare(SandboxSpec(rootfs=rootfs.resolve_rootfs("musl"),
                                       pid_namespace=pid_namespace),
                           sample("userlookup", "musl"))
    status, accesses, exec_err = trace(prep)
    assert exec_err is None and status.code == 0
    passwd = [a for a in accesses if a.path == "/etc/passwd" and a.result == "ok"]
    assert passwd and {a.syscall for a in passwd} & {"open", "openat"}
    assert prep.root is not None
    assert sandbox.host_path(prep, "/etc/passwd") == str(prep.root / "etc/passwd")
    assert not [a for a in accesses if a.path == "/etc/nsswitch.conf" and a.result == "ok"]


def test_glibc_binary_in_musl_rootfs_is_diagnosed(sample: Callable[..., Path]) -> None:
    prep = sandbox.prepare(SandboxSpec(rootfs=rootfs.resolve_rootfs("musl")),
                           sample("userlookup", "cgo"))
    status, _accesses, exec_err = trace(prep)
    assert exec_err == errno.ENOENT and status.code == 127
    assert prep.diagnose_exec_failure(exec_err).startswith(
        "interpreter /lib64/ld-linux-x86-64.so.2 (named by PT_INTERP) is not in rootfs musl")
