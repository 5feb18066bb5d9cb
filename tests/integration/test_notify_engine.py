"""The notify engine's own promises: honest unobserved repeats, death with the tracer, and
`auto` falling back to ptrace when seccomp user notification is unavailable."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.tracing_helpers import cgotrace_cmd, private_netns, wait_for
from tracer.attribution.attributor import Attributor
from tracer.commands.run import RunOptions, RunResult, trace_program
from tracer.errors import TracerError
from tracer.syscalls import seccomp
from tracer.trace.model import Access
from tracer.trace.recorder import read_trace

pytestmark = pytest.mark.ptrace
Sample = Callable[..., Path]


def _run(argv: list[str], engine: str, **kw: object) -> tuple[RunResult, list[Access]]:
    got: list[Access] = []
    kw.setdefault("child_setup", private_netns)
    res = trace_program(RunOptions(argv=argv, forward_signals=False, on_access=got.append,
                                   engine=engine, **kw))  # type: ignore[arg-type]
    return res, got


@pytest.mark.go
@pytest.mark.parametrize("native", ["1", "0"])
def test_repeats_are_counts_and_unobserved_ones_point_at_an_observed_result(
        sample: Sample, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: str) -> None:
    monkeypatch.setenv("CGOTRACE_NATIVE", native)
    exe = str(sample("benchopen", "cgo"))
    out = tmp_path / "t.jsonl"
    res, _ = _run([exe, "300"], "notify", attributor=Attributor(), output=str(out))
    assert res.engine == "notify" and res.status.code == 0
    assert ("native per-call core" in res.engine_reason) is (native == "1"), res.engine_reason
    trace = read_trace(out)
    opens = [a for a in trace.accesses
             if a.path == os.path.realpath(exe) and a.syscall == "openat"]
    assert sum(a.calls for a in opens) == 300  # every call counted, once
    # a record per thread that made them (Go moves the goroutine between threads), not
    # per call
    assert len(opens) == len({a.tid for a in opens}) <= 16
    unobserved = sum(a.repeats_unobserved + (not a.observed) for a in opens)
    assert unobserved >= 250  # the point of the engine: most repeats run unstopped
    assert res.stats["unobserved"] >= unobserved
    if native == "1":  # and most of those never entered the interpreter
        assert res.stats["native_repeats"] >= 200
        # the upgrades' stops were driven by the core, up to the result
        assert 0 < res.stats["native_upgrades"] <= res.stats["upgrades"]
    else:
        assert res.stats["native_repeats"] == 0
        assert res.stats["native_upgrades"] == 0
    # the first sighting and the power-of-two samples (2, 4, ..., 256) were seen at exit
    assert 9 <= 300 - unobserved <= 20
    by_seq = {a.seq: a for a in trace.accesses}
    assert opens[0].observed and opens[0].result == "ok"
    for a in opens:
        if a.observed:
            continue
        # never presented as observed: its result is that of a record holding an observed
        # call of the same key (the record itself, or one of its repeats)
        src = by_seq[a.result_of]  # type: ignore[index]
        assert src.seq < a.seq and src.result == a.result == "ok"
        assert src.observed or src.repeats > src.repeats_unobserved
    text = out.read_text()
    assert '"type":"repeats"' in text
    assert len(text) < 20_000  # grows with what is distinct, not with calls


def test_writing_opens_are_always_observed(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    script = f"for i in 1 2 3 4 5 6 7; do echo $i >> {target}; done; cat {target} > /dev/null"
    res, _ = _run(["/bin/sh", "-c", script], "notify", output=str(tmp_path / "t.jsonl"))
    assert res.status.code == 0
    writes = [a for a in read_trace(tmp_path / "t.jsonl").accesses
              if a.path == str(target) and a.flags and "O_WRONLY" in a.flags]
    assert sum(a.calls for a in writes) == 7
    assert all(a.observed and a.repeats_unobserved == 0 and a.result == "ok" for a in writes)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False



def test_sigkill_of_the_tracer_kills_the_tracee_under_notify(tmp_path: Path) -> None:
    # the tracee keeps making watched calls, so a dead listener would show at once
    loop = "while :; do test -e /etc/hostname; sleep 0.05; done"
    proc = subprocess.Popen(cgotrace_cmd("run", "-q", "--engine", "notify", "--",
                                         "/bin/sh", "-c", loop))
    tracee = None
    try:

        def shell() -> int | None:
            return next((k for k in _children(proc.pid)
                         if os.path.realpath(f"/proc/{k}/exe").endswith("sh")), None)

        assert wait_for(lambda: shell() is not None, timeout=15.0)
        tracee = shell()
        assert tracee is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert wait_for(lambda: not _alive(tracee), timeout=15.0), "tracee survived its tracer"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if tracee is not None and _alive(tracee):
            os.kill(tracee, signal.SIGKILL)


def test_auto_falls_back_to_ptrace_when_notify_is_switched_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CGOTRACE_NO_NOTIFY", "1")
    res, acc = _run(["/bin/true"], "auto")
    assert res.engine == "ptrace" and "CGOTRACE_NO_NOTIFY" in res.engine_reason
    assert any(a.syscall == "execve" and a.result == "ok" for a in acc)
    with pytest.raises(TracerError, match="notify engine is unavailable"):
        _run(["/bin/true"], "notify")


def _listener_already_installed() -> None:
    """child_setup: a filter with a listener is in place (as under another supervisor), so
    the kernel refuses a second listener (EBUSY)."""
    private_netns()
    seccomp.install_listener(seccomp.build_filter([134], seccomp.SECCOMP_RET_USER_NOTIF))


def test_auto_falls_back_to_ptrace_under_a_filter_with_a_listener() -> None:
    res, acc = _run(["/bin/cat", "/etc/hostname"], "auto",
                    child_setup=_listener_already_installed)
    assert res.engine == "ptrace" and "EBUSY" in res.engine_reason
    assert res.status.code == 0
    assert any(a.path == "/etc/hostname" and a.result == "ok" and a.observed for a in acc)
    with pytest.raises(TracerError):
        _run(["/bin/true"], "notify", child_setup=_listener_already_installed)


def test_verbose_says_which_engine_and_why() -> None:
    env = {**os.environ, "CGOTRACE_NO_NOTIFY": "1"}
    env.pop("CGOTRACE_ENGINE", None)
    proc = subprocess.run(cgotrace_cmd("run", "-q", "-v", "--", "/bin/true"),
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0
    assert "cgotrace: engine ptrace (CGOTRACE_NO_NOTIFY is set)" in proc.stderr
    env.pop("CGOTRACE_NO_NOTIFY")
    proc = subprocess.run(cgotrace_cmd("run", "-q", "-v", "--engine", "notify", "--",
                                       "/bin/true"),
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0
    assert "cgotrace: engine notify (seccomp user notification available" in proc.stderr
    proc = subprocess.run(cgotrace_cmd("run", "-q", "--engine", "notify", "--", "/bin/true"),
                          capture_output=True, text=True, timeout=60,
                          env={**env, "CGOTRACE_NO_NOTIFY": "1"})
    assert proc.returncode == 125
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


_HANDLER_C = r"""
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile int handled;

static void on_usr1(int sig) {  /* long enough for the tracer's interrupt to land here */
    struct timespec a, b;
    (void)sig;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do clock_gettime(CLOCK_MONOTONIC, &b);
    while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) < 300000000L);
    handled = 1;
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, 0);
    int fd = open("/etc/hostname", O_RDONLY);
    if (fd < 0) return 3;
    close(fd);
    return handled ? 0 : 4;
}
"""


@pytest.mark.parametrize("native", ["1", "0"])
def test_an_upgrade_that_finds_the_thread_in_a_signal_handler_waits_for_the_call_again(
        monkeypatch: pytest.MonkeyPatch, native: str) -> None:
    """Without WAIT_KILLABLE_RECV (a kernel before 6.0; forced here): a signal delivered
    while the call waits for the reply, before the tracer's interrupt lands, stops the
    thread in its handler: those registers are not the call's. The engine lets the handler
    run; the call restarts, notifies again and is recorded once, with the stack of the call
    (main -> open), not of the handler. With the native core (which drives the upgrade's
    stops) as without it."""
    monkeypatch.setenv("CGOTRACE_NATIVE", native)
    monkeypatch.setenv("CGOTRACE_WAIT_KILLABLE", "0")
    from tests.integration.tracing_helpers import compile_c
    from tracer import ptrace
    from tracer.engine import notify_engine

    exe = compile_c(_HANDLER_C, "-g", "-O0")
    real_interrupt = notify_engine.ptrace.interrupt
    fired: list[int] = []

    def catches_usr1(tid: int) -> bool:
        with open(f"/proc/{tid}/status") as f:
            caught = next(line for line in f if line.startswith("SigCgt:")).split()[1]
        return bool(int(caught, 16) & (1 << (signal.SIGUSR1 - 1)))

    def signal_first(tid: int) -> None:
        # the first upgrade once the handler is in place (the open of /etc/hostname):
        # SIGUSR1 ends the wait and is delivered before the interrupt lands
        if not fired and catches_usr1(tid):
            fired.append(tid)
            os.kill(tid, signal.SIGUSR1)
            _, status = os.waitpid(tid, 0x40000000)  # __WALL: its signal-delivery-stop
            assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGUSR1
            ptrace.cont(tid, signal.SIGUSR1)  # deliver it: the handler starts
        real_interrupt(tid)

    monkeypatch.setattr(notify_engine.ptrace, "interrupt", signal_first)
    res, acc = _run([str(exe)], "notify", attributor=Attributor())
    assert fired and res.status.code == 0, res.status
    assert ("native per-call core" in res.engine_reason) is (native == "1"), res.engine_reason
    assert "WAIT_KILLABLE_RECV off" in res.engine_reason, res.engine_reason
    assert res.stats["lost_upgrades"] == 1
    (hostname,) = [a for a in acc if a.path == "/etc/hostname"]
    assert hostname.observed and hostname.result == "ok"
    assert hostname.attribution is not None
    functions = [f.function for f in hostname.attribution.stack]
    assert "main" in functions and "on_usr1" not in functions, functions


@pytest.mark.parametrize("native", ["1", "0"])
def test_with_wait_killable_a_signal_waits_for_the_reply_and_one_stop_gives_the_result(
        monkeypatch: pytest.MonkeyPatch, native: str) -> None:
    """With WAIT_KILLABLE_RECV (the default where the kernel has it) the interrupt does not
    end the received wait, and neither does a signal: SIGUSR1 sent before the interrupt is
    delivered after the call. The engine answers CONTINUE right after the interrupt; the
    call runs and the thread stops on its way back, where rax is the result: recorded once,
    observed, with the stack of the call, no upgrade lost; the handler runs afterwards (the
    program checks it)."""
    from tests.integration.tracing_helpers import compile_c
    from tracer.engine import notify_engine

    monkeypatch.setenv("CGOTRACE_NATIVE", native)
    monkeypatch.delenv("CGOTRACE_WAIT_KILLABLE", raising=False)
    exe = compile_c(_HANDLER_C, "-g", "-O0")
    real_interrupt = notify_engine.ptrace.interrupt
    fired: list[int] = []

    def signal_first(tid: int) -> None:
        with open(f"/proc/{tid}/status") as f:
            caught = next(line for line in f if line.startswith("SigCgt:")).split()[1]
        if not fired and int(caught, 16) & (1 << (signal.SIGUSR1 - 1)):
            fired.append(tid)
            os.kill(tid, signal.SIGUSR1)  # pending: the received wait is killable only
        real_interrupt(tid)

    monkeypatch.setattr(notify_engine.ptrace, "interrupt", signal_first)
    res, acc = _run([str(exe)], "notify", attributor=Attributor())
    assert fired and res.status.code == 0, res.status
    assert "WAIT_KILLABLE_RECV on" in res.engine_reason, res.engine_reason
    assert res.stats["lost_upgrades"] == 0
    assert res.stats["upgrades"] >= 1
    if native == "1":
        assert res.stats["native_upgrades"] == res.stats["upgrades"]
    (hostname,) = [a for a in acc if a.path == "/etc/hostname"]
    assert hostname.observed and hostname.result == "ok"
    assert hostname.attribution is not None
    functions = [f.function for f in hostname.attribution.stack]
    assert "main" in functions and "on_usr1" not in functions, functions


@pytest.mark.parametrize("engine", ["notify", "ptrace"])
def test_the_report_says_how_many_results_were_not_seen(sample: Callable[..., Path],
                                                          tmp_path: Path, engine: str) -> None:
    """The notify engine lets repeats run without a stop and copies their result: the text
    report's first line and the JSON report say how many; the ptrace engine sees every
    result, and says nothing of the kind."""
    import json

    report = tmp_path / "r.json"
    r = subprocess.run(cgotrace_cmd("run", "--engine", engine, "--json", str(report), "--",
                                    str(sample("benchopen", "cgo")), "200"),
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "NO_COLOR": "1"})
    assert r.returncode == 0, r.stderr
    first = next(line for line in r.stderr.splitlines() if line.startswith("cgotrace: "))
    unobserved = json.loads(report.read_text())["unobserved"]
    if engine == "ptrace":
        assert unobserved == 0 and "without a stop" not in first
    else:
        assert unobserved >= 180  # 200 opens of one path: all but the first few (188 seen)
        assert f"({unobserved} ran without a stop: result copied from the same call seen " \
               "before, observed: false in the trace)" in first


@pytest.mark.go
@pytest.mark.parametrize("native", ["1", "0"])
def test_a_group_stop_during_a_one_stop_upgrade_keeps_the_trace(
        sample: Sample, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: str) -> None:
    """SIGSTOP sent to the program just before an upgrade's interrupt, SIGCONT 20 ms later,
    20 times: the group-stop meets the upgrade's stops (in one run with the engine's events
    printed, it took the thread between the interrupt and the restarted call's entry every
    time). The run ends, every call is recorded once with its result, and the set is the
    one of an undisturbed run (benchwalk: every call a first sighting, so every call is
    upgraded)."""
    import threading

    from tracer.engine import notify_engine

    monkeypatch.setenv("CGOTRACE_NATIVE", native)
    monkeypatch.delenv("CGOTRACE_WAIT_KILLABLE", raising=False)
    walk, tree = str(sample("benchwalk", "cgo")), str(tmp_path / "tree")
    subprocess.run([walk, "200", tree], check=True, capture_output=True, timeout=60)

    def calls(acc: list[Access]) -> set[tuple[str, str, str, bool]]:
        return {(a.syscall, a.path, a.result, a.observed) for a in acc if a.path.startswith(tree)}

    quiet_res, quiet = _run([walk, "200", tree], "notify")
    assert quiet_res.status.code == 0 and len(calls(quiet)) >= 400
    real_interrupt = notify_engine.ptrace.interrupt
    stopped: list[int] = []
    timers: list[threading.Timer] = []

    states: list[str] = []

    def resume(tgid: int) -> None:
        with open(f"/proc/{tgid}/stat") as f:  # the state after ")": T or t when stopped
            states.append(f.read().rsplit(")", 1)[1].split()[0])
        os.kill(tgid, signal.SIGCONT)

    def stop_first(tid: int) -> None:
        with open(f"/proc/{tid}/status") as f:
            tgid = int(next(line for line in f if line.startswith("Tgid:")).split()[1])
        if len(stopped) < 20 and notify_engine.ptrace.interrupt is stop_first:
            stopped.append(tgid)
            os.kill(tgid, signal.SIGSTOP)  # pending: the received wait is killable only
            timers.append(threading.Timer(0.02, resume, (tgid,)))
            timers[-1].start()
        real_interrupt(tid)

    monkeypatch.setattr(notify_engine.ptrace, "interrupt", stop_first)
    watchdog = threading.Timer(60, lambda: [os.kill(p, signal.SIGKILL) for p in stopped[:1]])
    watchdog.start()
    try:
        res, acc = _run([walk, "200", tree], "notify")
    finally:
        watchdog.cancel()
        for t in timers:
            t.join()
    assert len(stopped) == 20 and res.status.code == 0, res.status
    assert {"T", "t"} & set(states), states  # the group-stops happened
    assert "WAIT_KILLABLE_RECV on" in res.engine_reason, res.engine_reason
    assert calls(acc) == calls(quiet)
    assert res.stats["unknown"] == 0 and res.stats["upgrades"] >= 400
