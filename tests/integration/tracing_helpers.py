"""Helpers for tests that trace real programs: run under the tracer, under strace, build C."""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests import preflight
from tracer.commands.run import RunOptions, RunResult, trace_program
from tracer.trace.model import Access, Repeats

ROOT = Path(__file__).resolve().parents[2]
C_CACHE = ROOT / ".cache" / "ctests"
OPEN_CALLS = ("open", "openat", "openat2", "creat")
EXEC_CALLS = ("execve", "execveat")
WATCHED = ("open,openat,openat2,creat,execve,execveat,connect,stat,lstat,newfstatat,statx,"
           "access,faccessat,faccessat2,readlink,readlinkat")


def private_netns() -> None:
    """child_setup for tests: a network namespace with nothing up (no route anywhere)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")


def trace(argv: list[str], netns: bool = True, **kw: object) -> tuple[RunResult, list[Access]]:
    """Run under the tracer; the access records as a reader of its trace gets them (with
    their repeats: count calls with `Access.calls`)."""
    got: list[Access] = []
    totals: dict[int, Repeats] = {}

    def on_repeats(a: Access, total: Repeats, added: Repeats) -> None:
        totals[a.seq] = total

    result = trace_program(RunOptions(argv=argv, child_setup=private_netns if netns else None,
                                      forward_signals=False, on_access=got.append,
                                      on_repeats=on_repeats, **kw))  # type: ignore[arg-type]
    return result, with_repeats(got, totals)


def with_repeats(accesses: list[Access], totals: dict[int, Repeats]) -> list[Access]:
    """Each access with the last repeats totals reported for it."""
    out = []
    for a in accesses:
        r = totals.get(a.seq)
        out.append(a if r is None else dataclasses.replace(
            a, repeats=r.count, repeats_unobserved=r.unobserved, last_time=r.last_time))
    return out


def cgotrace_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tracer", *args]


def compile_c(source: str, *flags: str) -> Path:
    """Build a small C program with gcc (cached by source+flags); skips without gcc."""
    preflight.require("gcc")
    digest = hashlib.sha256((source + "\0".join(flags)).encode()).hexdigest()[:16]
    out = C_CACHE / f"prog-{digest}"
    if not out.exists():
        C_CACHE.mkdir(parents=True, exist_ok=True)
        src = C_CACHE / f"prog-{digest}.c"
        src.write_text(source)
        tmp = out.with_suffix(".tmp")
        subprocess.run(["gcc", "-O1", "-o", str(tmp), str(src), "-pthread", *flags],
                       check=True)
        os.replace(tmp, out)
    return out


_LINE = re.compile(r"^(?P<pid>\d+)\s+(?P<rest>.*)$")
_CALL = re.compile(r"^(?P<name>\w+)\((?P<args>.*)\)\s+=\s+(?P<ret>-?\d+|\?)(?P<tail>.*)$")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_FD_ANNOT = re.compile(r"^(?:-?\d+|AT_FDCWD)<([^>]*)>")


def parse_strace(text: str, cwd: str) -> set[tuple[str, str, str]]:
    """(class, absolute path, result) for open/exec calls in `strace -f -y` output.

    Joins `<unfinished ...>` with `<... resumed>` lines per pid, resolves relative paths
    against the dirfd annotation (-y) or cwd, and maps results to ok/errno/unknown.
    """
    pending: dict[str, str] = {}
    out: set[tuple[str, str, str]] = set()
    for raw in text.splitlines():
        m = _LINE.match(raw)
        if not m:
            continue
        pid, rest = m.group("pid"), m.group("rest")
        changed = re.search(r"<pid changed to (\d+) \.\.\.>$", rest)
        if changed:  # exec from a non-leader thread: resumed under the leader's pid
            pending[changed.group(1)] = rest[: changed.start()].rstrip()
            continue
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[: -len("<unfinished ...>")].rstrip()
            continue
        if rest.startswith("<... "):
            head = pending.pop(pid, None)
            if head is None:
                continue
            rest = head + rest.split("resumed>", 1)[1]
        sup = re.match(r"^\+\+\+ superseded by execve in pid (\d+)", rest)
        if sup:  # exec from a non-leader thread: strace re-keys it to the leader, as we do
            if sup.group(1) in pending:
                pending[pid] = pending.pop(sup.group(1))
            continue
        if rest.startswith("+++") or rest.startswith("---"):
            continue
        c = _CALL.match(rest)
        if not c:
            if re.match(r"^(\w+)\(", rest) and rest.rstrip().endswith("= ?"):
                c = None  # killed before returning: handled below
            continue
        name = c.group("name")
        if name in OPEN_CALLS:
            cls = "open"
        elif name in EXEC_CALLS:
            cls = "exec"
        else:
            continue
        args = c.group("args")
        s = _STRING.search(args)
        if s is None:
            continue
        path = codecs.escape_decode(s.group(1).encode())[0].decode("utf-8", "surrogateescape")
        if not path.startswith("/"):
            base = cwd
            if name in ("openat", "openat2", "execveat"):
                a = _FD_ANNOT.match(args)
                if a:
                    base = a.group(1)
            path = (base.rstrip("/") + "/" + path.removeprefix("./")) if path not in ("", ".") \
                else base
        ret = c.group("ret")
        if ret == "?":
            result = "unknown"
        elif int(ret) >= 0:
            result = "ok"
        else:
            e = re.search(r"\b(E[A-Z0-9]+)\b", c.group("tail"))
            result = e.group(1) if e else "E?"
        out.add((cls, path, result))
    return out


def strace_set(argv: list[str], cwd: str, tmp: Path) -> set[tuple[str, str, str]]:
    log = tmp / "strace.log"
    cmd = ["unshare", "--net", "strace", "-f", "-qq", "-y", "-s", "4096", "-o", str(log),
           "-e", f"trace={WATCHED}", "-e", "signal=none", *argv]
    subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=120)
    return parse_strace(log.read_text(errors="replace"), cwd)


def traced_set(accesses: list[Access]) -> set[tuple[str, str, str]]:
    out = set()
    for a in accesses:
        if a.flags == "PT_INTERP":
            continue  # synthesised from the exec, not a syscall of its own
        if a.syscall in OPEN_CALLS:
            out.add(("open", a.path, a.result))
        elif a.syscall in EXEC_CALLS:
            out.add(("exec", a.path, a.result))
    return out


def wait_for(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `pred` every 20 ms until it holds (True) or `timeout` seconds pass (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False
