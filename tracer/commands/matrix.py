"""`cgotrace matrix`: one program, several roots, one row per root.

Each root is a traced run of its own: a `cgotrace run -q --output TRACE --rootfs DIR`
subprocess (ptrace ties a tracee to the thread that seized it, so parallel roots are
separate processes; the program's stdin is /dev/null and its output is kept per root).
Roots are resolved first, in this process, one after the other (presets built, images
exported), so a bad root is one line and exit 4 before anything runs. The traces are then
read back and analysed exactly as `cgotrace report` would: `probes.analysis.analyze_trace`
gives the findings, `probes.analysis.verdict` the verdict, `tracer.gate` the per-root gate.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracer.errors import CgotraceError, ExitCode
from tracer.sandbox.presets import PRESETS

if TYPE_CHECKING:
    from probes.records import Analysis

DEFAULT_ROOTS = PRESETS  # scratch, static, musl, glibc
SCHEMA_ID = "cgotrace-matrix/1"
OUTPUT_TAIL = 5  # lines of the program's stdout/stderr kept per root


@dataclass(frozen=True)
class RootSource:
    """One root as the user named it: `--rootfs SOURCE` or `--image NAME`."""

    name: str
    image: bool = False

    @property
    def label(self) -> str:
        return f"image {self.name}" if self.image else self.name


@dataclass
class RootResult:
    """One row of the matrix."""

    root: str
    path: str | None = None  # the resolved directory
    starts: bool = False
    why: str | None = None  # why it did not start, or why cgotrace could not run it
    exit_code: int | None = None
    status: str = "-"  # "0", "127", "SIGSEGV"
    missing: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)  # distinct hidden dependency paths
    findings: list[str] = field(default_factory=list)  # finding ids, not allowed first
    verdict: str = "fails"
    reasons: list[str] = field(default_factory=list)
    gate_failed: bool = False
    gate_failing: list[str] = field(default_factory=list)
    diagnoses: list[dict[str, Any]] = field(default_factory=list)
    stdout_tail: list[str] = field(default_factory=list)
    stderr_tail: list[str] = field(default_factory=list)
    # the program's own last stderr line (a Go panic's or fatal error's message line)
    stderr_line: str | None = None
    trace: str | None = None
    sbom: str | None = None  # the run-time SBOM written for this root (--sbom DIR)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "path": self.path, "starts": self.starts, "why": self.why,
                "exit_code": self.exit_code, "status": self.status, "missing": self.missing,
                "hidden": len(self.hidden), "hidden_paths": self.hidden,
                "findings": self.findings, "verdict": self.verdict, "reasons": self.reasons,
                "gate": {"failed": self.gate_failed, "failing": self.gate_failing},
                "diagnoses": self.diagnoses, "stdout_tail": self.stdout_tail,
                "stderr_tail": self.stderr_tail, "stderr_line": self.stderr_line,
                "trace": self.trace, "sbom": self.sbom}

    @property
    def failed_on_its_own(self) -> bool:
        """The program started and then failed: a non-zero status or a signal, not an exec
        or loader failure (those have a diagnosis line of their own)."""
        return self.starts and not self.diagnoses and self.status not in ("0", "-")


@dataclass
class MatrixOptions:
    binary: str
    args: list[str]
    roots: list[RootSource]
    jobs: int = 2
    fail_on: str | None = None
    allow: str | None = None
    traces_dir: str | None = None  # keep each root's trace here (else a temporary dir)
    env: dict[str, str] | None = None
    sbom_dir: str | None = None  # write each root's CycloneDX SBOM here (<root>.cdx.json)


def parse_roots(rootfs: Sequence[str], images: Sequence[str]) -> list[RootSource]:
    """`--rootfs a,b --rootfs c --image x` -> roots in order; the presets when none."""
    out = [RootSource(name) for value in rootfs for name in value.split(",") if name]
    out += [RootSource(name, image=True) for name in images]
    if not out:
        out = [RootSource(name) for name in DEFAULT_ROOTS]
    labels = [r.label for r in out]
    dup = next((x for x in labels if labels.count(x) > 1), None)
    if dup is not None:
        raise CgotraceError(f"root {dup!r} is named twice", exit_code=ExitCode.USAGE)
    return out


def resolve_roots(roots: Sequence[RootSource]) -> dict[str, Path]:
    """Every root's directory, before anything runs (a bad root fails the whole command)."""
    from tracer.sandbox.images import resolve_source

    resolved: dict[str, Path] = {}
    for r in roots:
        path = resolve_source(None, r.name) if r.image else resolve_source(r.name, None)
        assert path is not None
        resolved[r.label] = path
    return resolved


def _check_binary(path: str) -> None:
    """An ELF executable, before any root runs: a text file or a library is one line and
    exit 3 (BadBinaryError), not four rows that all fail the same way."""
    from tracer.binary.elf import ElfImage

    ElfImage.open(path)


def run_matrix(opts: MatrixOptions,
               on_done: Callable[[RootResult, int, int], None] | None = None
               ) -> list[RootResult]:
    """Run the program in every root (up to `jobs` at once); rows in the order given."""
    if not os.path.isfile(opts.binary):
        from tracer.errors import NotFoundError

        raise NotFoundError(f"{opts.binary}: no such file")
    _check_binary(opts.binary)
    _check_gate_options(opts)
    resolved = resolve_roots(opts.roots)
    with tempfile.TemporaryDirectory(prefix="cgotrace-matrix-") as tmp:
        out_dir = Path(opts.traces_dir) if opts.traces_dir else Path(tmp)
        _ensure_out_dir(out_dir)
        if opts.sbom_dir:
            _ensure_out_dir(Path(opts.sbom_dir))
        results: dict[str, RootResult] = {}
        with ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:
            futures = {pool.submit(_run_root, opts, label, path, out_dir, Path(tmp)): label
                       for label, path in resolved.items()}
            for fut in as_completed(futures):
                row = fut.result()
                results[row.root] = row
                if on_done is not None:
                    on_done(row, len(results), len(futures))
        rows = [results[r.label] for r in opts.roots]
        if not opts.traces_dir:
            for row in rows:
                row.trace = None
        return rows


def _ensure_out_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from tracer.errors import output_error

        raise output_error(str(path), e) from None


def _check_gate_options(opts: MatrixOptions) -> None:
    """Parse --fail-on/--allow once, up front: a bad spec is a usage error, not N rows."""
    if opts.fail_on is None and opts.allow is None:
        return
    from tracer import gate

    if opts.fail_on is not None:
        gate.parse_fail_on(opts.fail_on)
    if opts.allow is not None:
        gate.load_allow(opts.allow)


def _file_name(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def _run_root(opts: MatrixOptions, label: str, root: Path, out_dir: Path,
              tmp: Path) -> RootResult:
    trace = out_dir / f"{_file_name(label)}.jsonl"
    cmd = [sys.executable, "-m", "tracer", "run", "-q", "--output", str(trace),
           "--rootfs", str(root)]
    if opts.env is not None:
        # the program's environment goes in a file (`run --env-file`); each `run` keeps
        # this process's own, so its cache does not move with the program's HOME
        env_file = tmp / f"{_file_name(label)}.env"
        env_file.write_bytes(b"".join(os.fsencode(f"{k}={v}") + b"\0"
                                      for k, v in opts.env.items()))
        cmd += ["--env-file", str(env_file)]
    cmd += ["--", os.path.abspath(opts.binary), *opts.args]
    stdout = tmp / f"{_file_name(label)}.stdout"
    stderr = tmp / f"{_file_name(label)}.stderr"
    started = time.monotonic()
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                              check=False)
    row = RootResult(root=label, path=str(root), trace=str(trace),
                     seconds=time.monotonic() - started)
    row.stdout_tail = _tail(stdout)
    row.stderr_tail = _tail(stderr)
    row.stderr_line = program_error_line(_lines(stderr))
    row.exit_code = proc.returncode
    _fill_from_trace(row, trace, opts)
    return row


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()]


def _tail(path: Path) -> list[str]:
    return _lines(path)[-OUTPUT_TAIL:]


# how a Go program's own crash report starts: the line that says what happened; the
# goroutine dump after it ends in a file:line, which tells a reader nothing
_GO_CRASH = ("panic: ", "fatal error: ", "SIGSEGV: ", "SIGBUS: ", "SIGILL: ", "SIGFPE: ",
             "SIGABRT: ", "[signal ")


def program_error_line(lines: Sequence[str]) -> str | None:
    """The program's own last stderr line (cgotrace's lines left out); for a Go panic or
    fatal error, the first line of its report (the message), not the dump's last frame."""
    own = [line.rstrip() for line in lines if not line.startswith("cgotrace: ")]
    crash = next((line for line in own if line.startswith(_GO_CRASH)), None)
    return crash or (own[-1] if own else None)


def _fill_from_trace(row: RootResult, trace: Path, opts: MatrixOptions) -> None:
    """Analyse one root's trace: starts, status, missing, hidden, findings, verdict, gate."""
    from probes.analysis import analyze_trace
    from probes.records import verdict
    from tracer.trace.model import DependencyClass
    from tracer.trace.recorder import read_trace

    try:
        t = read_trace(trace)
    except CgotraceError as e:
        # cgotrace run itself failed before the program started (sandbox, exec setup)
        row.why = _last_cgotrace_line(row.stderr_tail) or e.message
        row.reasons = [row.why]
        return
    analysis = analyze_trace(t)
    if opts.fail_on is not None or opts.allow is not None:
        analysis = _apply_gate(row, analysis, opts)
    row.diagnoses = [with_finding_fix(d, analysis) for d in analysis.diagnoses]
    row.starts = not any(d.get("kind") in _NO_START for d in analysis.diagnoses)
    if not row.starts:
        row.why = _short_why(analysis.diagnoses)
    ex = analysis.exit or {}
    if ex:
        row.exit_code = ex.get("exit_code", row.exit_code)
        row.status = str(ex.get("signal_name") or ex.get("exit_code"))
    row.missing = _missing(analysis)
    row.hidden = sorted({d.path for d in analysis.dependencies
                         if d.cls == DependencyClass.HIDDEN and not d.absent})
    ordered = sorted(analysis.findings, key=lambda f: f.allowed is not None)
    row.findings = list(dict.fromkeys(f.id for f in ordered))
    v = verdict(analysis)
    row.verdict, row.reasons = v.status, list(v.reasons)
    if opts.sbom_dir:
        row.sbom = _write_sbom(analysis, Path(opts.sbom_dir) / f"{_file_name(row.root)}.cdx.json")


def _write_sbom(analysis: Analysis, path: Path) -> str:
    """This root's run-time SBOM: its OS packages, from its own package database."""
    from tracer.commands.sbom import attach_inventory
    from tracer.reporters import render

    text = render(attach_inventory(analysis), "cyclonedx")
    try:
        path.write_text(text)
    except OSError as e:
        from tracer.errors import output_error

        raise output_error(str(path), e) from None
    return str(path)


def with_finding_fix(diagnosis: dict[str, Any], analysis: Analysis) -> dict[str, Any]:
    """The diagnosis with the fix of the finding of its kind (missing-interpreter), which is
    derived from this binary's facts (its NEEDED libraries, cgo packages, third-party C
    code; docs/findings.md) rather than the one sentence that fits every binary."""
    out = dict(diagnosis)
    if diagnosis.get("kind") == "missing-interpreter":
        f = next((f for f in analysis.findings if f.id == "missing-interpreter"), None)
        if f is not None and f.fix:
            out["fix"] = f.fix
    return out


# diagnosis kinds that mean the program's own code never ran
_NO_START = ("missing-interpreter", "missing-library", "exec-failed")


def _short_why(diagnoses: Sequence[dict[str, Any]]) -> str:
    d = next(d for d in diagnoses if d.get("kind") in _NO_START)
    missing = d.get("missing")
    if d.get("kind") == "missing-interpreter" and missing:
        return f"interpreter {missing} missing"
    if d.get("kind") == "missing-library" and missing:
        return f"{missing} missing"
    return str(d.get("message", "exec failed"))


def _missing(analysis: Analysis) -> list[str]:
    """What the program looked for and did not find, that it then needed: the findings'
    `missing` (not allowed) and the diagnosed interpreter or library."""
    out: list[str] = []
    for d in analysis.diagnoses:
        if d.get("missing"):
            out.append(str(d["missing"]))
    for f in analysis.findings:
        if f.allowed is None:
            out.extend(f.missing)
    return list(dict.fromkeys(out))


def _apply_gate(row: RootResult, analysis: Analysis, opts: MatrixOptions) -> Analysis:
    """`run`'s gate (tracer/gate.gate), on this root's analysis."""
    from tracer.gate import gate

    result = gate(analysis, opts.fail_on, opts.allow)
    if result is None:
        return analysis
    row.gate_failed = bool(result.failed)
    row.gate_failing = [f"{f.rule}: {f.what}" for f in result.failing]
    return result.analysis


def _last_cgotrace_line(lines: Sequence[str]) -> str | None:
    for line in reversed(lines):
        if line.startswith("cgotrace"):
            return line.removeprefix("cgotrace: ")
    return None


# === rendering ==============================================================================

COLUMNS = ("ROOT", "STARTS", "EXIT", "MISSING", "HIDDEN", "FINDINGS", "VERDICT")


def render_table(rows: Sequence[RootResult]) -> str:
    """The matrix as a text table, then one line per root that did not start (the why)."""
    cells = [COLUMNS] + [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(COLUMNS))).rstrip()
             for c in cells]
    for r in rows:
        for d in r.diagnoses:
            fix = f" Fix: {d['fix']}" if d.get("fix") else ""
            lines.append(f"{r.root}: {d.get('message')}.{fix}")
        if not r.diagnoses and r.why and not r.starts:
            lines.append(f"{r.root}: {r.why}")
        if r.failed_on_its_own:
            lines.append(f"{r.root}: {_status_words(r.status)}: {_last_words(r)}")
    return "\n".join(lines)


def _last_words(r: RootResult) -> str:
    """What the program said last: its stderr line, else its last stdout line."""
    if r.stderr_line:
        return r.stderr_line
    if r.stdout_tail:
        return f"nothing on stderr; last on stdout: {r.stdout_tail[-1]}"
    return "nothing on stderr or stdout"


def _status_words(status: str) -> str:
    return f"exit {status}" if status.isdigit() else f"killed by {status}"


def _cells(r: RootResult) -> tuple[str, ...]:
    starts = "yes" if r.starts else f"no: {r.why or '?'}"
    verdict = r.verdict + (" (gate)" if r.gate_failed else "")
    return (r.root, starts, r.status, ", ".join(r.missing) or "-", str(len(r.hidden)),
            ", ".join(r.findings) or "-", verdict)


def progress_line(row: RootResult, done: int, total: int) -> str:
    """One line per finished root, for a terminal."""
    return f"[{done}/{total}] {row.root}: {row.verdict} (exit {row.status}, {row.seconds:.1f} s)"


def to_json(opts: MatrixOptions, rows: Sequence[RootResult]) -> dict[str, Any]:
    """The `--json` document (validated by tracer/schemas/matrix.schema.json)."""
    return {"schema": SCHEMA_ID, "binary": os.path.abspath(opts.binary), "args": opts.args,
            "roots": [r.to_dict() for r in rows],
            "gate": {"fail_on": opts.fail_on, "allow": opts.allow,
                     "failed": any(r.gate_failed for r in rows)}}
