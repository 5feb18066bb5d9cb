"""Why ptrace refused an attach, and the fix, from the credentials and Yama's setting.

The integration tests (tests/integration/test_attach_errors.py) make the ownership, the
capability and the already-traced refusals for real; this kernel has no Yama, so its three
restricting settings are checked here against the same function.
"""

from __future__ import annotations

import pytest

from tracer.commands.attach import diagnose_refusal
from tracer.errors import AlreadyTracedError, ExitCode, PermissionDeniedError
from tracer.process.procfs import CAP_SYS_PTRACE, Creds, ProcessFacts, parse_status

ALL_CAPS = (1 << 41) - 1
ROOT = Creds((0, 0, 0), (0, 0, 0), ALL_CAPS, ALL_CAPS)
ROOT_NO_PTRACE = Creds((0, 0, 0), (0, 0, 0), ALL_CAPS & ~(1 << CAP_SYS_PTRACE),
                       ALL_CAPS & ~(1 << CAP_SYS_PTRACE))
ALICE = Creds((1000, 1000, 1000), (1000, 1000, 1000), 0, 0)


def target(creds: Creds, tracer: int = 0) -> ProcessFacts:
    return ProcessFacts(pid=4242, name="server", state="S", tracer_pid=tracer, nspid=(4242,),
                        creds=creds, exe="/srv/server", root="/", cmdline=("/srv/server",),
                        foreign_ns=())


@pytest.mark.parametrize(("yama", "me", "words", "fix"), [
    (1, ALICE, "Yama ptrace_scope is 1", "sudo sysctl kernel.yama.ptrace_scope=0"),
    (2, ALICE, "Yama ptrace_scope is 2", "sudo cgotrace attach 4242"),
    (3, ROOT, "Yama ptrace_scope is 3", "reboot"),
])
def test_yama(yama: int, me: Creds, words: str, fix: str) -> None:
    e = diagnose_refusal(4242, target(ALICE), me, yama)
    assert isinstance(e, PermissionDeniedError) and e.exit_code == ExitCode.PERMISSION
    assert words in e.message and fix in e.help


def test_yama_1_lets_a_parent_trace_its_child() -> None:
    e = diagnose_refusal(4242, target(ALICE), ALICE, 1, descendant=True)
    assert "Yama" not in e.message  # not the reason here


def test_not_the_owner() -> None:
    e = diagnose_refusal(4242, target(ROOT), ALICE, 0)
    assert "belongs to root (uid 0)" in e.message and "uid 1000" in e.message
    assert "sudo -u root cgotrace attach 4242" in e.help


def test_no_cap_sys_ptrace() -> None:
    e = diagnose_refusal(4242, target(ROOT), ROOT_NO_PTRACE, None)
    assert "lacks CAP_SYS_PTRACE" in e.message and "capabilities" in e.message
    assert "--cap-add=SYS_PTRACE" in e.help


def test_not_dumpable() -> None:
    setuid = Creds((1000, 1000, 1000), (1000, 1000, 1000), 0, 0, dumpable=False)
    e = diagnose_refusal(4242, target(setuid), ALICE, 0)
    assert "not dumpable" in e.message


def test_already_traced_comes_first() -> None:
    e = diagnose_refusal(4242, target(ALICE, tracer=777), ALICE, 3)
    assert isinstance(e, AlreadyTracedError) and e.exit_code == ExitCode.PERMISSION
    assert "already traced by process 777" in e.message and "kill 777" in e.help


def test_status_fields() -> None:
    s = parse_status("Name:\tserver\nNSpid:\t4242\t1\nTracerPid:\t0\nUid:\t0\t0\t0\t0\n")
    assert s["NSpid"].split() == ["4242", "1"] and s["TracerPid"] == "0"
