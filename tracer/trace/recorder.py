"""Trace files: versioned JSON lines, written as the program runs, read back tolerantly.

One header line, then access, repeats and event lines in the order they happened, then
one exit line. Version 2 folds repeated calls: an access line stands for itself and the
calls a later `repeats` line counts onto it (the reader adds them up); version-1 traces,
one line per call, read as before. Each line is flushed when written (no fsync), so a
tracee or tracer that dies leaves every completed line on disk (repeats are reported
every half second, so such a trace may miss the last repeats' counts). The reader accepts
a truncated last line (a tracer killed mid-write) and a missing exit line, and raises
`TraceFormatError` for anything else that is malformed. The format is documented in
docs/trace-format.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import IO, Any

from tracer import __version__
from tracer.errors import NotFoundError, PermissionDeniedError, TraceFormatError
from tracer.trace.model import Access, Attribution, ExitStatus, ProcessEvent, Repeats

FORMAT = "cgotrace-trace"
FORMAT_VERSION = 2  # 2: `repeats` lines (calls folded into an earlier access line)


class TraceWriter:
    """Streams a trace to a file object or path. Use as a context manager."""

    def __init__(self, target: str | os.PathLike[str] | IO[str]):
        if isinstance(target, str | os.PathLike):
            self._file: IO[str] = open(target, "w", encoding="utf-8",  # noqa: SIM115
                                       buffering=1)
            self._owned = True
        else:
            self._file = target
            self._owned = False
        self._dumps = json.JSONEncoder(separators=(",", ":")).encode

    def _line(self, obj: dict[str, Any]) -> None:
        self._file.write(self._dumps(obj) + "\n")
        self._file.flush()

    def header(self, argv: list[str], binary: str | None, static: dict[str, Any] | None = None,
               **extra: Any) -> None:
        self._line({"type": "header", "format": FORMAT, "version": FORMAT_VERSION,
                    "cgotrace": __version__, "argv": argv, "binary": binary,
                    "start_time": time.time(), "static": static or {}, **extra})

    def access(self, access: Access) -> None:
        self._line(access.to_dict())

    def repeats(self, repeats: Repeats) -> None:
        """The running totals of the calls folded into an access written earlier."""
        self._line(repeats.to_dict())

    def event(self, event: ProcessEvent) -> None:
        self._line(event.to_dict())

    def diagnosis(self, diagnosis: dict[str, Any]) -> None:
        """Why the program did not start (`Diagnosis.to_dict()`), before the exit line."""
        self._line({**diagnosis, "type": "diagnosis"})

    def exit(self, status: ExitStatus, **extra: Any) -> None:
        self._line({"type": "exit", **status.to_dict(), **extra})

    def close(self) -> None:
        if self._owned:
            self._file.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Trace:
    """A trace read back. `exit` is None and `truncated` True when the tracer died."""

    header: dict[str, Any]
    accesses: list[Access] = field(default_factory=list)
    events: list[ProcessEvent] = field(default_factory=list)
    exit: dict[str, Any] | None = None
    diagnoses: list[dict[str, Any]] = field(default_factory=list)  # `diagnosis` lines
    truncated: bool = False
    unknown_lines: int = 0  # lines of a type this reader does not know (newer writer)


def _status_from(d: dict[str, Any]) -> ExitStatus:
    fault = d.get("fault_address")
    return ExitStatus(code=d.get("code"), signal=d.get("signal"),
                      signal_name=d.get("signal_name"), core_dumped=bool(d.get("core_dumped")),
                      fault_address=int(fault, 16) if isinstance(fault, str) else fault)


def exit_status(trace: Trace) -> ExitStatus | None:
    return _status_from(trace.exit) if trace.exit is not None else None


def read_trace(path: str | os.PathLike[str]) -> Trace:
    """Parse a trace file; TraceFormatError (one line) when it is not one."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except FileNotFoundError:
        raise NotFoundError(f"{name}: no such trace file") from None
    except IsADirectoryError:
        raise TraceFormatError(f"{name}: is a directory, not a trace file") from None
    except PermissionError:
        raise PermissionDeniedError(f"{name}: permission denied",
                                    help="run as a user who can read it") from None
    except OSError as e:
        raise TraceFormatError(f"{name}: cannot read the trace ({e.strerror})") from None
    lines = text.split("\n")
    complete = text.endswith("\n")
    if complete:
        lines.pop()
    if not lines or not lines[0].strip():
        raise TraceFormatError(f"{name}: empty file, not a cgotrace trace")
    trace: Trace | None = None
    repeats: dict[int, Repeats] = {}
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("not an object")
        except ValueError:
            if last and not complete and trace is not None:
                trace.truncated = True
                break
            if trace is None:
                raise TraceFormatError(not_a_trace(name, text)) from None
            raise TraceFormatError(f"{name}:{i + 1}: not a JSON object line "
                                   "(is this a cgotrace trace?)") from None
        if trace is None:
            if obj.get("type") != "header" or obj.get("format") != FORMAT:
                raise TraceFormatError(not_a_trace(name, text))
            if int(obj.get("version", 0)) > FORMAT_VERSION:
                raise TraceFormatError(f"{name}: trace format version {obj.get('version')} is "
                                       f"newer than this cgotrace reads ({FORMAT_VERSION})")
            trace = Trace(header=obj)
            continue
        kind = obj.get("type")
        try:
            if kind == "access":
                trace.accesses.append(Access.from_dict(obj))
            elif kind == "repeats":
                r = Repeats.from_dict(obj)
                repeats[r.of] = r  # cumulative: the last line for an access holds
            elif kind == "event":
                detail = {k: v for k, v in obj.items()
                          if k not in ("type", "event", "pid", "tid", "time")}
                trace.events.append(ProcessEvent(obj["event"], int(obj["pid"]),
                                                 int(obj["tid"]), float(obj["time"]), detail))
            elif kind == "exit":
                trace.exit = obj
            elif kind == "diagnosis":
                trace.diagnoses.append(obj)
            else:
                trace.unknown_lines += 1
        except (KeyError, TypeError, ValueError) as e:
            raise TraceFormatError(f"{name}:{i + 1}: malformed {kind} line ({e})") from None
    assert trace is not None
    if trace.exit is None:
        trace.truncated = True
    elif isinstance(trace.header.get("attach"), dict) and isinstance(
            trace.exit.get("attach"), dict):  # an attach's end is known only at its exit
        trace.header["attach"].setdefault("end_time", trace.exit["attach"].get("end_time"))
    _resolve_same_as(trace.accesses)
    if repeats:
        _add_repeats(trace.accesses, repeats)
    return trace


def _add_repeats(accesses: list[Access], repeats: dict[int, Repeats]) -> None:
    """Put each `repeats` line's totals on the access it counts onto."""
    for i, a in enumerate(accesses):
        r = repeats.get(a.seq)
        if r is not None:
            accesses[i] = dataclasses.replace(a, repeats=r.count,
                                              repeats_unobserved=r.unobserved,
                                              last_time=r.last_time)


# What other cgotrace outputs look like, and which command reads them (a trace is read by
# `report`, `diff` and `matrix`; the others are results).
_OUTPUTS = (
    ("format", "cgotrace-report", "a cgotrace JSON report",
     "`cgotrace diff` reads reports; `cgotrace report` reads the trace it was made from"),
    ("format", "cgotrace-diff", "a `cgotrace diff` JSON document",
     "`cgotrace diff` reads the traces or reports it compared"),
    ("schema", "cgotrace-matrix/1", "a `cgotrace matrix --json` document",
     "`cgotrace matrix --traces DIR` keeps each root's trace for `cgotrace report`"),
    ("version", "2.1.0", "a SARIF log",
     "`cgotrace report --format sarif` writes it from a trace (`run --output`)"),
)


def not_a_trace(name: str, text: str) -> str:
    """One line saying what `name` is instead of a trace, and which command reads it."""
    head = text.lstrip()[:200]
    if text.startswith("\x7fELF"):
        return (f"{name} is an ELF binary, not a trace; `cgotrace run -o TRACE -- {name}` "
                "records one")
    if head.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            for key, value, what, hint in _OUTPUTS:
                if doc.get(key) == value:
                    return f"{name} is {what}, not a trace; {hint}"
    lowered = head.lower()
    if lowered.startswith(("<!doctype html", "<html")):
        what = "an HTML report"
    elif lowered.startswith(("digraph", "strict digraph")):
        what = "a DOT graph"
    else:
        return f"{name}: not a cgotrace trace (its first line is not a trace header)"
    return f"{name} is {what}, not a trace; `cgotrace report` reads traces (`run --output`)"


def _resolve_same_as(accesses: list[Access]) -> None:
    """Give each `same_as` access the attribution of the access it refers to."""
    by_seq: dict[int, Attribution] = {}
    for i, a in enumerate(accesses):
        if a.attribution is not None:
            by_seq[a.seq] = a.attribution
        elif a.same_as is not None and a.same_as in by_seq:
            accesses[i] = dataclasses.replace(a, attribution=by_seq[a.same_as])
