"""Why a program did not start: the one place exec and loader failures are explained.

Two failures look alike to a user (the program "does not exist", exit 127) and have
different causes:

- exec fails (`diagnose_exec`): the kernel refuses the file itself. ENOENT on a file that
  exists means its PT_INTERP names a loader that is not in the root; EACCES, ENOEXEC, a
  foreign architecture, a #! script whose interpreter is missing.
- the loader fails (`diagnose_loader`): the kernel started ld.so, which could not find a
  NEEDED library, printed "error while loading shared libraries" and exited 127. The trace
  itself holds where it looked: the failed opens of that name before the exit. A library
  that is in the root, only outside the loader's search path (e.g. /usr/lib64 of a Debian
  root), is said to be there, with the loader's own wording
  (tracer.binary.loader.outside_search_path), not "not in rootfs".

Each returns a `Diagnosis`; `run` prints its one line, and the trace stores it as a
`diagnosis` line (docs/trace-format.md) so `report` and `matrix` show it too.
"""

from __future__ import annotations

import errno as errno_mod
import os
import posixpath
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracer.binary.rootpath import RootFS
from tracer.errors import CgotraceError, ExitCode
from tracer.sandbox.trees import rootfs_label
from tracer.trace.model import Access, ExitStatus

if TYPE_CHECKING:
    from tracer.binary.loader import LoaderClosure

LOADER_EXIT = 127  # ld.so's status when a NEEDED library cannot be loaded
_LIBC_OF_INTERP = (("ld-musl", "musl"), ("ld-linux", "glibc"))
# glibc's per-CPU subdirectories of each search directory (glibc-hwcaps/x86-64-v3, tls/x86_64..)
_HWCAP_SUBDIR = re.compile(r"/(glibc-hwcaps/[^/]+|tls(/x86_64)*|x86_64(/x86_64)*)$")
_LOOKUP_CALLS = frozenset({"open", "openat", "openat2", "stat", "newfstatat", "statx",
                           "access", "faccessat", "faccessat2"})


@dataclass(frozen=True)
class Diagnosis:
    """Why the program did not start, as one line plus the facts it rests on.

    kind: "missing-interpreter" (PT_INTERP not in the root), "missing-library" (a NEEDED
    library the loader did not find), "exec-failed" (any other exec refusal).
    """

    kind: str
    message: str
    fix: str = ""
    exit_code: int = ExitCode.COMMAND_NOT_FOUND
    missing: str | None = None  # the interpreter path or the library name
    needed_by: str | None = None  # the object whose PT_INTERP / DT_NEEDED named it
    searched: tuple[str, ...] = ()  # where the loader looked (failed opens, in order)
    errno: str | None = None

    @property
    def line(self) -> str:
        """The message and the fix, one line."""
        return f"{self.message}. Fix: {self.fix}" if self.fix else self.message

    def to_dict(self) -> dict[str, Any]:
        """The trace's `diagnosis` line (docs/trace-format.md)."""
        return {"type": "diagnosis", "kind": self.kind, "message": self.message,
                "fix": self.fix, "exit_code": int(self.exit_code), "missing": self.missing,
                "needed_by": self.needed_by, "searched": list(self.searched),
                "errno": self.errno}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Diagnosis:
        return cls(kind=str(d.get("kind", "exec-failed")), message=str(d.get("message", "")),
                   fix=str(d.get("fix") or ""),
                   exit_code=int(d.get("exit_code", ExitCode.COMMAND_NOT_FOUND)),
                   missing=d.get("missing"), needed_by=d.get("needed_by"),
                   searched=tuple(d.get("searched") or ()), errno=d.get("errno"))


# === exec failures ==========================================================================


def diagnose_exec(root: Path | None, program_in_root: str, err: int,
                  program_host: Path | None = None) -> Diagnosis:
    """Why execve(program_in_root) failed with `err` inside `root` (None: this system)."""
    where = f"rootfs {rootfs_label(root)}" if root is not None else "this system"
    strerr = os.strerror(err)
    name = errno_mod.errorcode.get(err, str(err))
    code = ExitCode.COMMAND_NOT_FOUND if err == errno_mod.ENOENT else ExitCode.CANNOT_EXECUTE

    def failed(message: str, fix: str = "", kind: str = "exec-failed",
               missing: str | None = None) -> Diagnosis:
        return Diagnosis(kind=kind, message=message, fix=fix, exit_code=code,
                         missing=missing, needed_by=program_in_root if missing else None,
                         errno=name)

    if program_host is None:
        program_host = RootFS(root).locate(program_in_root) if root else Path(program_in_root)
    try:
        st = program_host.stat()
    except OSError:
        return failed(f"{program_in_root} does not exist in {where}: exec fails with '{strerr}'")
    if stat.S_ISDIR(st.st_mode):
        return failed(f"{program_in_root} is a directory: exec fails with '{strerr}'")
    if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o111:
        return failed(f"{program_in_root} is not executable (mode "
                      f"{stat.filemode(st.st_mode)}): permission denied at exec", "chmod +x")
    head = _read_head(program_host)
    if head.startswith(b"#!"):
        interp = _script_interpreter(head)
        if interp and not _exists_in(root, interp):
            return failed(f"{program_in_root} is a script for {interp} (named by #!), which "
                          f"is not in {where}: exec fails with '{strerr}'",
                          kind="missing-interpreter", missing=interp)
        return failed(f"exec {program_in_root} (a #! script for {interp or '?'}) failed in "
                      f"{where}: {strerr}")
    from tracer.binary.elf import ElfImage

    try:
        img = ElfImage.open(program_host)
    except CgotraceError as e:
        return failed(f"{program_in_root} is not a runnable ELF file ({e.message}): exec "
                      f"format error")
    if img.machine != "EM_X86_64" or img.elfclass != 64:
        return failed(f"{program_in_root} is built for the wrong architecture ({img.machine}, "
                      f"{img.elfclass}-bit): exec format error", "build with GOARCH=amd64")
    pt_interp = img.interpreter
    if pt_interp is not None and not _exists_in(root, pt_interp):
        libc = next((lib for key, lib in _LIBC_OF_INTERP if key in pt_interp), None)
        return failed(f"interpreter {pt_interp} (named by PT_INTERP) is not in {where}: exec "
                      f"fails with '{strerr}'", _interp_fix(libc),
                      kind="missing-interpreter", missing=pt_interp)
    if err == errno_mod.EACCES:
        return failed(f"{program_in_root}: permission denied at exec (mode "
                      f"{stat.filemode(st.st_mode)}; a noexec mount?)")
    return failed(f"exec {program_in_root} failed in {where}: {name} ({strerr})")


def _interp_fix(libc: str | None) -> str:
    if libc == "musl":
        return ("use a musl (Alpine) base image, or build statically "
                "(CC=musl-gcc -ldflags '-linkmode external -extldflags -static') "
                "or with CGO_ENABLED=0")
    # what else fits depends on the binary's cgo packages and NEEDED libraries: the
    # missing-interpreter finding (probes/checks.start_fix_values) derives that, and run
    # and matrix print its fix in place of this one
    return ("use a glibc base image with the program's NEEDED libraries, or, when its only "
            "cgo is net and os/user, build with CGO_ENABLED=0 (the missing-interpreter "
            "finding says what fits this binary)")


def _script_interpreter(head: bytes) -> str:
    line = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    return line.split()[0] if line else ""


def _read_head(p: Path) -> bytes:
    try:
        with open(p, "rb") as f:
            return f.read(256)
    except OSError:
        return b""


def _exists_in(root: Path | None, path: str) -> bool:
    if root is None:
        return os.path.exists(path)
    try:
        return RootFS(root).locate(path).exists()
    except CgotraceError:
        return False


# === loader failures ========================================================================


def diagnose_loader(status: ExitStatus, accesses: Sequence[Access],
                    closure: LoaderClosure | None,
                    program_in_root: str, root: Path | None = None) -> Diagnosis | None:
    """A NEEDED library ld.so could not load, when the run ended the way that ends (exit
    127, before the program's own code ran); None otherwise.

    The library and its requester come from the static closure resolved in the root
    (`LoaderClosure.missing`), or, without one, from the trace's failed library opens;
    where the loader looked comes from the trace's own ENOENT accesses of that name.
    """
    if status.code != LOADER_EXIT:
        return None
    candidates = _missing_from_closure(closure) or _missing_from_trace(accesses)
    if not candidates:
        return None
    name, needed_by, static_dirs, outside = candidates[0]
    searched = _searched(name, accesses) or tuple(
        posixpath.join(d, name) for d in static_dirs)
    looked = f"the loader looked in {_places(searched)} and exited 127 ('error while " \
             "loading shared libraries')"
    requester = needed_by or program_in_root
    if outside is not None:  # in the root, where this loader never looks
        what, fix = outside
        message = f"{name} (NEEDED by {requester}) is {what}: {looked}"
    else:
        where = f"rootfs {rootfs_label(root)}" if root is not None else "this system"
        message = f"{name} (NEEDED by {requester}) is not in {where}: {looked}"
        fix = _library_fix(name)
    return Diagnosis(kind="missing-library", message=message, fix=fix,
                     exit_code=LOADER_EXIT, missing=name, needed_by=requester,
                     searched=searched)


_Missing = tuple[str, str | None, tuple[str, ...], tuple[str, str] | None]


def _missing_from_closure(closure: LoaderClosure | None) -> list[_Missing]:
    """(name, needed by, searched, (what, fix) when present outside the search path)."""
    if closure is None:
        return []
    from tracer.binary.loader import outside_search_path

    return [(lib.name, lib.needed_by, tuple(lib.searched),
             outside_search_path(lib, closure.flavor, closure.search_path))
            for lib in closure.missing]


def _missing_from_trace(accesses: Iterable[Access]) -> list[_Missing]:
    found: set[str] = set()
    failed: list[str] = []
    for a in accesses:
        if a.kind not in ("startup-library", "dlopen-library"):
            continue
        base = posixpath.basename(a.path)
        if a.result == "ok":
            found.add(base)
        elif a.result == "ENOENT" and base not in failed:
            failed.append(base)
    return [(name, None, (), None) for name in failed if name not in found]


def _searched(name: str, accesses: Iterable[Access]) -> tuple[str, ...]:
    out: list[str] = []
    for a in accesses:
        if (a.result == "ENOENT" and a.syscall in _LOOKUP_CALLS
                and posixpath.basename(a.path) == name and a.path not in out):
            out.append(a.path)
    return tuple(out)


def _places(searched: Sequence[str]) -> str:
    """Where the loader looked, folded to the directories of its search path: glibc tries
    glibc-hwcaps/ and tls/ subdirectories of each (the trace keeps every path)."""
    if not searched:
        return "no directory (nothing was tried)"
    dirs: list[str] = []
    for path in searched:
        d = _HWCAP_SUBDIR.sub("", posixpath.dirname(path)) or "/"
        if d not in dirs:
            dirs.append(d)
    extra = " and their subdirectories" if len(dirs) < len(searched) else ""
    n = len(searched)
    return f"{', '.join(dirs)}{extra} ({n} place{'s' if n != 1 else ''})"


def _library_fix(name: str) -> str:
    """Copy it from this host (where this host's own loader finds it), or install it."""
    from tracer.binary.loader import resolve_libraries

    lookup = resolve_libraries([name]).libraries[0]
    host = lookup.path if lookup.found and lookup.via != "interpreter" else None
    copy = (f"add it to the image (this host has it: COPY {host} {posixpath.dirname(host)}/, "
            f"or install the package that ships {name})") if host else \
        f"install the package that ships {name} in the image"
    return f"{copy}, or link that library statically"
