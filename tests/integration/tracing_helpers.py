"""Helpers for tests that trace real programs: run under the tracer, under strace, build C."""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import ipaddress
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
    if not out.exists():  # private names: two pytest-xdist workers may build it at once
        C_CACHE.mkdir(parents=True, exist_ok=True)
        src = C_CACHE / f"prog-{digest}.{os.getpid()}.c"
        src.write_text(source)
        tmp = C_CACHE / f"prog-{digest}.{os.getpid()}.tmp"
        try:
            subprocess.run(["gcc", "-O1", "-o", str(tmp), str(src), "-pthread", *flags],
                           check=True)
            os.replace(tmp, out)
        finally:
            src.unlink(missing_ok=True)
            tmp.unlink(missing_ok=True)
    return out


_LINE = re.compile(r"^(?P<pid>\d+)\s+(?P<rest>.*)$")
_CALL = re.compile(r"^(?P<name>\w+)\((?P<args>.*)\)\s+=\s+(?P<ret>-?\d+|\?)(?P<tail>.*)$")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_FD_ANNOT = re.compile(r"^(?:-?\d+|AT_FDCWD)<([^>]*)>")
# what each watched call's path argument is, as cgotrace records it (tracer/syscalls/table.py)
PATH_CALLS = frozenset({*OPEN_CALLS, *EXEC_CALLS, "stat", "lstat", "newfstatat", "statx",
                        "access", "faccessat", "faccessat2", "readlink", "readlinkat"})
DIRFD_CALLS = frozenset({"openat", "openat2", "execveat", "newfstatat", "statx", "faccessat",
                         "faccessat2", "readlinkat"})
Call = tuple[str, str, str]  # (syscall, absolute path or socket address, ok|errno|unknown)


def _decode(s: str) -> str:
    return codecs.escape_decode(s.encode())[0].decode("utf-8", "surrogateescape")


def _sockaddr(args: str) -> str | None:
    """connect's address as cgotrace writes it (tracer/syscalls/decode.py sockaddr); None
    for AF_UNSPEC, which cgotrace does not record."""
    fam = re.search(r"sa_family=(AF_\w+|\d+)", args)
    if fam is None or fam.group(1) == "AF_UNSPEC":
        return None
    family = fam.group(1)
    if family == "AF_UNIX":
        m = re.search(r'sun_path=(@?)"((?:[^"\\]|\\.)*)"', args)
        return (m.group(1) + _decode(m.group(2))) if m else "(unnamed)"
    if family == "AF_INET":
        port = re.search(r"sin_port=htons\((\d+)\)", args)
        addr = re.search(r'inet_addr\("([^"]+)"\)', args)
        assert port and addr, args
        return f"{addr.group(1)}:{port.group(1)}"
    if family == "AF_INET6":
        port = re.search(r"sin6_port=htons\((\d+)\)", args)
        addr = re.search(r'inet_pton\(AF_INET6, "([^"]+)"', args)
        assert port and addr, args
        return f"[{ipaddress.IPv6Address(addr.group(1))}]:{port.group(1)}"
    if family == "AF_NETLINK":
        m = re.search(r"nl_pid=(\d+), nl_groups=([0-9a-fx]+)", args)
        assert m, args
        return f"netlink:pid={m.group(1)},groups={int(m.group(2), 16)}"
    return f"family {family}"


def _one_spelling(path: str) -> str:
    """The spelling docs/trace-format.md promises for a recorded path: runs of slashes
    become one and `.` components go; `..` and a trailing slash (also `/.`) stay."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts:
        return "/"
    trail = "/" if path.endswith(("/", "/.")) else ""
    return "/" + "/".join(parts) + trail


def _path(name: str, args: str, cwd: str) -> str | None:
    """The absolute path of a path call, resolved as cgotrace does (tracer/recording/
    entry.py): against the dirfd's -y annotation or the cwd, in one spelling; None for an
    fstat-style AT_EMPTY_PATH call, which cgotrace does not record."""
    path = _unspelled_path(name, args, cwd)
    return _one_spelling(path) if path is not None and path.startswith("/") else path


def _unspelled_path(name: str, args: str, cwd: str) -> str | None:
    s = _STRING.search(args)
    if s is None:
        return None
    path = _decode(s.group(1))
    if not path:
        if "AT_EMPTY_PATH" not in args[s.end():]:
            return "(empty)"
        if name not in EXEC_CALLS:
            return None
    elif path.startswith("/"):
        return path
    base = cwd
    if name in DIRFD_CALLS:
        a = _FD_ANNOT.match(args)
        if a:
            base = a.group(1)
    rel = path
    while rel.startswith("./"):
        rel = rel[2:]
    return base if rel in ("", ".") else base.rstrip("/") + "/" + rel


def _record(name: str, args: str, ret: str, tail: str, cwd: str) -> Call | None:
    if name == "connect":
        path = _sockaddr(args)
    elif name in PATH_CALLS:
        path = _path(name, args, cwd)
    else:
        return None
    if path is None:
        return None
    if ret == "?":
        result = "unknown"
    elif int(ret) >= 0:
        result = "ok"
    else:
        e = re.search(r"\b(E[A-Z0-9]+)\b", tail)
        result = e.group(1) if e else "E?"
    return (name, path, result)


def parse_strace_calls(text: str, cwd: str) -> list[Call]:
    """Every watched call of `strace -f -y` output, in order, repeats included.

    Joins `<unfinished ...>` with `<... resumed>` lines per pid (a call never resumed: the
    thread died in it, result "unknown", as cgotrace flushes it), drops calls interrupted
    to be restarted (ERESTART*: the restarted call is its own line, and cgotrace reports it
    once), resolves relative paths against the dirfd annotation (-y) or cwd, and maps
    results to ok/errno/unknown.
    """
    pending: dict[str, str] = {}
    out: list[Call] = []

    def add(rest: str) -> None:
        c = _CALL.match(rest)
        if c is None:
            return
        if c.group("ret") == "?" and "ERESTART" in c.group("tail"):
            return
        rec = _record(c.group("name"), c.group("args"), c.group("ret"), c.group("tail"), cwd)
        if rec is not None:
            out.append(rec)

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
            if rest.startswith("+++") and pid in pending:  # died inside the call
                add(pending.pop(pid) + ") = ?")
            continue
        add(rest)
    for head in pending.values():
        add(head + ") = ?")
    return out


def parse_strace(text: str, cwd: str) -> set[Call]:
    """The set of (syscall, path, result) of parse_strace_calls."""
    return set(parse_strace_calls(text, cwd))


def strace_calls(argv: list[str], cwd: str, tmp: Path) -> list[Call]:
    """The watched calls of one run of argv under `strace -f` in a fresh network namespace."""
    log = tmp / "strace.log"
    cmd = ["unshare", "--net", "strace", "-f", "-qq", "-y", "-s", "4096", "-o", str(log),
           "-e", f"trace={WATCHED}", "-e", "signal=none", *argv]
    subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=120)
    return parse_strace_calls(log.read_text(errors="replace"), cwd)


def strace_set(argv: list[str], cwd: str, tmp: Path) -> set[Call]:
    return set(strace_calls(argv, cwd, tmp))


def traced_calls(accesses: list[Access], observed_only: bool = False) -> list[Call]:
    """(syscall, path, result) of every recorded call, a record's repeats included (the
    interpreter record, synthesised from the exec, left out); `observed_only`: only calls
    whose result the tracer saw."""
    out: list[Call] = []
    for a in accesses:
        if a.flags == "PT_INTERP":
            continue
        seen = int(a.observed) + a.repeats - a.repeats_unobserved
        out += [(a.syscall, a.path, a.result)] * (seen if observed_only else a.calls)
    return out


def traced_set(accesses: list[Access]) -> set[Call]:
    return set(traced_calls(accesses))


def wait_for(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `pred` every 20 ms until it holds (True) or `timeout` seconds pass (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False
