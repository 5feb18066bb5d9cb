"""`cgotrace slim` without running anything: copying paths with their symlink chains, the
plan read from a trace (what is copied, what is left to the program), the comparison behind
the proof, and the one-line refusals of bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from probes.analysis import analyze
from tracer.commands.slim import (
    CommandProof,
    OriginalRun,
    Plan,
    compare,
    plan_root,
)
from tracer.sandbox import slimroot
from tracer.trace.model import Access, AccessKind, ExitStatus
from tracer.trace.recorder import Trace, TraceWriter

BINARY = "/build/app"


def _file(root: Path, path: str, text: str = "x") -> None:
    p = root / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def source_root(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    _file(src, "/usr/lib/x86_64-linux-gnu/libc.so.6", "libc")
    _file(src, "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "ld")
    _file(src, "/usr/lib/x86_64-linux-gnu/libcap.so.2.66", "cap")
    os.symlink("libcap.so.2.66", src / "usr/lib/x86_64-linux-gnu/libcap.so.2")
    os.symlink("usr/lib", src / "lib")
    (src / "usr/lib64").mkdir()
    os.symlink("usr/lib64", src / "lib64")
    os.symlink("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
               src / "usr/lib64/ld-linux-x86-64.so.2")
    _file(src, "/etc/passwd", "root:x:0:0::/:/bin/sh\n")
    _file(src, "/etc/unused", "never read")
    os.symlink("../../../../../../etc/shadow", src / "etc/escape")  # must stay inside
    return src


def test_copy_path_recreates_every_link_of_a_chain(tmp_path: Path) -> None:
    src, dst = source_root(tmp_path), tmp_path / "dst"
    dst.mkdir()
    assert slimroot.copy_path(src, dst, "/lib64/ld-linux-x86-64.so.2")
    assert slimroot.copy_path(src, dst, "/lib/x86_64-linux-gnu/libcap.so.2")
    assert os.readlink(dst / "lib64") == "usr/lib64"
    assert os.readlink(dst / "usr/lib64/ld-linux-x86-64.so.2") == \
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    assert os.readlink(dst / "lib") == "usr/lib"
    assert (dst / "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2").read_text() == "ld"
    assert os.readlink(dst / "usr/lib/x86_64-linux-gnu/libcap.so.2") == "libcap.so.2.66"
    assert (dst / "usr/lib/x86_64-linux-gnu/libcap.so.2.66").read_text() == "cap"
    files = {e.path for e in slimroot.walk(dst) if e.type != "dir"}
    assert files == {"/lib", "/lib64", "/usr/lib64/ld-linux-x86-64.so.2",
                     "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                     "/usr/lib/x86_64-linux-gnu/libcap.so.2",
                     "/usr/lib/x86_64-linux-gnu/libcap.so.2.66"}


def test_copy_path_never_leaves_the_source_root(tmp_path: Path) -> None:
    src, dst = source_root(tmp_path), tmp_path / "dst"
    dst.mkdir()
    # ../../.. stops at the source root, where there is no /etc/shadow
    assert not slimroot.copy_path(src, dst, "/etc/escape")
    assert os.path.islink(dst / "etc/escape") and not (dst / "etc/shadow").exists()
    assert not slimroot.copy_path(src, dst, "/no/such/file")


def acc(seq: int, path: str, result: str = "ok", kind: AccessKind = AccessKind.CONFIG,
        syscall: str = "openat", flags: str | None = "O_RDONLY|O_CLOEXEC") -> Access:
    return Access(seq=seq, time=0.0, pid=1, tid=1, syscall=syscall, path=path, result=result,
                  kind=kind, flags=flags)


def run_of(accesses: list[Access], code: int = 0, findings_root: str = "/r") -> OriginalRun:
    header = {"argv": [BINARY], "binary": BINARY, "binary_realpath": BINARY,
              "static": {"rootfs": findings_root}, "cwd": "/"}
    exit = ExitStatus(code=code).to_dict()
    trace = Trace(header=header, accesses=accesses, exit=exit)
    return OriginalRun("t.jsonl", trace, analyze(header, accesses, exit=exit))


ORIGINAL = [
    acc(1, "/.cgotrace/app", kind=AccessKind.EXECUTABLE, syscall="execve", flags=None),
    acc(2, "/lib64/ld-linux-x86-64.so.2", kind=AccessKind.INTERPRETER, syscall="execve",
        flags="PT_INTERP"),
    acc(3, "/etc/ld.so.cache", kind=AccessKind.CONFIG),
    acc(4, "/lib/x86_64-linux-gnu/libc.so.6", kind=AccessKind.STARTUP_LIBRARY),
    acc(5, "/proc/self/maps", kind=AccessKind.RUNTIME),
    acc(6, "/etc/passwd"),
    acc(7, "/var/cache/app/state", "ENOENT"),
    acc(8, "/var/cache/app/state", flags="O_WRONLY|O_CREAT|O_TRUNC"),  # made by the program
    acc(9, "/var/cache/app/state"),
    acc(10, "/etc/app.d", kind=AccessKind.PROBE, syscall="newfstatat", flags=None),
    acc(11, "/tmp/app.lock", flags="O_RDWR|O_CREAT"),
    acc(12, "/etc/missing.conf", "ENOENT"),
]


def test_plan_copies_what_existed_and_leaves_what_the_run_made() -> None:
    plan = plan_root([run_of(ORIGINAL)])
    assert sorted(plan.copy) == ["/etc/app.d", "/etc/ld.so.cache", "/etc/passwd",
                                 "/lib/x86_64-linux-gnu/libc.so.6",
                                 "/lib64/ld-linux-x86-64.so.2"]
    assert list(plan.left) == ["/var/cache/app/state"]
    assert "/var/cache/app" in plan.dirs  # the program writes into it: it must exist
    assert plan.ld_cache and plan.tmp
    assert plan.library_dirs == ["/lib64", "/lib/x86_64-linux-gnu"]


def test_a_later_run_that_reads_a_file_first_keeps_it() -> None:
    second = [acc(1, "/var/cache/app/state")]  # existed before this run: part of the root
    plan = plan_root([run_of(ORIGINAL), run_of(second)])
    assert "/var/cache/app/state" in plan.copy and "/var/cache/app/state" not in plan.left


def test_compare_names_lost_paths_new_findings_and_first_uses(tmp_path: Path) -> None:
    before = run_of(ORIGINAL)
    plan = plan_root([before])
    after_accesses = [
        acc(1, "/.cgotrace/app", kind=AccessKind.EXECUTABLE, syscall="execve", flags=None),
        acc(2, "/etc/passwd", "ENOENT"),  # opened before: lost
        acc(3, "/etc/extra.conf", "ENOENT"),  # never used before
        acc(4, "/etc/ld.so.cache"),
    ]
    after = run_of(after_accesses)
    proof = CommandProof(argv=[BINARY], exit_before=0, exit_after=0)
    compare(before, after.trace, after.analysis, proof, plan, tmp_path)
    assert [(x.path, x.before, x.after) for x in proof.lost] == [("/etc/passwd", "ok", "ENOENT")]
    assert "copied, yet it fails here" in proof.lost[0].why
    assert proof.first_used == ["/etc/extra.conf (ENOENT)"]
    assert not proof.proven
    plan.not_in_source.add("/etc/passwd")
    proof = CommandProof(argv=[BINARY], exit_before=0, exit_after=0)
    compare(before, after.trace, after.analysis, proof, plan, tmp_path)
    assert proof.lost[0].why.startswith(f"not in the source root {tmp_path}")


def test_same_accesses_and_status_are_proven(tmp_path: Path) -> None:
    before = run_of(ORIGINAL)
    proof = CommandProof(argv=[BINARY], exit_before=0, exit_after=0)
    compare(before, before.trace, before.analysis, proof, Plan(), tmp_path)
    assert proof.proven and not proof.lost and not proof.new_findings
    assert not CommandProof(argv=[BINARY], exit_before=0, exit_after=1).proven


# === the command line: one line and a documented exit code for bad input ==================


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tracer", "slim", *args], capture_output=True,
                          text=True)


def write_trace(path: Path, binary: str, rootfs: str | None = None) -> str:
    from tracer.binary.factcache import build_id

    with TraceWriter(str(path)) as w:
        w.header(argv=[binary], binary=binary, static={"rootfs": rootfs},
                 binary_realpath=binary, binary_id=build_id(binary))
        w.exit(ExitStatus(code=0))
    return str(path)


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_no_such_trace_is_exit_4(tmp_path: Path) -> None:
    r = cli("--trace", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "out"))
    assert r.returncode == 4
    assert one_line(r) == f"cgotrace: trace {tmp_path / 'nope.jsonl'}: no such file"


def test_traces_of_different_binaries_are_exit_3(tmp_path: Path) -> None:
    a = write_trace(tmp_path / "a.jsonl", "/bin/true")
    b = write_trace(tmp_path / "b.jsonl", "/bin/false")
    r = cli("--trace", a, "--trace", b, "-o", str(tmp_path / "out"))
    assert r.returncode == 3
    assert "trace different binaries (/bin/true, /bin/false)" in one_line(r)


def test_a_root_that_is_gone_is_exit_4(tmp_path: Path) -> None:
    a = write_trace(tmp_path / "a.jsonl", "/bin/true", rootfs=str(tmp_path / "gone"))
    r = cli("--trace", a, "-o", str(tmp_path / "out"))
    assert r.returncode == 4
    assert f"rootfs {tmp_path / 'gone'}: no such directory" in one_line(r)
    r = cli("--trace", a, "--rootfs", str(tmp_path / "gone2"), "-o", str(tmp_path / "out2"))
    assert r.returncode == 4 and "no such directory" in one_line(r)


def test_not_a_trace_is_exit_3(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("hello\n")
    r = cli("--trace", str(bad), "-o", str(tmp_path / "out"))
    assert r.returncode == 3 and "not a cgotrace trace" in one_line(r)


@pytest.mark.parametrize("args", [
    ["-o", "OUT"],  # neither traces nor a program
    ["--trace", "T", "-o", "OUT", "--", "/bin/true"],  # both
    ["--trace", "T"],  # no --output-dir
])
def test_usage_errors_are_exit_2(tmp_path: Path, args: list[str]) -> None:
    t = write_trace(tmp_path / "t.jsonl", "/bin/true")
    r = cli(*[t if a == "T" else str(tmp_path / "out") if a == "OUT" else a for a in args])
    assert r.returncode == 2
    one_line(r)


def test_a_non_empty_output_dir_is_refused(tmp_path: Path) -> None:
    t = write_trace(tmp_path / "t.jsonl", "/bin/true")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = cli("--trace", t, "-o", str(out))
    assert r.returncode == 2 and "not an empty directory" in one_line(r)
    assert (out / "keep.txt").read_text() == "mine"


def test_slim_is_listed_in_help() -> None:
    r = subprocess.run([sys.executable, "-m", "tracer", "--help"], capture_output=True,
                       text=True)
    assert "slim" in r.stdout
