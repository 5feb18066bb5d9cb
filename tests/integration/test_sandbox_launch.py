"""End to end: launch.py's hooks + the sandbox + the loop, on real Go binaries."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import pytest

from tracer.engine.ptrace_engine import PtraceEngine
from tracer.recording.collector import EventCollector
from tracer.sandbox import container, roots
from tracer.sandbox.container import PreparedSandbox, SandboxSpec
from tracer.sandbox.launch import LaunchSpec, launch
from tracer.trace.model import Access, ExitStatus

pytestmark = [pytest.mark.netns, pytest.mark.ptrace, pytest.mark.go]


def trace(prep: PreparedSandbox) -> tuple[ExitStatus, list[Access], int | None]:
    spec = LaunchSpec(argv=[prep.program_in_root], exec_path=prep.program_in_root,
                      child_setup=prep.child_setup, enter_namespaces=prep.enter_namespaces,
                      setup_root=prep.setup_root, pid_namespace=prep.pid_namespace)
    tracee = launch(spec)
    accesses: list[Access] = []
    try:
        status = PtraceEngine(tracee.pid).run(EventCollector(on_access=accesses.append))
        return status, accesses, tracee.exec_errno()
    finally:
        tracee.close()


@pytest.mark.parametrize("pid_namespace", [False, True])
def test_musl_userlookup_traced_in_musl_rootfs(sample: Callable[..., Path],
                                               pid_namespace: bool) -> None:
    prep = container.prepare(SandboxSpec(rootfs=roots.resolve_rootfs("musl"),
                                       pid_namespace=pid_namespace),
                           sample("userlookup", "musl"))
    status, accesses, exec_err = trace(prep)
    assert exec_err is None and status.code == 0
    passwd = [a for a in accesses if a.path == "/etc/passwd" and a.result == "ok"]
    assert passwd and {a.syscall for a in passwd} & {"open", "openat"}
    assert prep.root is not None
    assert container.host_path(prep, "/etc/passwd") == str(prep.root / "etc/passwd")
    assert not [a for a in accesses if a.path == "/etc/nsswitch.conf" and a.result == "ok"]


def test_glibc_binary_in_musl_rootfs_is_diagnosed(sample: Callable[..., Path]) -> None:
    prep = container.prepare(SandboxSpec(rootfs=roots.resolve_rootfs("musl")),
                           sample("userlookup", "cgo"))
    status, _accesses, exec_err = trace(prep)
    assert exec_err == errno.ENOENT and status.code == 127
    assert prep.diagnose_exec_failure(exec_err).startswith(
        "interpreter /lib64/ld-linux-x86-64.so.2 (named by PT_INTERP) is not in rootfs musl")
