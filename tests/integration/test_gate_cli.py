"""The CI gate through the real CLI, under each engine (`CGOTRACE_ENGINE`): `run --fail-on
hidden` fails the cgo user lookup (121) and passes its pure build (0); a program's own
non-zero status wins over a failing gate; an allow-list turns the failure into a pass and
the findings are shown as allowed; `report --fail-on` exits 1; `run --report FORMAT=FILE`
writes reports; sitegen's files under its working directory are program files (one line,
no findings); a bug inside cgotrace is exit 70 in one line (a traceback with --debug)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ptrace, pytest.mark.go, pytest.mark.netns]

ENGINES = ("ptrace", "notify")


@pytest.fixture(autouse=True, params=ENGINES)
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test under each engine: `cgotrace run` reads $CGOTRACE_ENGINE."""
    monkeypatch.setenv("CGOTRACE_ENGINE", request.param)
    monkeypatch.delenv("CGOTRACE_NO_NOTIFY", raising=False)
    return str(request.param)


def _env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")},
            "NO_COLOR": "1"}


def cgotrace(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tracer", *args], capture_output=True,
                          text=True, timeout=300, env=_env(), cwd=cwd)


def engine_of(trace: Path) -> str:
    """The engine that wrote a trace: the notify engine counts its notifications."""
    from tracer.trace.recorder import read_trace

    stats = read_trace(trace).exit["stats"]
    return "notify" if "notifications" in stats else "ptrace"


def test_fail_on_hidden_fails_cgo_and_passes_pure(sample: Callable[..., Path],
                                                  tmp_path: Path, engine: str) -> None:
    cgo, pure = sample("userlookup", "cgo"), sample("userlookup", "pure")
    trace = tmp_path / "t.jsonl"
    r = cgotrace("run", "--rootfs", "glibc", "-o", str(trace), "--report",
                 f"json={tmp_path / 'r.json'}", "--report", f"text={tmp_path / 'r.txt'}",
                 "--fail-on", "hidden", "--", str(cgo))
    assert r.returncode == 121, r.stderr
    assert engine_of(trace) == engine
    assert "LookupId(0): root" in r.stdout  # the program ran normally
    assert "gate failed: hidden: " in r.stderr and "/etc/nsswitch.conf" in r.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["gate"]["failed"] is True
    assert {f["what"] for f in doc["gate"]["failing"]} >= {"/etc/nsswitch.conf", "/etc/passwd"}
    assert "user-lookup-cgo" in (tmp_path / "r.txt").read_text()

    r = cgotrace("run", "--rootfs", "glibc", "--fail-on", "hidden", "--", str(pure))
    assert r.returncode == 0, r.stderr
    assert "gate passed" in r.stderr

    # the saved trace through `report`: 1 when the gate fails, 0 without a gate
    assert cgotrace("report", "--fail-on", "hidden", str(trace)).returncode == 1
    assert cgotrace("report", str(trace)).returncode == 0
    r = cgotrace("report", "--fail-on", "error", str(trace))  # warnings only: passes
    assert r.returncode == 0 and "gate passed" in r.stderr


def test_allow_list_turns_the_failure_into_a_pass(sample: Callable[..., Path],
                                                  tmp_path: Path) -> None:
    allow = tmp_path / "allow.toml"
    allow.write_text('[[allow]]\nid = "*"\nreason = "base image is debian:12 with NSS"\n')
    r = cgotrace("run", "--rootfs", "glibc", "--fail-on", "hidden", "--allow", str(allow),
                 "--report", f"json={tmp_path / 'r.json'}", "--",
                 str(sample("userlookup", "cgo")))
    assert r.returncode == 0, r.stderr
    assert "[allowed: base image is debian:12 with NSS]" in r.stderr
    assert "gate passed" in r.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["findings"] and all(f["allowed"] == "base image is debian:12 with NSS"
                                   for f in doc["findings"])
    assert doc["gate"]["failed"] is False and doc["gate"]["allowed"]

    # an entry limited to one id and path allows only that; the rest still fails
    allow.write_text('[[allow]]\nid = "nss-module"\npath = "*/libnss_systemd.so.2"\n'
                     'reason = "systemd hosts only"\n')
    r = cgotrace("run", "--rootfs", "glibc", "--fail-on", "nss-module,user-lookup-cgo",
                 "--allow", str(allow), "--", str(sample("userlookup", "cgo")))
    assert r.returncode == 121
    assert "[allowed: systemd hosts only]" in r.stderr
    assert "gate failed: user-lookup-cgo" in r.stderr


def test_bad_gate_options_are_one_line_errors(sample: Callable[..., Path],
                                              tmp_path: Path) -> None:
    prog = str(sample("userlookup", "pure"))
    bad = tmp_path / "allow.toml"
    bad.write_text('[[allow]]\nid = "*"\n')
    typo = tmp_path / "typo.toml"
    typo.write_text('[[allow]]\nid = "nss-modul"\nreason = "r"\n')
    for args, code, words in [
        (["--fail-on", "hidden,@@"], 2, "--fail-on: '@@'"),
        (["--allow", str(bad)], 3, "[[allow]] #1: key 'reason' is required"),
        (["--allow", str(tmp_path / "none.toml")], 4, "no such allow-list file"),
        (["--report", "yaml=x"], 2, "unknown format"),
        # typos used to be taken as finding ids that matched nothing: the gate passed
        (["--fail-on", "hiden"], 2, "'hiden' is not a known finding id (did you mean "
         "'hidden'?)"),
        (["--fail-on", "warnings"], 2, "(did you mean 'warning'?)"),
        (["--fail-on", "user-lookup-cg"], 2, "(did you mean 'user-lookup-cgo'?)"),
        (["--fail-on", "resolvr-*"], 2, "'resolvr-*' matches no finding id"),
        (["--fail-on", "hidden", "--allow", str(typo)], 3,
         "[[allow]] #1: key 'id': 'nss-modul' is not a known finding id (did you mean "
         "'nss-module'?)"),
        # every --report destination is checked before the program starts, as --output
        (["--report", "sarif=/no/such/dir/x.sarif"], 4,
         "cannot write /no/such/dir/x.sarif: no such file or directory"),
        (["--report", f"json={tmp_path}"], 3, f"cannot write {tmp_path}: is a directory"),
        (["--json", "/no/such/dir/r.json"], 4, "cannot write /no/such/dir/r.json"),
    ]:
        r = cgotrace("run", *args, "--", prog)
        assert r.returncode == code, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert any(words in line for line in lines) and "Traceback" not in r.stderr
        assert r.stdout == ""  # the program did not run
        assert len(lines) == 1, lines
    # report and matrix refuse the same typos before reading or running anything
    r = cgotrace("report", "--fail-on", "hiden", str(tmp_path / "no-trace.jsonl"))
    assert r.returncode == 2 and "did you mean 'hidden'?" in r.stderr
    r = cgotrace("matrix", "--rootfs", "glibc", "--fail-on", "warnings", prog)
    assert r.returncode == 2 and "did you mean 'warning'?" in r.stderr and r.stdout == ""
    r = cgotrace("matrix", "--rootfs", "glibc", "--allow", str(typo), prog)
    assert r.returncode == 3 and "did you mean 'nss-module'?" in r.stderr


def test_attach_checks_its_report_destination_before_attaching(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        r = cgotrace("attach", "--duration", "1", "--report", "sarif=/no/such/dir/x.sarif",
                     str(sleeper.pid))
        assert r.returncode == 4, r.stderr
        assert r.stderr.strip() == ("cgotrace: cannot write /no/such/dir/x.sarif: no such "
                                    "file or directory (create the directory first)")
        r = cgotrace("attach", "--duration", "1", "--fail-on", "hiden", str(sleeper.pid))
        assert r.returncode == 2 and "did you mean 'hidden'?" in r.stderr
        assert "attached" not in r.stderr
    finally:
        sleeper.kill()
        sleeper.wait()


def test_an_incomplete_trace_cannot_pass_the_gate(sample: Callable[..., Path],
                                                  tmp_path: Path) -> None:
    """A trace cut before the exit line (the tracer was killed) passed `--fail-on hidden`
    while the text report said "trace incomplete", and its SARIF said the run succeeded."""
    trace = tmp_path / "t.jsonl"
    r = cgotrace("run", "-q", "-o", str(trace), "--", str(sample("userlookup", "pure")))
    assert r.returncode == 0, r.stderr
    assert cgotrace("report", "--fail-on", "hidden", str(trace)).returncode == 0
    lines = trace.read_text().splitlines(keepends=True)
    assert '"type": "exit"' in lines[-1] or '"type":"exit"' in lines[-1]
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[:-1]) + lines[-1][:20])  # no exit, a torn last line
    r = cgotrace("report", "--fail-on", "hidden", str(cut))
    assert r.returncode == 1, r.stderr
    assert "trace incomplete" in r.stdout
    assert r.stderr.strip() == ("cgotrace: gate failed: incomplete: the trace ends before "
                                "the program's exit")
    r = cgotrace("report", "--format", "sarif", str(cut))
    assert r.returncode == 0, r.stderr  # no gate asked: the report itself is fine
    (inv,) = json.loads(r.stdout)["runs"][0]["invocations"]
    assert inv["executionSuccessful"] is False
    assert any("incomplete" in n["message"]["text"] for n in inv["toolExecutionNotifications"])


def test_sitegen_files_are_program_files(sample: Callable[..., Path], tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    binary = str(sample("sitegen", "cgo"))
    init = subprocess.run([binary, "-init", "150"], cwd=site, capture_output=True, text=True,
                          timeout=60)
    assert init.returncode == 0, init.stderr
    r = cgotrace("run", "-o", str(tmp_path / "t.jsonl"), "--report",
                 f"json={tmp_path / 'r.json'}", "--", binary, cwd=site)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("sitegen: 150 pages")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["findings"] == []
    pf = doc["program_files"]
    assert pf["files"] >= 302 and pf["written"] == 150  # 150 pages read, 150 written, +config
    by_dir = {d["dir"]: d["files"] for d in doc["program_files"]["by_dir"]}
    assert by_dir["./content/"] == 150 and by_dir["./public/"] == 150
    assert not [d for d in doc["dependencies"] if "/content/" in d["path"]]
    lines = [line for line in r.stderr.splitlines() if "program files" in line]
    assert len(lines) == 1 and "./content/ 150" in lines[0]
    assert "page-0" not in r.stderr  # never listed one by one


def test_exec_failure_in_scratch_still_reports_the_missing_interpreter(
        sample: Callable[..., Path], tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    r = cgotrace("run", "--rootfs", "scratch", "--report", f"json={report}", "--fail-on",
                 "missing", "--", str(sample("userlookup", "cgo")))
    assert r.returncode == 127  # the tracer's own failure code wins over the gate
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("cgotrace: interpreter /lib64/ld-linux-x86-64.so.2")
    assert any("E missing-interpreter" in line for line in lines)
    assert "gate failed: missing: missing-interpreter" in r.stderr
    doc = json.loads(report.read_text())
    (f,) = [f for f in doc["findings"] if f["id"] == "missing-interpreter"]
    assert f["missing"] == ["/lib64/ld-linux-x86-64.so.2"] and "CGO_ENABLED=0" in f["fix"]
    assert doc["verdict"]["verdict"] == "fails"


def _closed_pipe() -> int:
    """The write end of a pipe whose reader has already gone: every write is EPIPE."""
    r, w = os.pipe()
    os.close(r)
    return w


def test_a_closed_stderr_or_stdout_keeps_the_exit_status(sample: Callable[..., Path],
                                                         tmp_path: Path) -> None:
    """The report on stderr hit a closed pipe and click turned the BrokenPipeError into
    exit 1, in place of the program's status (or the gate's)."""
    cgo = str(sample("userlookup", "cgo"))
    trace = tmp_path / "t.jsonl"
    out = tmp_path / "program.out"
    for args, code in [
        (["run", "-o", str(trace), "--", cgo], 0),
        (["run", "--rootfs", "glibc", "--fail-on", "hidden", "--", cgo], 121),
        (["run", "--", str(tmp_path / "no-such-program")], 127),
        (["run", "--rootfs", "scratch", "--", cgo], 127),  # findings, then the exec line
    ]:
        w = _closed_pipe()
        with open(out, "w") as stdout:
            proc = subprocess.run([sys.executable, "-m", "tracer", *args], stdout=stdout,
                                  stderr=w, env=_env(), timeout=300)
        os.close(w)
        assert proc.returncode == code, args
    # report writes to stdout: a closed stdout keeps the gate's 1 (and 0 without a gate)
    for args, code in [(["report", "--fail-on", "hidden", str(trace)], 1),
                       (["report", "--format", "json", str(trace)], 0)]:
        w = _closed_pipe()
        proc = subprocess.run([sys.executable, "-m", "tracer", *args], stdout=w,
                              stderr=subprocess.DEVNULL, env=_env(), timeout=300)
        os.close(w)
        assert proc.returncode == code, args


def test_a_real_pipe_that_closes_early_keeps_the_status() -> None:
    """`cgotrace run ... 2>&1 | head -1`, as a shell runs it, many times: head takes the
    program's line and exits while the tracer is still writing its report."""
    shell = (f"{sys.executable} -m tracer run -- /bin/echo hello 2>&1 | head -1 >/dev/null;"
             " echo ${PIPESTATUS[0]}")
    codes = [subprocess.run(["bash", "-c", shell], capture_output=True, text=True,
                            env=_env(), timeout=120).stdout.strip() for _ in range(8)]
    assert codes == ["0"] * 8
    # started with stdout and stderr closed (`>&- 2>&-`): an internal error (70) before
    shell = f"{sys.executable} -m tracer run -- /bin/sh -c 'exit 3' >&- 2>&-; echo $?"
    r = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, env=_env(),
                       timeout=120)
    assert r.stdout.strip() == "3", r.stderr


# getpwnam through glibc NSS (nsswitch.conf, /etc/passwd: hidden dependencies), then the
# program's own failure status
LOOKUP_THEN_EXIT_C = r"""
#include <pwd.h>
#include <stdio.h>
int main(void) {
    struct passwd *pw = getpwnam("root");
    printf("uid %d\n", pw ? (int)pw->pw_uid : -1);
    return 3;
}
"""


def test_the_programs_own_failure_wins_over_a_failing_gate(tmp_path: Path,
                                                           engine: str) -> None:
    """run's status is the program's; 121 only replaces a 0 (docs/exit-codes.md)."""
    from tests.integration.tracing_helpers import compile_c

    prog = str(compile_c(LOOKUP_THEN_EXIT_C))
    trace = tmp_path / "t.jsonl"
    r = cgotrace("run", "-o", str(trace), "--fail-on", "hidden", "--", prog)
    assert r.returncode == 3, r.stderr
    assert r.stdout == "uid 0\n"
    assert "gate failed: hidden: " in r.stderr and "/etc/nsswitch.conf" in r.stderr
    assert engine_of(trace) == engine
    r = cgotrace("report", "--fail-on", "hidden", str(trace))  # the trace alone: the gate
    assert r.returncode == 1


# Runs the CLI in a process where rendering the report raises an unexpected exception: a
# stand-in for any bug inside cgotrace once the program has run.
_BROKEN_REPORT = """
import sys
import tracer.reporters as reporters
def render(*args, **kwargs):
    raise RuntimeError("render is broken")
reporters.render = render
from tracer.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize("debug", [False, True])
def test_a_bug_inside_cgotrace_is_exit_70_in_one_line(tmp_path: Path, debug: bool,
                                                      engine: str) -> None:
    from tests.integration.tracing_helpers import compile_c

    prog = str(compile_c(LOOKUP_THEN_EXIT_C))
    args = ["--debug"] if debug else []
    r = subprocess.run([sys.executable, "-c", _BROKEN_REPORT, *args, "run", "--", prog],
                       capture_output=True, text=True, timeout=120, env=_env())
    assert r.stdout == "uid 0\n"  # the program ran to its end
    if debug:
        assert r.returncode == 1 and "Traceback" in r.stderr
        assert "RuntimeError: render is broken" in r.stderr
    else:
        assert r.returncode == 70, r.stderr
        assert r.stderr.strip().splitlines()[-1] == (
            "cgotrace: internal error: RuntimeError: render is broken (rerun with --debug "
            "for a traceback)")
        assert "Traceback" not in r.stderr
