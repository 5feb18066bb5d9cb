"""`python -m bench.percall`: where one watched call's cost goes, in microseconds.

Runs `benchopen 20000` (one openat per iteration, the same path every time) under stripped
versions of the notify engine's hot path, each adding one layer, then the real engines
with stacks off, and `benchwalk` (every path new: every call takes the notify engine's
upgrade) under both engines. Each figure is (tracer loop time) / (watched calls), median of
--runs runs; the machine's load moves them, so compare rows of one run only.

  floor         RECV + read the path (process_vm_readv) + SEND CONTINUE, nothing else
                (poll on the listener and on the SIGCHLD wake-up fd, as the engine does:
                ptrace stops, Go's SIGURG preemption among them, are resumed at once)
  native floor  the same in C (tracer/engine/_native.c: poll, RECV, read, table, SEND),
                the benchopen path armed by hand for each thread: what the native core
                costs per repeat with no collector at all
  decode        + EntryDecoder.decode (flags, path text)
  collector     + EventCollector.on_entry/on_result (classify, keys, Access records)
  notify        `trace_program(engine="notify")`, no stacks: + summary, runner callbacks;
                with the native core (the default) and with CGOTRACE_NATIVE=0
  ptrace        `trace_program(engine="ptrace")`, no stacks: two ptrace stops per call
                (the ptrace engine has no native core)
  stacks on     benchwalk under each engine with the attributor (`LazyAttributor`, as
                `cgotrace run` has by default): + capture, walk, symbolization per call
                (`--only-walk` runs the benchwalk rows alone)

Then the same engines on `benchuser` (cgo lookups: N/4 of them), `benchwalk` (N*3/20 new
files: 3000) and `cgotrace attach` on `benchhttp N` (per syscall stop, not per watched
call: its stepping loop with the native core and with CGOTRACE_NATIVE=0).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.__main__ import _stdout_to_devnull as _quiet

WALL = 0x40000000
STOP_SIGNALS = (19, 20, 21, 22)


def _reap_events(pid: int) -> bool:
    """Resume every pending ptrace stop; False once `pid` has exited."""
    from tracer import ptrace

    while True:
        try:
            tid, st = os.waitpid(-1, WALL | os.WNOHANG)
        except ChildProcessError:
            return False
        if tid == 0:
            return True
        if os.WIFEXITED(st) or os.WIFSIGNALED(st):
            if tid == pid:
                return False
            continue
        sig, ev = (st >> 8) & 0xFF, (st >> 16) & 0xFF
        with contextlib.suppress(ptrace.PtraceRequestError):
            if ev == ptrace.EVENT_STOP and sig in STOP_SIGNALS:
                ptrace.listen(tid)
            else:
                ptrace.cont(tid, sig if ev == 0 and sig != 5 else 0)


def layered(exe: Path, n: int, layer: str) -> float:
    """Microseconds per notification with the hot path cut at `layer`."""
    from tracer import ptrace
    from tracer.engine import notify_engine as ne
    from tracer.engine.base import Want
    from tracer.recording.collector import EventCollector
    from tracer.sandbox.launch import LaunchSpec, launch

    tr = launch(LaunchSpec(argv=[str(exe), str(n)], engine="notify"))
    assert tr.listener is not None, "notify engine unavailable"
    eng = ne.NotifyEngine(tr.pid, tr.listener, ne.set_sync_wakeup(tr.listener))
    col = EventCollector(on_access=lambda a: None)
    col.start(tr.pid)
    view = ne.NotifyView()
    poller = select.poll()
    poller.register(tr.listener, select.POLLIN)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    poller.register(wake_r, select.POLLIN)
    restore = eng._watch_sigchld(wake_w)  # a ptrace stop wakes the loop, as in the engine
    count = 0
    t0 = time.perf_counter()
    while _reap_events(tr.pid):
        if not any(fd == tr.listener for fd, _ in poller.poll(5)):
            with contextlib.suppress(OSError):
                os.read(wake_r, 512)
            continue
        got = eng._recv()
        if got is None:
            continue
        count += 1
        nid, tid, _, nr, arch, ip = got[:6]
        args = got[6:]
        if layer == "floor":
            ptrace.read_cstring(tid, args[1], 4096)
        elif layer == "decode":
            col._decoder.decode(view.at(tid, tid), nr, arch, args, ip, 0, 0.0)
        elif col.on_entry(view.at(tid, col.pid_of(tid)), nr, arch, args, ip, 0) \
                is Want.CONTINUE:
            eng._continue(nid)
            col.on_result(tid, None, False)
            continue
        eng._continue(nid)
    elapsed = time.perf_counter() - t0
    _close(tr, wake_r, wake_w, restore)
    return 1e6 * elapsed / max(count, 1)


def _close(tr: Any, wake_r: int, wake_w: int, restore: Callable[[], object] | None) -> None:
    """The end of a floor loop: the signal wake-up restored, its fds and the tracee gone."""
    if restore is not None:
        restore()
    for fd in (wake_r, wake_w, tr.listener):
        os.close(fd)
    tr.close()


def native_floor(exe: Path, n: int) -> float:
    """Microseconds per notification with the C loop answering the repeats (see the module
    doc): every openat of `exe` is armed for its thread with a count far from a power of
    two, so that only each thread's first one comes back to Python."""
    from tracer import ptrace
    from tracer.engine import native
    from tracer.engine import notify_engine as ne
    from tracer.sandbox.launch import LaunchSpec, launch
    from tracer.syscalls.table import X86_64_NUMBERS

    module, why = native.load()
    assert module is not None, why
    tr = launch(LaunchSpec(argv=[str(exe), str(n)], engine="notify"))
    assert tr.listener is not None, "notify engine unavailable"
    eng = ne.NotifyEngine(tr.pid, tr.listener, ne.set_sync_wakeup(tr.listener))
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    restore = eng._watch_sigchld(wake_w)  # a ptrace stop wakes the loop, as in the engine
    core = native.new_core(module, tr.listener, wake_r)
    slot = core.new_slot(2**21 + 1)  # the next power of two is 2**22 calls away
    target = os.path.realpath(exe).encode()
    count = 0
    t0 = time.perf_counter()
    while _reap_events(tr.pid):
        got = core.run(5)
        if not isinstance(got, tuple):
            if got == native.WAKE:
                with contextlib.suppress(OSError):
                    os.read(wake_r, 512)
            continue
        count += 1
        nid, tid, _, nr, _, ip = got[:6]
        args = got[6:]
        if nr == X86_64_NUMBERS["openat"] and ptrace.read_cstring(tid, args[1], 4096) == target:
            core.arm(tid, nr, args, ip, target, slot, 0)
        eng._continue(nid)
    elapsed = time.perf_counter() - t0
    count += core.stats()["handled"]
    _close(tr, wake_r, wake_w, restore)
    return 1e6 * elapsed / max(count, 1)


def engine(exe: Path, args: list[str], name: str, native: bool = True,
           stacks: bool = False) -> float:
    """Microseconds per watched call of a whole traced run (stacks off unless `stacks`, as
    `cgotrace run` has them by default); `native` False runs the notify engine's
    pure-Python path (CGOTRACE_NATIVE=0)."""
    from tracer.attribution.policy import LazyAttributor
    from tracer.commands.run import RunOptions, trace_program

    saved = os.environ.get("CGOTRACE_NATIVE")
    os.environ["CGOTRACE_NATIVE"] = "1" if native else "0"
    try:
        with _quiet():
            t0 = time.perf_counter()
            res = trace_program(RunOptions(argv=[str(exe), *args], engine=name,
                                           forward_signals=False, on_access=lambda a: None,
                                           attributor=LazyAttributor() if stacks else None))
            elapsed = time.perf_counter() - t0
    finally:
        if saved is None:
            del os.environ["CGOTRACE_NATIVE"]
        else:
            os.environ["CGOTRACE_NATIVE"] = saved
    return 1e6 * elapsed / max(res.stats["accesses"], 1)


def attach_stop(exe: Path, n: int, native: bool = True) -> float:
    """Microseconds per syscall stop of `cgotrace attach` on `benchhttp n` (its stepping
    loop in C, or with CGOTRACE_NATIVE=0 in Python): the program's own loop time over the
    stops in the trace's exit stats (the CLI, attached before the loop starts)."""
    import json
    import tempfile

    from bench.__main__ import CGOTRACE, _attached_loop

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "attach.jsonl")
        env = {**os.environ, "CGOTRACE_NATIVE": "1" if native else "0"}
        loop = _attached_loop(exe, str(n), [*CGOTRACE, "attach", "-q", "-o", out, "{pid}"],
                              "cgotrace: attached to", env)
        assert loop is not None, "cgotrace attach or benchhttp failed"
        stops = json.loads(Path(out).read_text().splitlines()[-1])["stats"]["stops"]
    return 1e6 * loop / max(int(stops), 1)


def _quiet_call(fn: Callable[[], float]) -> float:
    with _quiet():
        return fn()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.percall")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--only-walk", action="store_true",
                    help="only the benchwalk rows (stacks off and on)")
    a = ap.parse_args(argv)
    from sample_apps import build

    opener, walker = build.build("benchopen", "cgo"), build.build("benchwalk", "cgo")
    user, http = build.build("benchuser", "cgo"), build.build("benchhttp", "cgo")
    n_user = max(1, a.n // 4)  # a lookup makes three watched calls and a libc walk
    import tempfile

    rows: list[tuple[str, Callable[[], float]]] = [
        (f"floor (benchopen {a.n})", lambda: _quiet_call(
            lambda: layered(opener, a.n, "floor"))),
        (f"native floor (benchopen {a.n})", lambda: _quiet_call(
            lambda: native_floor(opener, a.n)))]
    rows += [(f"{layer} (benchopen {a.n})", lambda layer=layer: _quiet_call(
        lambda: layered(opener, a.n, layer))) for layer in ("decode", "collector")]
    rows += [(f"notify engine, native core (benchopen {a.n})",
              lambda: engine(opener, [str(a.n)], "notify")),
             (f"notify engine, pure Python (benchopen {a.n})",
              lambda: engine(opener, [str(a.n)], "notify", native=False)),
             (f"ptrace engine (benchopen {a.n})",
              lambda: engine(opener, [str(a.n)], "ptrace")),
             (f"notify engine, native core (benchuser {n_user})",
              lambda: engine(user, [str(n_user)], "notify")),
             (f"notify engine, pure Python (benchuser {n_user})",
              lambda: engine(user, [str(n_user)], "notify", native=False)),
             (f"ptrace engine (benchuser {n_user})",
              lambda: engine(user, [str(n_user)], "ptrace")),
             (f"attach, native core (benchhttp {a.n}, per syscall stop)",
              lambda: attach_stop(http, a.n)),
             (f"attach, pure Python (benchhttp {a.n}, per syscall stop)",
              lambda: attach_stop(http, a.n, native=False))]
    with tempfile.TemporaryDirectory() as tmp:
        tree = os.path.join(tmp, "tree")
        walk = str(max(1, a.n * 3 // 20))  # 3000 files at the default -n
        with _quiet():
            os.spawnv(os.P_WAIT, str(walker), [str(walker), walk, tree])  # generate
        rows += [(f"notify engine, native core (benchwalk {walk}: every path new)",
                  lambda: engine(walker, [walk, tree], "notify")),
                 (f"notify engine, pure Python (benchwalk {walk})",
                  lambda: engine(walker, [walk, tree], "notify", native=False)),
                 (f"ptrace engine (benchwalk {walk}: every path new)",
                  lambda: engine(walker, [walk, tree], "ptrace"))]
        rows += [(f"{e} engine, stacks on (benchwalk {walk})",
                  lambda e=e: engine(walker, [walk, tree], e, stacks=True))
                 for e in ("notify", "ptrace")]
        if a.only_walk:
            rows = [r for r in rows if "benchwalk" in r[0]]
        print(f"per watched call, median of {a.runs} runs (us); load {os.getloadavg()[0]:.2f}")
        for label, fn in rows:
            print(f"  {label:<60} {statistics.median(fn() for _ in range(a.runs)):7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
