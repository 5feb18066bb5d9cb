"""Trace files: round trip, truncated last line, malformed input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tracer.errors import NotFoundError, TraceFormatError
from tracer.trace.model import Access, AccessKind, Attribution, ExitStatus, Frame, ProcessEvent, Via
from tracer.trace.recorder import FORMAT_VERSION, TraceWriter, exit_status, read_trace


def _access(seq: int, path: str = "/etc/passwd") -> Access:
    return Access(seq=seq, time=0.5 * seq, pid=10, tid=11, syscall="openat", path=path,
                  result="ok", kind=AccessKind.CONFIG, hidden=True, flags="O_RDONLY|O_CLOEXEC",
                  retval=3, attribution=Attribution(via=Via.CGO, go_api="os/user.LookupId",
                                                    user_frame=Frame("main.main", "m.go", 20),
                                                    c_function="getpwuid_r"))


def _write(path: Path, n: int = 3, close: bool = True) -> None:
    with TraceWriter(str(path)) as w:
        w.header(argv=["./prog", "x"], binary="/abs/prog", static={"interpreter": None})
        for i in range(1, n + 1):
            w.access(_access(i))
        w.event(ProcessEvent("exec", 10, 10, 0.1, {"exe": "/abs/prog"}))
        if close:
            w.exit(ExitStatus(signal=11, signal_name="SIGSEGV", fault_address=0x28))


def test_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    _write(p)
    t = read_trace(p)
    assert t.header["version"] == FORMAT_VERSION and t.header["argv"] == ["./prog", "x"]
    assert [a.seq for a in t.accesses] == [1, 2, 3]
    assert t.accesses[0] == _access(1)
    assert t.events[0].event == "exec" and t.events[0].detail == {"exe": "/abs/prog"}
    status = exit_status(t)
    assert status is not None and status.shell_code == 139 and status.fault_address == 0x28
    assert not t.truncated


def test_every_line_is_on_disk_before_close(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    w = TraceWriter(str(p))
    w.header(argv=["p"], binary="p")
    w.access(_access(1))
    lines = p.read_text().splitlines()  # read while the writer is still open
    assert [json.loads(line)["type"] for line in lines] == ["header", "access"]
    w.close()


def test_truncated_last_line_is_tolerated(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    _write(p, close=False)
    text = p.read_text()
    p.write_text(text + '{"type":"access","seq":4,"pa')  # tracer killed mid-line
    t = read_trace(p)
    assert [a.seq for a in t.accesses] == [1, 2, 3]
    assert t.truncated and t.exit is None


def test_missing_exit_line_means_truncated(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    _write(p, close=False)
    assert read_trace(p).truncated


@pytest.mark.parametrize("content", [
    "", "not json\n", '{"type":"access"}\n', "[1,2]\n",
    '{"type":"header","format":"cgotrace-trace","version":1}\nGARBAGE\n{"type":"exit"}\n',
    '{"type":"header","format":"cgotrace-trace","version":1}\n{"type":"access","pid":1}\n',
    '{"type":"header","format":"cgotrace-trace","version":99}\n',
])
def test_malformed_files_raise_trace_format_error(tmp_path: Path, content: str) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text(content)
    with pytest.raises(TraceFormatError) as e:
        read_trace(p)
    assert "\n" not in e.value.message
    assert e.value.exit_code == 3


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        read_trace(tmp_path / "nope.jsonl")


def test_report_command_prints_findings_and_json(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tracer.cli import cli

    p = tmp_path / "t.jsonl"
    _write(p)
    res = CliRunner().invoke(cli, ["report", str(p)])
    assert res.exit_code == 0, res.output
    assert "/etc/passwd" in res.output and "x3" in res.output and "SIGSEGV" in res.output
    assert "os/user.LookupId at m.go:20" in res.output
    res = CliRunner().invoke(cli, ["report", "--json", str(p)])
    data = json.loads(res.output)
    (dep,) = [d for d in data["dependencies"] if d["class"] == "hidden"]
    assert dep["path"] == "/etc/passwd" and dep["count"] == 3
    assert [(c["go_api"], c["c_function"], c["user_frame"], c["count"])
            for c in dep["callers"]] == [("os/user.LookupId", "getpwuid_r", "m.go:20", 3)]
    assert data["exit"]["exit_code"] == 139
    assert data["verdict"]["verdict"] == "fails"


def test_same_as_is_written_compactly_and_resolved_on_read(tmp_path: Path) -> None:
    """An access whose attribution repeats an earlier one carries `same_as` in JSON only;
    reading the trace gives it the attribution back."""
    import dataclasses

    p = tmp_path / "t.jsonl"
    first = _access(1)
    again = dataclasses.replace(_access(2), same_as=1)
    line = again.to_dict()
    assert line["same_as"] == 1 and "via" not in line and "stack" not in line
    assert "same_as" not in first.to_dict() and first.to_dict()["via"] == "cgo"
    with TraceWriter(str(p)) as w:
        w.header(argv=["./prog"], binary="/abs/prog", static={})
        w.access(first)
        w.access(again)
        w.exit(ExitStatus(code=0))
    t = read_trace(p)
    assert t.accesses[1].same_as == 1
    assert t.accesses[1].attribution == first.attribution


def test_repeats_lines_add_up_on_their_access_and_the_last_one_holds(tmp_path: Path) -> None:
    from tracer.trace.model import Repeats

    p = tmp_path / "t.jsonl"
    with TraceWriter(str(p)) as w:
        w.header(argv=["./prog"], binary="/abs/prog", static={})
        w.access(_access(1))
        w.access(_access(2, "/etc/group"))
        w.repeats(Repeats(of=1, count=10, unobserved=9, first_time=0.6, last_time=0.9))
        w.repeats(Repeats(of=1, count=25, unobserved=23, first_time=0.6, last_time=1.5))
        w.exit(ExitStatus(code=0))
    assert json.loads(p.read_text().splitlines()[0])["version"] == 2
    t = read_trace(p)
    first, second = t.accesses
    assert (first.repeats, first.repeats_unobserved, first.last_time) == (25, 23, 1.5)
    assert first.calls == 26 and second.calls == 1
    from probes.analysis import analyze_trace

    (dep,) = [d for d in analyze_trace(t).dependencies if d.path == "/etc/passwd"]
    assert dep.count == 26 and [c.count for c in dep.callers] == [26]


def test_a_version_1_trace_reads_as_one_call_per_line(tmp_path: Path) -> None:
    p = tmp_path / "old.jsonl"
    lines = [{"type": "header", "format": "cgotrace-trace", "version": 1, "argv": ["./p"],
              "binary": "/abs/p", "static": {}},
             *(_access(i).to_dict() for i in (1, 2, 3)),
             {"type": "exit", "exit_code": 0, "code": 0}]
    p.write_text("".join(json.dumps(x) + "\n" for x in lines))
    t = read_trace(p)
    assert [a.calls for a in t.accesses] == [1, 1, 1] and not t.truncated


def test_a_report_given_for_a_trace_says_what_it_is(tmp_path: Path) -> None:
    """`cgotrace report x.json` on a JSON report said "x.json:1: not a JSON object line";
    now: what the file is and which command reads it (exit 3, one line)."""
    import subprocess
    import sys

    trace = tmp_path / "t.jsonl"
    _write(trace)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tracer", *args], capture_output=True,
                              text=True, timeout=60)

    outputs = {}
    for fmt in ("json", "sarif", "html", "dot"):
        out = tmp_path / f"x.{fmt}"
        assert cli("report", "--format", fmt, "-o", str(out), str(trace)).returncode == 0
        outputs[fmt] = out
    expected = {
        "json": "is a cgotrace JSON report, not a trace; `cgotrace diff` reads reports",
        "sarif": "is a SARIF log, not a trace",
        "html": "is an HTML report, not a trace",
        "dot": "is a DOT graph, not a trace",
    }
    for fmt, out in outputs.items():
        r = cli("report", str(out))
        assert r.returncode == 3 and r.stdout == ""
        assert r.stderr.startswith(f"cgotrace: {out} {expected[fmt]}"), r.stderr
        assert r.stderr.count("\n") == 1
    with pytest.raises(TraceFormatError, match="is an ELF binary, not a trace"):
        read_trace(sys.executable)
    diff = cli("diff", str(outputs["json"]), str(trace))  # and diff does read it
    assert diff.returncode == 0, diff.stderr


def test_an_unreadable_trace_is_exit_5_not_an_internal_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """As a user who cannot read the file, `report` ended in "internal error" (70)."""
    import builtins

    from tracer.cli import main

    p = tmp_path / "t.jsonl"
    _write(p)
    real_open = builtins.open

    def deny(file: object, *a: object, **k: object) -> object:
        if str(file) == str(p):
            raise PermissionError(13, "Permission denied", str(p))
        return real_open(file, *a, **k)  # type: ignore[call-overload]

    monkeypatch.setattr(builtins, "open", deny)
    with pytest.raises(SystemExit) as e:
        main(["report", str(p)])
    assert e.value.code == 5
    err = capsys.readouterr().err
    assert err == f"cgotrace: {p}: permission denied (run as a user who can read it)\n"
