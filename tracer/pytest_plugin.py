"""pytest plugin (entry point `cgotrace` in the `pytest11` group): trace a program from a
test and assert on what it needed.

```python
def test_lookup_needs_no_libc(cgotrace):
    result = cgotrace("./myapp", "--selftest", rootfs="static")
    assert result.exit_code == 0
    result.assert_no_hidden()
    result.assert_dependency("/etc/passwd", via="go")
```

`cgotrace(program, *args, rootfs=None, network=None, env=None, cwd=None, stdin=None,
timeout=300, fail_on=None)` runs `cgotrace run` in a child process (ptrace is not done
inside the pytest process), writes the trace under the test's tmp_path, analyses it and
returns a `CgotraceResult` with `findings`, `dependencies`, `accesses`, `analysis`,
`exit_code`, `stdout`, `stderr` and `trace_path`.

`--cgotrace-fail-on SPEC` (same syntax as `cgotrace run --fail-on`) and
`--cgotrace-allow FILE` apply the gate to every traced run: a run that fails the gate fails
its test with the failing findings. `fail_on=` on one call overrides the option.

Importing this module costs little: tracer internals load on the first traced run, so the
plugin does not slow down test sessions that never use it.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from probes.records import Analysis, Dependency
    from tracer.gate import Failure
    from tracer.trace.model import Access, Finding

# `cgotrace run` exits with the program's status; these are its own failures
# (docs/exit-codes.md) when no trace was written.
_TRACER_CODES = {125, 126, 127}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cgotrace", "cgotrace: trace Go programs from tests")
    group.addoption("--cgotrace-fail-on", metavar="SPEC", default=None,
                    help="Fail a test when a program it traces with the `cgotrace` fixture "
                    "has these findings (ids, severities, hidden, cgo, missing; "
                    "comma-separated, as `cgotrace run --fail-on`).")
    group.addoption("--cgotrace-allow", metavar="FILE", default=None,
                    help="Allow-list (TOML, [[allow]] id/path/reason) applied with "
                    "--cgotrace-fail-on.")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cgotrace_fail_on(spec): --cgotrace-fail-on for the runs of one test")
    _check_options(config.getoption("--cgotrace-fail-on"),
                   config.getoption("--cgotrace-allow"))


def _check_options(spec: str | None, allow: str | None) -> None:
    """A typo in --cgotrace-fail-on, or an allow-list that is missing or bad, is one usage
    error before any test runs (never a gate that matches nothing, nor N failed tests)."""
    if spec is None and allow is None:
        return
    from tracer.errors import CgotraceError
    from tracer.gate import known_ids, load_allow, parse_fail_on

    ids = known_ids()
    try:
        if spec is not None:
            parse_fail_on(spec, ids)
    except CgotraceError as e:
        raise pytest.UsageError(f"--cgotrace-fail-on {spec}: "
                                f"{e.message.removeprefix('--fail-on: ')}") from None
    try:
        if allow is not None:
            load_allow(allow, ids)
    except CgotraceError as e:
        raise pytest.UsageError(f"--cgotrace-allow: {e.message}") from None


@dataclass
class CgotraceResult:
    """One traced run: what the program did, and what cgotrace concluded."""

    argv: list[str]
    exit_code: int
    stdout: str
    stderr: str
    trace_path: Path
    analysis: Analysis
    accesses: list[Access] = field(repr=False)

    @property
    def findings(self) -> tuple[Finding, ...]:
        return self.analysis.findings

    @property
    def dependencies(self) -> tuple[Dependency, ...]:
        return self.analysis.dependencies

    def finding(self, finding_id: str) -> Finding | None:
        """The first finding with this id (fnmatch pattern), or None."""
        return next((f for f in self.findings if fnmatch.fnmatchcase(f.id, finding_id)), None)

    def dependency(self, pattern: str, *, via: str | None = None,
                   dependency_class: str | None = None) -> list[Dependency]:
        """Dependencies whose path matches the glob, optionally with a caller of this via
        (cgo, go, loader, exec) and of this class (hidden, declared, runtime-file, ...)."""
        out = []
        for d in self.dependencies:
            if not fnmatch.fnmatchcase(d.path, pattern):
                continue
            if dependency_class and d.cls.value != dependency_class:
                continue
            if via and not any(str(c.via) == via for c in d.callers):
                continue
            out.append(d)
        return out

    def hidden(self) -> list[Dependency]:
        """The hidden dependencies the program used: what `--fail-on hidden` counts
        (`tracer.gate.is_hidden_use`; a failed lookup, ENOENT, is not one)."""
        from tracer.gate import is_hidden_use

        return [d for d in self.dependencies if is_hidden_use(d)]

    def report(self, fmt: str = "text") -> str:
        """This run's report in any `cgotrace report` format (text, json, sarif, dot, html),
        e.g. to keep a SARIF file as a CI artifact."""
        from tracer.reporters import render

        return render(self.analysis, fmt)

    def accessed(self, pattern: str) -> list[Access]:
        """Every recorded access (in order) whose path matches the glob."""
        return [a for a in self.accesses if fnmatch.fnmatchcase(a.path, pattern)]

    # -- assertion helpers (also module functions below) -------------------------------

    def assert_finding(self, finding_id: str, path: str | None = None) -> Finding:
        __tracebackhide__ = True
        return assert_finding(self, finding_id, path)

    def assert_no_findings(self, *ids: str, severity: str | None = None) -> None:
        __tracebackhide__ = True
        assert_no_findings(self, *ids, severity=severity)

    def assert_dependency(self, pattern: str, *, via: str | None = None,
                          dependency_class: str | None = None) -> list[Dependency]:
        __tracebackhide__ = True
        return assert_dependency(self, pattern, via=via, dependency_class=dependency_class)

    def assert_no_dependency(self, pattern: str) -> None:
        __tracebackhide__ = True
        assert_no_dependency(self, pattern)

    def assert_no_hidden(self) -> None:
        __tracebackhide__ = True
        assert_no_hidden(self)

    def assert_no_cgo(self) -> None:
        __tracebackhide__ = True
        assert_no_cgo(self)


def _describe_finding(f: Finding) -> str:
    where = f" <- {f.go_api}" if f.go_api else ""
    paths = f" [{', '.join(f.paths[:4])}{' ...' if len(f.paths) > 4 else ''}]" \
        if f.paths else ""
    allowed = f" (allowed: {f.allowed})" if f.allowed else ""
    return f"{f.severity.value} {f.id}: {f.title}{paths}{where}{allowed}"


def _describe_dependency(d: Dependency) -> str:
    callers = ", ".join(f"{c.go_api or c.via} via {c.via}" for c in d.callers[:3])
    return f"{d.cls.value} {d.path} {d.result} x{d.count}" + (
        f" <- {callers}" if callers else "")


def _lines(items: Iterable[str]) -> str:
    return "".join(f"\n  {x}" for x in items)


def assert_finding(result: CgotraceResult, finding_id: str,
                   path: str | None = None) -> Finding:
    """The finding with this id (glob), about `path` (glob) when given; AssertionError
    listing the findings there are otherwise."""
    __tracebackhide__ = True
    for f in result.findings:
        if fnmatch.fnmatchcase(f.id, finding_id) and (
                path is None or any(fnmatch.fnmatchcase(p, path) for p in f.paths)):
            return f
    want = finding_id + (f" about {path}" if path else "")
    raise AssertionError(f"no finding {want}; findings:"
                         + (_lines(_describe_finding(f) for f in result.findings) or " none"))


def assert_no_findings(result: CgotraceResult, *ids: str, severity: str | None = None) -> None:
    """No finding (not allowed) with one of these ids (globs; all when none given) and at
    least this severity (error > warning > info)."""
    __tracebackhide__ = True
    rank = {"error": 0, "warning": 1, "info": 2}
    limit = rank[severity] if severity else 2
    bad = [f for f in result.findings if f.allowed is None
           and rank[f.severity.value] <= limit
           and (not ids or any(fnmatch.fnmatchcase(f.id, i) for i in ids))]
    if bad:
        raise AssertionError(f"{len(bad)} unexpected findings:"
                             + _lines(_describe_finding(f) for f in bad))


def assert_dependency(result: CgotraceResult, pattern: str, *, via: str | None = None,
                      dependency_class: str | None = None) -> list[Dependency]:
    """The dependencies matching (path glob, via, class); AssertionError when none."""
    __tracebackhide__ = True
    found = result.dependency(pattern, via=via, dependency_class=dependency_class)
    if not found:
        want = pattern + (f" via {via}" if via else "") + (
            f" ({dependency_class})" if dependency_class else "")
        near = [d for d in result.dependencies if fnmatch.fnmatchcase(d.path, pattern)]
        raise AssertionError(f"no dependency {want}; " + (
            "same path otherwise:" + _lines(_describe_dependency(d) for d in near) if near
            else f"{len(result.dependencies)} dependencies, none matching"))
    return found


def assert_no_dependency(result: CgotraceResult, pattern: str) -> None:
    """No dependency whose path matches the glob; AssertionError listing them otherwise."""
    __tracebackhide__ = True
    found = result.dependency(pattern)
    if found:
        raise AssertionError(f"{pattern} was needed:"
                             + _lines(_describe_dependency(d) for d in found))


def assert_no_hidden(result: CgotraceResult) -> None:
    """No hidden dependency used (a system file or library readelf/ldd do not show,
    opened with success): the same items `--cgotrace-fail-on hidden` fails on."""
    __tracebackhide__ = True
    hidden = result.hidden()
    if hidden:
        raise AssertionError(f"{len(hidden)} hidden dependencies:"
                             + _lines(_describe_dependency(d) for d in hidden))


def assert_no_cgo(result: CgotraceResult) -> None:
    """No access was made through cgo."""
    __tracebackhide__ = True
    cgo = [a for a in result.accesses
           if a.attribution is not None and a.attribution.via.value == "cgo"]
    if cgo:
        shown = [f"{a.path} {a.result} <- {a.attribution.go_api} via cgo "
                 f"{a.attribution.c_function or ''}".rstrip()
                 for a in cgo[:10] if a.attribution is not None]
        raise AssertionError(f"{len(cgo)} accesses via cgo:" + _lines(shown))


class CgotraceRunner:
    """The `cgotrace` fixture: call it to trace one run of a program."""

    def __init__(self, tmp_path: Path, fail_on: str | None, allow: str | None):
        self._tmp = tmp_path
        self._fail_on = fail_on
        self._allow = allow
        self._runs = 0
        self.results: list[CgotraceResult] = []

    def __call__(self, program: str | os.PathLike[str], *args: str,
                 rootfs: str | os.PathLike[str] | None = None, network: str | None = None,
                 env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
                 stdin: str | None = None, timeout: float = 300,
                 fail_on: str | None = None) -> CgotraceResult:
        __tracebackhide__ = True
        self._runs += 1
        trace = self._tmp / f"cgotrace-{self._runs}.jsonl"
        argv = [os.fspath(program), *args]
        cmd = _command(argv, trace, rootfs, network)
        if env is not None:
            # the program's environment goes in a file; cgotrace itself runs with this
            # session's (its cache and settings must not move with the program's HOME)
            env_file = self._tmp / f"cgotrace-{self._runs}.env"
            env_file.write_bytes(b"".join(os.fsencode(f"{k}={v}") + b"\0"
                                          for k, v in env.items()))
            cmd[cmd.index("--"):cmd.index("--")] = ["--env-file", os.fspath(env_file)]
        try:
            proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True,
                                  errors="replace", cwd=cwd, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            pytest.fail(f"cgotrace: {argv[0]} still running after {timeout:g} s "
                        "(killed; raise timeout= if it needs longer)", pytrace=False)
        if not trace.exists() or trace.stat().st_size == 0:
            pytest.fail(f"cgotrace could not trace {argv[0]} (exit {proc.returncode}): "
                        f"{proc.stderr.strip()[-2000:]}", pytrace=False)
        result = _result(argv, proc, trace)
        self.results.append(result)
        spec = fail_on if fail_on is not None else self._fail_on
        if spec:
            _gate(result, spec, self._allow)
        return result


def _command(argv: Sequence[str], trace: Path, rootfs: str | os.PathLike[str] | None,
             network: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "tracer", "run", "-q", "--output", os.fspath(trace)]
    if rootfs is not None:
        cmd += ["--rootfs", os.fspath(rootfs)]
    if network is not None:
        cmd += ["--network", network]
    return [*cmd, "--", *argv]


def _result(argv: list[str], proc: subprocess.CompletedProcess[str],
            trace: Path) -> CgotraceResult:
    from probes.analysis import analyze_trace
    from tracer.trace.recorder import read_trace

    t = read_trace(trace)
    return CgotraceResult(argv=argv, exit_code=proc.returncode, stdout=proc.stdout,
                          stderr=proc.stderr, trace_path=trace, analysis=analyze_trace(t),
                          accesses=list(t.accesses))


def _gate(result: CgotraceResult, spec: str, allow: str | None) -> None:
    """Apply the gate to one traced run; a failure names each failing item, the Go call
    site behind it and the trace (to re-read with `cgotrace report`)."""
    __tracebackhide__ = True
    from tracer.errors import CgotraceError
    from tracer.gate import apply_gate, check_options

    try:
        fail_on, allow_list = check_options(spec, allow, result.analysis.rules or None)
    except CgotraceError as e:
        pytest.fail(f"--cgotrace-fail-on {spec}: {e.message}", pytrace=False)
    assert fail_on is not None
    gate = apply_gate(result.analysis, fail_on, allow_list)
    result.analysis = gate.analysis
    if gate.failed:
        pytest.fail(f"cgotrace --fail-on {spec}: {result.argv[0]} fails the gate "
                    f"({len(gate.failing)}):"
                    + _lines(_failure_line(f, gate.analysis) for f in gate.failing)
                    + f"\n  trace: {result.trace_path} (cgotrace report --fail-on {spec} "
                    "TRACE shows it again)", pytrace=False)


def _failure_line(failure: Failure, analysis: Analysis) -> str:
    """'hidden: /etc/passwd (hidden config) <- os/user.LookupId at main.go:19'."""
    line = f"{failure.rule}: {failure.what} ({failure.detail})"
    sites = _sites(failure, analysis)
    return line + (f" <- {', '.join(sites)}" if sites else "")


def _sites(failure: Failure, analysis: Analysis, limit: int = 3) -> list[str]:
    """The Go call sites behind a failing finding (by id) or dependency (by path)."""
    from probes.records import frame_label

    found: list[tuple[str | None, str]] = [
        (f.go_api, frame_label(f.user_frame)) for f in analysis.findings
        if f.id == failure.what and f.allowed is None]
    found += [(c.go_api, c.site) for d in analysis.dependencies if d.path == failure.what
              for c in d.callers if c.via != "loader"]
    out = []
    for api, site in dict.fromkeys(found):
        if api or site:
            out.append(f"{api or '?'} at {site}" if site else
                       f"{api} (no application frame on the stack)")
    more = f" and {len(out) - limit} more" if len(out) > limit else ""
    return out[:limit] + ([more.strip()] if more else [])


@pytest.fixture
def cgotrace(request: pytest.FixtureRequest, tmp_path: Path) -> CgotraceRunner:
    """Trace a program: `result = cgotrace(binary, *args, rootfs=None, ...)`."""
    config = request.config
    marker = request.node.get_closest_marker("cgotrace_fail_on")
    spec = marker.args[0] if marker and marker.args else config.getoption(
        "--cgotrace-fail-on")
    if marker and marker.args:  # a typo in the marker fails its test before any run
        from tracer.errors import CgotraceError
        from tracer.gate import check_options

        try:
            check_options(spec, None)
        except CgotraceError as e:
            pytest.fail(f"cgotrace_fail_on({spec!r}): {e.message}", pytrace=False)
    return CgotraceRunner(tmp_path, spec, config.getoption("--cgotrace-allow"))
