"""Ways to get a first sighting's result, measured (bench/alternatives.c; bench/README.md,
"Results without a second round trip").

`python -m bench.alternatives [--runs 3] [-n 20000]` builds bench/alternatives.c with gcc,
runs each tracing mode on a loop of raw newfstatat calls (`new`: every path distinct, every
other one existing; `same`: one path every time) and prints, per mode and loop: the loop's
microseconds per call (median of --runs), the tracer's kernel requests per call, and
whether the (path, result) records equal strace's for the same loop (strace -f -e
trace=newfstatat on the untraced loop: the oracle, as in tests/).
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import shutil
import statistics
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

MODES = ("none", "notify-continue", "trace-1stop", "notify-upgrade", "trace-2stop",
         "notify-killable")
_STRACE = re.compile(r'newfstatat\(AT_FDCWD, "([^"]+)", .*\) = (-?\d+)(?: (E[A-Z0-9]+))?')


def build(out: Path) -> Path:
    exe = out / "alternatives"
    src = Path(__file__).with_name("alternatives.c")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(src)], check=True)
    return exe


def tree(root: Path, n: int) -> Path:
    """DIR with f-0, f-2, ... (every other path of the `new` loop exists)."""
    d = root / "tree"
    d.mkdir()
    for i in range(0, n, 2):
        (d / f"f-{i}").touch()
    return d


def records(path: Path) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for line in path.read_text().splitlines():
        p, _, r = line.partition("\t")
        out[(p, r)] += 1
    return out


def oracle(exe: Path, loop: str, n: int, d: Path, tmp: Path) -> Counter[tuple[str, str]]:
    """strace's (path, result) records of the untraced loop (raw errno as -E)."""
    log = tmp / f"strace-{loop}"
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=newfstatat", "-o", str(log), str(exe),
                    "none", loop, str(n), str(d), str(tmp / "unused")], check=True,
                   stdout=subprocess.DEVNULL)
    out: Counter[tuple[str, str]] = Counter()
    for line in log.read_text().splitlines():
        m = _STRACE.search(line)
        if m and m.group(1).startswith(str(d) + "/"):
            rv = int(m.group(2))
            if rv == -1 and m.group(3):
                rv = -getattr(errno, m.group(3))
            out[(m.group(1), str(rv))] += 1
    return out


def run(exe: Path, mode: str, loop: str, n: int, d: Path, rec: Path) -> tuple[float, float]:
    got = subprocess.run([str(exe), mode, loop, str(n), str(d), str(rec)], check=True,
                         capture_output=True, text=True, timeout=300).stdout.split()
    return float(got[3]), float(got[4])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.alternatives")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("-n", type=int, default=20000)
    a = ap.parse_args(argv)
    if shutil.which("gcc") is None or shutil.which("strace") is None:
        print("bench.alternatives needs gcc and strace")
        return 2
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        exe, d = build(tmp), tree(tmp, a.n)
        print(f"per call, median of {a.runs} runs; load {os.getloadavg()[0]:.2f}")
        print(f"{'mode':<16} {'loop':<5} {'us/call':>8} {'requests/call':>14}  equals strace")
        for loop in ("new", "same"):
            want = oracle(exe, loop, a.n, d, tmp)
            for mode in MODES:
                times, reqs, equal = [], [], True
                for i in range(a.runs):
                    rec = tmp / f"rec-{mode}-{loop}-{i}"
                    us, rq = run(exe, mode, loop, a.n, d, rec)
                    times.append(us)
                    reqs.append(rq)
                    equal = equal and (mode == "none" or records(rec) == want)
                same = "-" if mode == "none" else ("yes" if equal else "no")
                print(f"{mode:<16} {loop:<5} {statistics.median(times):8.2f} "
                      f"{statistics.median(reqs):14.2f}  {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
