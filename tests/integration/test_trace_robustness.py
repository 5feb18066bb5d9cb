"""The tracing engine against the hard cases of docs/ptrace-facts.md, with real processes.

Each test is GIVEN a program (a sample app or a small C program built here), WHEN it runs
under the tracer, THEN the trace and the program's behaviour are what they would be
without it. Every process started here is killed and reaped in `finally`. Every test runs
under both engines (`CGOTRACE_ENGINE`, read by RunOptions and by `cgotrace run`).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.tracing_helpers import cgotrace_cmd, compile_c, trace, wait_for
from tracer.errors import TracerError

pytestmark = pytest.mark.ptrace
Sample = Callable[..., Path]


@pytest.fixture(autouse=True, params=["ptrace", "notify"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CGOTRACE_ENGINE", request.param)
    monkeypatch.delenv("CGOTRACE_NO_NOTIFY", raising=False)
    return str(request.param)



def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


@pytest.mark.go
def test_100_locked_threads_opening_at_once_lose_nothing(sample: Sample) -> None:
    result, acc = trace([str(sample("openmany", "cgo")), "100"])
    assert result.status.code == 0
    opened = [a for a in acc if "/openmany-" in a.path and a.path.endswith(".txt")]
    names = {os.path.basename(a.path) for a in opened if a.result == "ok"}
    assert names == {f"openmany-{i}.txt" for i in range(100)}
    assert len({a.tid for a in opened}) >= 50  # really from many threads
    assert result.stats["unknown"] == 0


@pytest.mark.go
def test_vfork_exec_children_are_followed(sample: Sample) -> None:
    result, acc = trace([str(sample("execchild", "cgo"))])
    assert result.status.code == 0
    main = acc[0].pid
    child_execs = [a for a in acc if a.syscall == "execve" and a.pid != main and
                   a.result == "ok" and a.flags != "PT_INTERP"]
    assert child_execs, "the os/exec child's execve was not seen"
    child = child_execs[0].pid
    assert any(a.pid == child and a.path == "/etc/passwd" for a in acc)
    assert child_execs[0].hidden  # running another program is a hidden dependency
    forks = [e for e in result.events if e.event == "exit" and e.pid == child]
    assert forks and forks[0].detail["exit_code"] == 0


@pytest.mark.go
def test_exec_from_a_non_leader_thread_is_rekeyed(sample: Sample) -> None:
    result, acc = trace([str(sample("nonleaderexec", "cgo")), "self"])
    assert result.status.code == 0
    execs = [e for e in result.events if e.event == "exec"]
    assert len(execs) == 2
    pid = execs[0].pid
    assert execs[1].pid == pid and execs[1].tid == pid
    assert execs[1].detail["former_tid"] != pid  # reported under the leader: re-keyed
    second = [a for a in acc if a.syscall == "execve" and a.path == "/proc/self/exe"]
    assert len(second) == 1 and second[0].result == "ok" and second[0].tid == pid
    later = [a for a in acc if a.seq > second[0].seq and a.flags != "PT_INTERP"]
    assert later and all(a.pid == pid for a in later)


@pytest.mark.go
def test_leader_exits_before_its_threads(sample: Sample) -> None:
    result, acc = trace([str(sample("leaderexit", "cgo"))])
    assert result.status.code == 0
    pid = acc[0].pid
    after = [a for a in acc if a.path == "/" and a.tid != pid]
    assert sum(a.calls for a in after) >= 20  # the worker's opens after the leader's exit


def test_thread_killed_inside_a_watched_call_is_flushed_unknown(tmp_path: Path) -> None:
    """A thread blocked in open() of a FIFO is killed by exit_group: no exit stop ever
    comes for that call, its record is flushed with result "unknown"."""
    src = r"""
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
static const char *fifo;
static void *blocker(void *a) { open(fifo, O_RDONLY); return a; }
int main(int argc, char **argv) {
    pthread_t t; fifo = argv[1];
    pthread_create(&t, 0, blocker, 0);
    usleep(200000);
    exit(7);
}
"""
    prog = compile_c(src)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result, acc = trace([str(prog), str(fifo)])
    assert result.status.code == 7
    rec = [a for a in acc if a.path == str(fifo)]
    assert [a.result for a in rec] == ["unknown"]
    assert result.stats["unknown"] == 1


def test_signals_are_reinjected(tmp_path: Path) -> None:
    """Signal-delivery stops re-inject the signal: a handler sees every one (SIGURG in Go
    is the same path), and watched calls in between are still recorded."""
    src = r"""
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
static volatile int n;
static void h(int s) { (void)s; n++; }
int main(void) {
    signal(SIGURG, h);
    for (int i = 0; i < 200; i++) { raise(SIGURG); close(open("/etc/hostname", O_RDONLY)); }
    printf("%d\n", n);
    return n == 200 ? 0 : 1;
}
"""
    result, acc = trace([str(compile_c(src))])
    assert result.status.code == 0
    assert sum(a.calls for a in acc if a.path == "/etc/hostname") == 200


def test_segfault_exits_139_with_fault_address() -> None:
    src = "int main(void) { *(volatile int *)0x28 = 1; return 0; }\n"
    prog = compile_c(src)
    proc = subprocess.run(cgotrace_cmd("run", "--", str(prog)), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 139
    assert "SIGSEGV at address 0x28 in thread" in proc.stderr


def test_exit_code_stdin_and_environment_pass_through(tmp_path: Path) -> None:
    proc = subprocess.run(cgotrace_cmd("run", "-q", "--", "/bin/sh", "-c",
                                       'read x; echo "got $x $CGOT_X"; exit 42'),
                          input="hello\n", capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CGOT_X": "envok"})
    assert proc.returncode == 42
    assert proc.stdout == "got hello envok\n"
    assert proc.stderr == ""  # --quiet: nothing of ours


def test_summary_and_trace_file(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    js = tmp_path / "s.json"
    proc = subprocess.run(cgotrace_cmd("run", "-o", str(out), "--json", str(js), "--",
                                       "/bin/cat", "/etc/hostname"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "accesses" in proc.stderr
    from tracer.trace.recorder import read_trace

    t = read_trace(out)
    assert not t.truncated and t.exit is not None and t.exit["exit_code"] == 0
    paths = {a.path for a in t.accesses}
    assert "/etc/hostname" in paths
    assert any(a.kind.value == "interpreter" and not a.hidden for a in t.accesses)
    import json

    assert json.loads(js.read_text())["exit"]["exit_code"] == 0


def test_missing_program_is_127_and_not_executable_is_126(tmp_path: Path) -> None:
    proc = subprocess.run(cgotrace_cmd("run", "--", "no-such-program-cgotrace"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 127
    assert proc.stderr.strip().splitlines() == [
        "cgotrace: no-such-program-cgotrace: command not found"]
    f = tmp_path / "data.txt"
    f.write_text("x")
    f.chmod(0o644)
    proc = subprocess.run(cgotrace_cmd("run", "--", str(f)), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 126
    assert "permission denied" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_missing_interpreter_is_diagnosed() -> None:
    prog = compile_c("int main(void) { return 0; }\n",
                     "-Wl,--dynamic-linker=/nonexistent/ld.so")
    proc = subprocess.run(cgotrace_cmd("run", "--", str(prog)), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 127
    assert ("interpreter /nonexistent/ld.so (named by PT_INTERP) is not in this system: exec "
            "fails with 'No such file or directory'") in proc.stderr
    with pytest.raises(TracerError) as e:
        trace([str(prog)], netns=False)
    assert e.value.exit_code == 127


@pytest.mark.go
def test_sigstop_sigcont_and_sigterm_forwarding(sample: Sample, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    proc = subprocess.Popen(cgotrace_cmd("run", "-q", "--", str(sample("signals", "cgo")),
                                         "--ready-file", str(ready), "--timeout", "60s"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: ready.exists() and ready.read_text().strip() != "")
        pid = int(ready.read_text().split()[-1])
        os.kill(pid, signal.SIGSTOP)
        assert wait_for(lambda: _state(pid) in ("T", "t"))
        time.sleep(0.4)
        assert _state(pid) in ("T", "t")  # still stopped: the tracer did not resume it
        os.kill(pid, signal.SIGCONT)
        assert wait_for(lambda: _state(pid) in ("S", "R"))
        # resumed for real: it prints a tick (every 100 ms) before we ask it to stop
        seen = _read_until(proc, b"tick", timeout=10.0)
        assert b"tick" in seen, seen
        proc.send_signal(signal.SIGTERM)  # to cgotrace: forwarded to the program
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert b"signals: got terminated" in seen + out
    finally:
        _kill(proc)


def _read_until(proc: subprocess.Popen[bytes], marker: bytes, timeout: float) -> bytes:
    """What the program wrote to stdout until `marker` appeared (or the deadline)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    buf = b""
    deadline = time.monotonic() + timeout
    while marker not in buf and time.monotonic() < deadline:
        if poller.poll(100):
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
    return buf


def test_sigint_sent_to_cgotrace_is_forwarded() -> None:
    proc = subprocess.Popen(cgotrace_cmd("run", "-q", "--", "sleep", "30"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: _child_named(proc.pid, "sleep") is not None)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        assert proc.returncode == 130  # sleep died of SIGINT: 128+2
    finally:
        _kill(proc)


def _child_named(pid: int, name: str) -> int | None:
    import psutil

    try:
        for c in psutil.Process(pid).children(recursive=True):
            if c.name() == name:
                return int(c.pid)
    except psutil.NoSuchProcess:
        return None
    return None


def test_sigkill_of_cgotrace_kills_the_program() -> None:
    proc = subprocess.Popen(cgotrace_cmd("run", "-q", "--", "sleep", "60"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: _child_named(proc.pid, "sleep") is not None)
        child = _child_named(proc.pid, "sleep")
        assert child is not None
        proc.kill()
        proc.wait(timeout=10)
        assert wait_for(lambda: _state(child) in ("gone", "Z"), timeout=10), _state(child)
    finally:
        _kill(proc)
