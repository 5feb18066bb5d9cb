"""`cgotrace attach` and `snapshot` refusals: one line with the remedy, the documented code.

Each case makes the real condition (a reaped PID, a process under strace, a process of
another user, cgotrace without CAP_SYS_PTRACE, a process that exits while attached, an
ambiguous --name, an --output that cannot be written, a snapshot by an unprivileged user).
Yama's ptrace_scope cannot be set on a kernel without Yama; its diagnosis is checked in
tests/unit/test_attach_diagnosis.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.attach_helpers import ROOT, status_field, stop_process

pytestmark = [pytest.mark.ptrace]


# cgotrace as root without CAP_SYS_PTRACE (a container without the capability); the venv's
# Python lives under /root, which another user cannot read, so "not the owner" is made by
# giving the *target* another uid instead.
NO_PTRACE_CAP = ("setpriv", "--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace", "--")
needs_setpriv = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                   reason="needs root and setpriv(1) to drop CAP_SYS_PTRACE")


def cgotrace(*args: str, prefix: tuple[str, ...] = (),
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "tracer", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def one_line(p: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert "Traceback" not in p.stderr, p.stderr
    return lines[-1]


@contextmanager
def sleeper(*argv: str, user: int | None = None) -> Iterator[subprocess.Popen[bytes]]:
    def become() -> None:
        os.setgroups([])
        os.setgid(user)  # type: ignore[arg-type]
        os.setuid(user)  # type: ignore[arg-type]

    proc = subprocess.Popen(list(argv) or ["sleep", "60"],
                            preexec_fn=become if user is not None else None)
    try:
        yield proc
    finally:
        stop_process(proc, signal.SIGKILL)


def test_no_such_pid() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: its PID is free
    for cmd in ("attach", "snapshot"):
        p = cgotrace(cmd, str(proc.pid))
        assert p.returncode == 4, p.stderr
        assert one_line(p).startswith(f"cgotrace: no such process: {proc.pid} (")


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed")
def test_already_traced_names_the_tracer() -> None:
    strace = subprocess.Popen(["strace", "-qq", "-o", "/dev/null", "sleep", "60"])
    try:
        deadline = time.monotonic() + 10
        child = None
        while child is None and time.monotonic() < deadline:
            # strace forks short-lived probe children at start-up (traced, then reaped)
            # before the real one; wait for the traced child that is already `sleep`.
            for kid in Path(f"/proc/{strace.pid}/task/{strace.pid}/children").read_text().split():
                try:
                    status = Path(f"/proc/{kid}/status").read_text()
                except FileNotFoundError:
                    continue
                if "Name:\tsleep\n" in status and "TracerPid:\t0\n" not in status:
                    child = int(kid)
            time.sleep(0.02)
        assert child is not None
        p = cgotrace("attach", str(child))
        assert p.returncode == 5, p.stderr
        line = one_line(p)
        assert f"already traced by process {strace.pid} (strace)" in line
        assert f"kill {strace.pid}" in line  # the remedy
    finally:
        stop_process(strace, signal.SIGKILL)


@needs_setpriv
def test_not_the_owner() -> None:
    with sleeper(user=65534) as target:
        p = cgotrace("attach", str(target.pid), prefix=NO_PTRACE_CAP)
        assert p.returncode == 5, p.stderr
        line = one_line(p)
        assert "it belongs to nobody (uid 65534)" in line and "runs as uid 0" in line
        assert f"sudo -u nobody cgotrace attach {target.pid}" in line


@needs_setpriv
def test_no_cap_sys_ptrace() -> None:
    with sleeper() as target:
        p = cgotrace("attach", str(target.pid), prefix=NO_PTRACE_CAP)
        assert p.returncode == 5, p.stderr
        line = one_line(p)
        assert "lacks CAP_SYS_PTRACE and it holds capabilities cgotrace lacks" in line
        assert "--cap-add=SYS_PTRACE" in line


def test_process_exits_during_attach(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    with sleeper("sh", "-c", "sleep 2; cat /etc/hostname >/dev/null; exit 3") as target:
        p = cgotrace("attach", str(target.pid), "--duration", "30", "-o", str(trace))
    assert p.returncode == 6, p.stderr
    assert "process exited with code 3" in one_line(p)
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert lines[0]["mode"] == "attach"
    assert lines[-1]["type"] == "exit" and lines[-1]["code"] == 3
    assert lines[-1]["attach"]["detached"] is False
    # the trace so far is kept: what sh's child (followed across fork and exec) opened
    assert any(x["type"] == "access" and x["path"] == "/etc/hostname" for x in lines)


def test_name_ambiguous_unique_and_missing(tmp_path: Path) -> None:
    name = f"cgt-sleeper-{os.getpid()}"
    exe = tmp_path / name
    shutil.copy("/bin/sleep", exe)
    with sleeper(str(exe), "60") as first:
        p = cgotrace("snapshot", "--name", name)
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith(f"process {first.pid} ({name})")
        with sleeper(str(exe), "60") as second:
            p = cgotrace("attach", "--name", name, "--duration", "1")
            assert p.returncode == 2, p.stderr
            line = one_line(p)
            assert "matches 2 processes" in line
            assert str(first.pid) in line and str(second.pid) in line
    p = cgotrace("attach", "--name", name + "-none")
    assert p.returncode == 4 and "no process named" in one_line(p)


def test_output_that_cannot_be_written_fails_before_the_seize(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`attach -o /nonexistent/dir/x.jsonl`: exit 4 with one line, as `run` gives, and the
    process is never seized (the trace file is opened first)."""
    from tracer.commands.attach import AttachOptions, attach_process
    from tracer.engine import stepping
    from tracer.errors import NotFoundError

    bad = "/nonexistent/dir/x.jsonl"
    with sleeper() as target:
        p = cgotrace("attach", str(target.pid), "-o", bad, "--duration", "1")
        assert p.returncode == 4, p.stderr
        assert one_line(p) == (f"cgotrace: cannot write {bad}: no such file or directory "
                               "(create the directory first)")
        assert "every syscall entry" not in p.stderr  # said only once the process is seized
        assert status_field(target.pid, "TracerPid") == "0"
        run = cgotrace("run", "-o", bad, "--", "true")
        assert run.returncode == 4 and one_line(run) == one_line(p)

        def seize(self: object) -> int:
            raise AssertionError("seized although the output cannot be written")

        monkeypatch.setattr(stepping.AttachEngine, "seize", seize)
        with pytest.raises(NotFoundError, match="cannot write"):
            attach_process(AttachOptions(target.pid, duration=1, output=bad,
                                         handle_signals=False))


def test_snapshot_of_another_users_process_is_refused_with_the_remedy() -> None:
    """`snapshot` as nobody of a root process: the kernel hides its executable and maps;
    exit 5 naming the file and the remedy, not a report with `exe: None` and nothing in it."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv(1) to run cgotrace as nobody")
    with sleeper() as target:
        p = cgotrace("snapshot", str(target.pid),
                     prefix=("setpriv", "--reuid", "nobody", "--regid", "nogroup",
                             "--clear-groups", "--"))
    assert p.returncode == 5, (p.returncode, p.stdout, p.stderr)
    assert p.stdout == ""
    line = one_line(p)
    assert line.startswith(f"cgotrace: cannot read /proc/{target.pid}/exe of process "
                           f"{target.pid} (sleep, uid 0): permission denied"), line
    assert "run cgotrace as root or as the process's owner (`sudo -u root ...`)" in line
