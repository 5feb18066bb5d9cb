"""`cgotrace slim`: the smallest root that holds a program and exactly the files its runs
used, and the proof that it works (docs/slim.md).

1. The runs: traces given with `--trace` (one binary, one root), or one run of the program
   traced here first (`-- PROGRAM ARGS`, in `--rootfs`/`--image` or on the host).
2. The plan, from every access of every run: each path that existed when the run first
   touched it and that it used successfully (open, exec, stat, readlink...) is copied
   from the source root with its symlink chain; a path the run created (first looked for
   and not found, then there; or opened for writing) is left to the program, its
   directory kept; the sandbox's own mounts (/proc, /sys, /dev, /run, /tmp) are not
   copied (/tmp is kept as an empty directory when a run used it). The loader cache is
   regenerated for the new root (`ldconfig -r`), not copied. The binary goes to
   `/usr/local/bin/<name>`.
3. The proof: each run's command again, in the new root, under cgotrace; compared with the
   original: same exit status, no path that opened before fails now, no new finding.
   When it fails, each lost path says why (first used only in the proof run; created at
   run time by the original run; no package owns it: made by a package script).

The new root covers the code paths these runs exercised, no more: the verdict says so.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracer.errors import BadBinaryError, CgotraceError, ExitCode, NotFoundError
from tracer.trace.model import Access, AccessKind

if TYPE_CHECKING:
    from probes.records import Analysis
    from tracer.sandbox.slimroot import TreeEntry
    from tracer.trace.recorder import Trace

SCHEMA_ID = "cgotrace-slim/1"
BIN_DIR = "/usr/local/bin"
# Mounted by the sandbox (and by container engines): never copied from the source root.
SANDBOX_MOUNTS = ("/proc", "/sys", "/dev", "/run", "/tmp", "/.cgotrace")
_ABSENT = ("ENOENT", "ENOTDIR")
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")
SCOPE = ("The slim root covers the code paths these runs exercised, no more: another "
         "input, flag, environment or failure path may need files it lacks.")


@dataclass
class SlimOptions:
    traces: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)  # run mode: trace this command first
    rootfs: str | None = None
    image: str | None = None
    output_dir: str = ""
    tar: str | None = None
    dockerfile: str | None = None
    network: str | None = None  # for the runs slim makes (as `run --network`)
    traces_dir: str | None = None  # keep the traces slim writes (run mode, proof runs)


@dataclass
class OriginalRun:
    """One run the root must serve: its trace and what was found in it."""

    trace_path: str
    trace: Trace
    analysis: Analysis

    @property
    def argv(self) -> list[str]:
        return [str(x) for x in self.trace.header.get("argv") or ()]

    @property
    def exit_code(self) -> int | None:
        ex = self.trace.exit or {}
        code = ex.get("exit_code")
        return int(code) if code is not None else None


@dataclass
class Plan:
    """What goes into the new root, and why."""

    copy: dict[str, str] = field(default_factory=dict)  # path -> reason
    dirs: dict[str, str] = field(default_factory=dict)  # directories only (no contents)
    left: dict[str, str] = field(default_factory=dict)  # created by the program: not copied
    ld_cache: bool = False  # the loader read /etc/ld.so.cache: regenerate it
    library_dirs: list[str] = field(default_factory=list)
    tmp: bool = False
    not_in_source: set[str] = field(default_factory=set)  # to copy, but the source lacks it


@dataclass(frozen=True)
class Lost:
    """A path that worked in the original run and fails in the slim root."""

    path: str
    before: str
    after: str
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "before": self.before, "after": self.after,
                "why": self.why}


@dataclass
class CommandProof:
    argv: list[str]
    exit_before: int | None
    exit_after: int | None = None
    lost: list[Lost] = field(default_factory=list)
    new_findings: list[str] = field(default_factory=list)
    first_used: list[str] = field(default_factory=list)  # failed paths no original run had
    error: str | None = None  # cgotrace could not run it at all
    trace: str | None = None

    @property
    def proven(self) -> bool:
        return (self.error is None and self.exit_after == self.exit_before and not self.lost
                and not self.new_findings)

    def to_dict(self) -> dict[str, Any]:
        return {"argv": self.argv, "proven": self.proven, "exit_before": self.exit_before,
                "exit_after": self.exit_after, "lost": [x.to_dict() for x in self.lost],
                "new_findings": self.new_findings, "first_used": self.first_used,
                "error": self.error, "trace": self.trace}


@dataclass
class SlimResult:
    binary: str
    source_root: str
    source_label: str
    output_dir: str
    runs: list[list[str]]
    entries: list[TreeEntry]
    files: int
    bytes: int
    source_files: int | None = None  # None: the host, not counted
    source_bytes: int | None = None
    program_bytes: int = 0  # of `bytes`: the binary (the source root did not hold it)
    left: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    proof: list[CommandProof] = field(default_factory=list)
    tar: str | None = None
    dockerfile: str | None = None

    @property
    def proven(self) -> bool:
        return bool(self.proof) and all(p.proven for p in self.proof)


# === entry point =============================================================================


def slim(opts: SlimOptions, progress: Callable[[str], None] | None = None) -> SlimResult:
    """Build the slim root and prove it (docs/slim.md). Bad input raises before any run."""
    say = progress or (lambda _line: None)
    _check_options(opts)
    out = _output_dir(opts.output_dir)
    with tempfile.TemporaryDirectory(prefix="cgotrace-slim-") as tmp:
        work = Path(opts.traces_dir) if opts.traces_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        paths = list(opts.traces)
        source_override = _source(opts)
        if opts.argv:
            say(f"tracing {' '.join(opts.argv)}")
            paths = [_trace_original(opts, source_override, work)]
        runs = load_runs(paths)
        binary = check_same_binary(runs)
        source, label = source_root(runs, source_override)
        say(f"building the root from {label}")
        plan = plan_root(runs)
        result = build_root(plan, source, label, out, binary, runs)
        _outputs(result, opts, runs)
        for i, run in enumerate(runs, 1):
            say(f"proof {i}/{len(runs)}: {' '.join(run.argv)}")
            result.proof.append(prove(run, result, opts.network, work / f"proof-{i}.jsonl",
                                      plan, source))
        if not opts.traces_dir:
            for p in result.proof:
                p.trace = None
        return result


def _check_options(opts: SlimOptions) -> None:
    if bool(opts.traces) == bool(opts.argv):
        raise CgotraceError("give --trace FILE (repeatable) or -- PROGRAM ARGS, not both"
                            if opts.traces else "nothing to slim: give --trace FILE or "
                            "-- PROGRAM ARGS", exit_code=ExitCode.USAGE)
    if not opts.output_dir:
        raise CgotraceError("--output-dir DIR is required", exit_code=ExitCode.USAGE)
    for t in opts.traces:
        if not os.path.exists(t):
            raise NotFoundError(f"trace {t}: no such file")


def _output_dir(path: str) -> Path:
    out = Path(path)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CgotraceError(f"--output-dir {path}: exists and is not an empty directory",
                            help="name a new directory", exit_code=ExitCode.USAGE)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from tracer.errors import output_error

        raise output_error(path, e) from None
    return out.resolve()


def _source(opts: SlimOptions) -> Path | None:
    if opts.rootfs is None and opts.image is None:
        return None
    from tracer.sandbox.images import resolve_source

    return resolve_source(opts.rootfs, opts.image)


# === the original runs =======================================================================


def load_runs(paths: Sequence[str]) -> list[OriginalRun]:
    from probes.analysis import analyze_trace
    from tracer.trace.recorder import read_trace

    runs = []
    for p in paths:
        t = read_trace(p)
        runs.append(OriginalRun(p, t, analyze_trace(t)))
    return runs


def check_same_binary(runs: Sequence[OriginalRun]) -> str:
    """The binary every run traced (host path); traces of different binaries are refused,
    and so is a binary that changed since."""
    first = runs[0].trace.header

    def ident(h: dict[str, Any]) -> str:
        return str(h.get("binary_id") or h.get("binary_realpath") or h.get("binary"))

    for r in runs[1:]:
        if ident(r.trace.header) != ident(first):
            raise CgotraceError(
                f"{runs[0].trace_path} and {r.trace_path} trace different binaries "
                f"({first.get('binary')}, {r.trace.header.get('binary')})",
                help="slim takes traces of one binary", exit_code=ExitCode.BAD_INPUT)
    binary = str(first.get("binary_realpath") or first.get("binary") or "")
    if not binary or not os.path.isfile(binary):
        raise NotFoundError(f"the traced binary {binary or '?'} no longer exists",
                            help="slim copies it into the new root")
    if first.get("binary_id"):
        from tracer.binary.factcache import build_id

        if build_id(binary) != first["binary_id"]:
            raise BadBinaryError(f"{binary} changed since it was traced (build id "
                                 f"{build_id(binary)}, the trace has {first['binary_id']})",
                                 help="trace the binary again")
    return binary


def source_root(runs: Sequence[OriginalRun], override: Path | None) -> tuple[Path, str]:
    """The root the runs used (one for all), or `--rootfs`/`--image` when given."""
    from tracer.sandbox.trees import rootfs_label

    if override is not None:
        return override, rootfs_label(override)
    roots = {str(r.analysis.static.get("rootfs") or "/") for r in runs}
    if len(roots) > 1:
        raise CgotraceError(f"the traces ran in different roots ({', '.join(sorted(roots))})",
                            help="slim takes runs in one root, or name it with --rootfs",
                            exit_code=ExitCode.BAD_INPUT)
    root = Path(roots.pop())
    if not root.is_dir():
        raise NotFoundError(f"rootfs {root}: no such directory (the root the traces ran in)",
                            help="name it with --rootfs DIR or --image NAME")
    label = runs[0].analysis.sandbox or ("the host" if str(root) == "/" else str(root))
    return root, label


def _trace_original(opts: SlimOptions, root: Path | None, work: Path) -> str:
    out = work / "original.jsonl"
    program = shutil.which(opts.argv[0]) if "/" not in opts.argv[0] else opts.argv[0]
    if program is None or not os.path.isfile(program):
        raise NotFoundError(f"{opts.argv[0]}: no such program")
    argv = [os.path.abspath(program), *opts.argv[1:]]
    error = traced_run(argv, root, opts.network, out, work / "original")
    if error is not None:
        raise CgotraceError(f"tracing {opts.argv[0]} failed: {error}",
                            exit_code=ExitCode.TRACER_FAILED)
    return str(out)


def traced_run(argv: list[str], root: Path | None, network: str | None, trace: Path,
               log: Path) -> str | None:
    """`cgotrace run -q --output TRACE [--rootfs ROOT] -- ARGV` in a subprocess, stdin
    from /dev/null, output kept beside `log`. None, or the reason no trace came out."""
    cmd = [sys.executable, "-m", "tracer", "run", "-q", "--output", str(trace)]
    if root is not None:
        cmd += ["--rootfs", str(root)]
    if network is not None:
        cmd += ["--network", network]
    cmd += ["--", *argv]
    with open(f"{log}.stdout", "wb") as o, open(f"{log}.stderr", "wb") as e:
        subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=o, stderr=e, check=False)
    if trace.exists() and trace.stat().st_size:
        return None
    lines = [ln for ln in Path(f"{log}.stderr").read_text(errors="replace").splitlines()
             if ln.startswith("cgotrace")]
    return lines[-1].removeprefix("cgotrace: ") if lines else "no trace was written"


# === the plan ================================================================================


def _under(path: str, d: str) -> bool:
    return path == d or path.startswith(d.rstrip("/") + "/")


def _is_write(a: Access) -> bool:
    return a.syscall == "creat" or any(f in (a.flags or "").split("|") for f in _WRITE_FLAGS)


def _planned(a: Access, exes: set[str]) -> bool:
    """Accesses that can name a file of the root (not sockets, not the kernel's files,
    not the program itself)."""
    if a.family is not None or a.kind == AccessKind.RUNTIME or not a.path.startswith("/"):
        return False
    if a.path in exes:
        return False
    return not any(_under(a.path, m) for m in SANDBOX_MOUNTS)


def _exes(run: OriginalRun) -> set[str]:
    h = run.trace.header
    out = {str(x) for x in (h.get("binary"), h.get("binary_realpath")) if x}
    out.update(run.analysis.executables)
    first = run.trace.accesses[:1]
    if first and first[0].kind == AccessKind.EXECUTABLE:
        out.add(first[0].path)
    return out


def plan_root(runs: Iterable[OriginalRun]) -> Plan:
    """Which paths the new root gets, from every access of every run."""
    plan = Plan()
    for n, run in enumerate(runs, 1):
        exes = _exes(run)
        seen: dict[str, str] = {}  # path -> first result in this run
        for a in sorted(run.trace.accesses, key=lambda a: a.seq):
            if a.path == "/tmp" or a.path.startswith("/tmp/"):
                plan.tmp = True
            if not _planned(a, exes):
                continue
            first = seen.setdefault(a.path, a.result)
            where = f"run {n}: {a.syscall} (seq {a.seq})"
            if _is_write(a) or (a.result == "ok" and first in _ABSENT):
                if a.path not in plan.copy:
                    plan.left.setdefault(a.path, f"created or written at run time ({where})")
                plan.dirs.setdefault(posixpath.dirname(a.path), f"holds {a.path}")
                continue
            if a.result != "ok" or first != "ok":
                continue
            plan.left.pop(a.path, None)
            plan.copy.setdefault(a.path, where)
            if a.path == "/etc/ld.so.cache" and a.kind != AccessKind.PROBE:
                plan.ld_cache = True
            if a.kind in (AccessKind.STARTUP_LIBRARY, AccessKind.DLOPEN_LIBRARY,
                          AccessKind.INTERPRETER):
                d = posixpath.dirname(a.path)
                if d not in plan.library_dirs:
                    plan.library_dirs.append(d)
    return plan


# === the root ===============================================================================


def build_root(plan: Plan, source: Path, label: str, out: Path, binary: str,
               runs: Sequence[OriginalRun]) -> SlimResult:
    from tracer.sandbox import slimroot

    notes: list[str] = []
    for path in sorted(plan.copy):
        if path == slimroot.LD_CACHE and plan.ld_cache:
            continue
        if not slimroot.copy_path(source, out, path):
            plan.not_in_source.add(path)
    if plan.not_in_source:
        notes.append(f"not in {label}, though the runs used them: "
                     f"{', '.join(sorted(plan.not_in_source))}")
    for d in sorted(plan.dirs):
        if d not in plan.left:
            slimroot.make_dir(source, out, d)
    if plan.tmp:
        (out / "tmp").mkdir(exist_ok=True)
        os.chmod(out / "tmp", 0o1777)
    if plan.ld_cache:
        why = slimroot.regenerate_ld_cache(out, plan.library_dirs)
        if why is not None:
            notes.append(f"{slimroot.LD_CACHE} copied from the source root ({why})")
            slimroot.copy_path(source, out, slimroot.LD_CACHE)
        else:
            notes.append(f"{slimroot.LD_CACHE} regenerated for this root (ldconfig -r)")
    bin_dir = out / BIN_DIR.lstrip("/")
    bin_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(binary, bin_dir / os.path.basename(binary))
    entries = list(slimroot.walk(out))
    files, nbytes = slimroot.size_of(entries)
    result = SlimResult(binary=binary, source_root=str(source), source_label=label,
                        output_dir=str(out), runs=[r.argv for r in runs], entries=entries,
                        files=files, bytes=nbytes, left=dict(plan.left), notes=notes,
                        program_bytes=os.path.getsize(binary))
    if str(source) != "/":  # the host's own root is not counted (it is the whole machine)
        result.source_files, result.source_bytes = slimroot.size_of(
            slimroot.walk(source, skip=SANDBOX_MOUNTS))
    return result


def in_root_binary(result: SlimResult) -> str:
    return posixpath.join(BIN_DIR, os.path.basename(result.binary))


def _outputs(result: SlimResult, opts: SlimOptions, runs: Sequence[OriginalRun]) -> None:
    from tracer.sandbox import slimroot

    out = Path(result.output_dir)
    if opts.tar:
        slimroot.write_tar(out, opts.tar)
        result.tar = opts.tar
    if opts.dockerfile:
        args = runs[0].argv[1:]
        comments = [f"cgotrace slim: {os.path.basename(result.binary)} and the files its "
                    f"{len(runs)} traced run(s) used in {result.source_label}",
                    SCOPE, "Proof: cgotrace slim (exit 0 = proven; --json for the details)"]
        slimroot.write_dockerfile(opts.dockerfile, out, [in_root_binary(result), *args],
                                  comments)
        result.dockerfile = opts.dockerfile


# === the proof ===============================================================================


def prove(run: OriginalRun, result: SlimResult, network: str | None, trace: Path,
          plan: Plan, source: Path) -> CommandProof:
    """Run `run`'s command in the slim root under cgotrace and compare."""
    from probes.analysis import analyze_trace
    from tracer.errors import TraceFormatError
    from tracer.trace.recorder import read_trace

    out = Path(result.output_dir)
    binary = str(out / in_root_binary(result).lstrip("/"))
    proof = CommandProof(argv=run.argv, exit_before=run.exit_code, trace=str(trace))
    error = traced_run([binary, *run.argv[1:]], out, network, trace,
                       trace.with_suffix(""))
    if error is not None:
        proof.error = error
        return proof
    try:
        t = read_trace(str(trace))
    except TraceFormatError as e:
        proof.error = e.message
        return proof
    ex = t.exit or {}
    proof.exit_after = ex.get("exit_code")
    after = analyze_trace(t)
    compare(run, t, after, proof, plan, source)
    return proof


def _results(t: Trace, exes: set[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for a in t.accesses:
        if _planned(a, exes):
            out.setdefault(a.path, set()).add(a.result)
    return out


def compare(run: OriginalRun, t: Trace, after: Analysis, proof: CommandProof, plan: Plan,
            source: Path) -> None:
    """Lost paths, new findings and paths only the proof run used."""
    before = _results(run.trace, _exes(run))
    now = _results(t, _exes(OriginalRun("", t, after)))
    for path, results in sorted(now.items()):
        if "ok" in results:
            continue
        after_result = sorted(results)[0]
        if "ok" in before.get(path, ()):
            run_root = Path(str(run.analysis.static.get("rootfs") or "/"))
            why = _why_lost(path, plan, source, run_root)
            proof.lost.append(Lost(path, "ok", after_result, why))
        elif path not in before:
            proof.first_used.append(f"{path} ({after_result})")
    old = {f.id: set(f.missing) for f in run.analysis.findings}
    for f in after.findings:
        if f.id not in old:
            proof.new_findings.append(f"{f.id}: {f.title}")
        elif set(f.missing) - old[f.id]:
            extra = ", ".join(sorted(set(f.missing) - old[f.id]))
            proof.new_findings.append(f"{f.id}: {extra} missing now")


def _why_lost(path: str, plan: Plan, source: Path, run_root: Path) -> str:
    """Why a path the original run opened fails in the slim root."""
    if path in plan.left:
        return f"left to the program: {plan.left[path]}; this run found it missing"
    if path not in plan.copy:
        return "first used only in the proof run: no traced run opened it before"
    if path in plan.not_in_source:
        why = f"not in the source root {source}"
        if run_root != source and run_root.is_dir():
            why += f"; the runs' root had it{_ownership(run_root, path)}"
        return why
    return "copied, yet it fails here" + _ownership(source, path)


def _ownership(root: Path, path: str) -> str:
    """', owned by libc6' or ', no package owns it: ...' (nothing without a database)."""
    from tracer.sandbox import pkgdb

    db = pkgdb.open_db(root)
    if db is None:
        return ""
    owners = db.owners([path]).get(path, ())
    if owners:
        names = sorted({db.packages[k].name for k in owners})
        return f", owned by {', '.join(names)}"
    return (", and no package owns it: a package's script made it (or someone by hand), so "
            "a root rebuilt from packages lacks it")


# === output =================================================================================


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def render_text(r: SlimResult) -> str:
    src = (f"{r.source_files} files, {_mb(r.source_bytes)}" if r.source_files is not None
           else "the host (not counted)")
    lines = [f"cgotrace slim: {os.path.basename(r.binary)}, {len(r.runs)} run(s) in "
             f"{r.source_label}",
             f"slim root: {r.output_dir}: {r.files} files, {_mb(r.bytes)}, of which the "
             f"program {_mb(r.program_bytes)} (original root {r.source_label}: {src}, "
             "without the program)"]
    lines += [f"  note: {n}" for n in r.notes]
    if r.left:
        lines.append(f"  left to the program (created at run time): {', '.join(sorted(r.left))}")
    for i, p in enumerate(r.proof, 1):
        state = "proven" if p.proven else "NOT proven"
        lines.append(f"run {i}: {' '.join(p.argv)}: {state}: exit {p.exit_after} "
                     f"(was {p.exit_before})")
        if p.error:
            lines.append(f"  cgotrace could not run it: {p.error}")
        lines += [f"  lost: {x.path} ({x.before} before, {x.after} now): {x.why}"
                  for x in p.lost]
        lines += [f"  new finding: {f}" for f in p.new_findings]
        if not p.proven:
            lines += [f"  first used only in the proof run: {f}" for f in p.first_used]
    verdict = ("proven: same exit status, no access that succeeded before fails, no new "
               "finding" if r.proven else "NOT proven (see above)")
    lines.append(f"verdict: {verdict}")
    lines.append(SCOPE)
    wrote = [x for x in (r.tar, r.dockerfile) if x]
    if wrote:
        lines.append(f"wrote: {', '.join(wrote)}")
    return "\n".join(lines) + "\n"


def to_json(r: SlimResult) -> dict[str, Any]:
    from tracer.sandbox.pkgdb import sha256_file

    out = Path(r.output_dir)
    return {
        "schema": SCHEMA_ID, "proven": r.proven, "scope": SCOPE, "binary": r.binary,
        "runs": r.runs,
        "source": {"root": r.source_root, "label": r.source_label,
                   "files": r.source_files, "bytes": r.source_bytes},
        "slim": {"dir": r.output_dir, "files": r.files, "bytes": r.bytes,
                 "program_bytes": r.program_bytes, "tar": r.tar,
                 "dockerfile": r.dockerfile, "binary": in_root_binary(r),
                 "entries": [{"path": e.path, "type": e.type, "size": e.size,
                              "mode": oct(e.mode), "target": e.target,
                              "sha256": sha256_file(out / e.path.lstrip("/"))
                              if e.type == "file" else None} for e in r.entries]},
        "left_to_program": dict(sorted(r.left.items())), "notes": r.notes,
        "proof": [p.to_dict() for p in r.proof],
    }
