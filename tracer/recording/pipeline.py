"""One recording pipeline, whatever brought the program under the tracer (`run` launches it,
`attach` seizes it): every access and event the collector produces goes through
`Recording.on_access` / `on_event` to the run summary, the findings builder and the trace
file, with the host path added for a program that sees another root.

    rec = Recording(header, facts=static_facts(...), exe_paths=[...], output=path)
    rec.start()                                   # the header line (after the seize)
    status = engine.run(rec.collector(attributor))
    analysis = rec.finish(status, stats=...)      # diagnosis + exit lines; findings
    rec.close()

The trace file is opened when the Recording is made, before the program starts, so a path
that cannot be written is one line and no run is wasted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from probes.knowledge import nameservers_of
from tracer.errors import output_error
from tracer.recording.classify import Classifier
from tracer.recording.collector import AttributionHook, EventCollector
from tracer.recording.entry import EntryDecoder
from tracer.recording.header import RunFacts
from tracer.recording.summary import SummaryBuilder
from tracer.trace.model import Access, ExitStatus, ProcessEvent, Repeats
from tracer.trace.recorder import TraceWriter

# the accesses a failed start's loader diagnosis reads (library lookups)
LOADER_KINDS = frozenset({"startup-library", "dlopen-library", "interpreter"})


class Recording:
    """Header, classifier, summary, findings, trace file and host paths of one recording."""

    def __init__(self, header: dict[str, Any], *, facts: RunFacts,
                 exe_paths: Iterable[str] = (), output: str | None = None,
                 rules: Any = None, analyze: bool = True,
                 host_path_of: Callable[[str], str | None] | None = None,
                 extra: Callable[[Access], None] | None = None,
                 extra_repeats: Callable[[Access, Repeats, Repeats], None] | None = None
                 ) -> None:
        self.header = header
        self.classifier = Classifier(nameservers=nameservers_of(header))
        if facts.closure is not None:
            for exe in exe_paths:  # each name the tracee may report for its executable
                self.classifier.seed(exe, facts.closure)
        self.summary = SummaryBuilder()
        self.analysis = None
        if analyze:
            from probes.analysis import AnalysisBuilder

            self.analysis = AnalysisBuilder(header, rules)
        self.writer = open_trace_writer(output) if output else None
        self.events: list[ProcessEvent] = []
        self.loader_accesses: list[Access] = []
        self._host = _HostPaths(host_path_of) if host_path_of is not None else None
        self._extra = extra
        self._extra_repeats = extra_repeats

    def start(self) -> None:
        """Write the header line (its fields may be completed until now, e.g. attach times)."""
        if self.writer is not None:
            self.writer.header(**self.header)

    def collector(self, attributor: AttributionHook | None = None, *,
                  debug: bool = False) -> EventCollector:
        """The engine-agnostic collector that feeds this recording."""
        return EventCollector(on_access=self.on_access, on_event=self.on_event,
                              classifier=self.classifier, decoder=EntryDecoder(),
                              attributor=attributor, interpreter_of=self._interpreter_of,
                              on_repeats=self.on_repeats, debug=debug)

    def on_access(self, a: Access) -> None:
        if self._host is not None:
            a = self._host.add(a)
        if a.kind in LOADER_KINDS:
            self.loader_accesses.append(a)
        self.summary.add(a)
        if self.analysis is not None:
            self.analysis.add(a)
        if self.writer is not None:
            self.writer.access(a)
        if self._extra is not None:
            self._extra(a)

    def on_repeats(self, a: Access, totals: Repeats, added: Repeats) -> None:
        """Calls folded into access `a` (recorded before): `totals` so far for the trace
        file, `added` since the last report for the counts (docs/trace-format.md)."""
        self.summary.add_repeats(a, added)
        if self.analysis is not None:
            self.analysis.add_repeats(a, added)
        if self.writer is not None:
            self.writer.repeats(totals)
        if self._extra_repeats is not None:
            self._extra_repeats(a, totals, added)

    def on_event(self, e: ProcessEvent) -> None:
        if e.event != "fork":
            self.events.append(e)
            if self.analysis is not None:
                self.analysis.event(e)
        if self.writer is not None:
            self.writer.event(e)

    def finish(self, status: ExitStatus | None, *, stats: dict[str, int] | None = None,
               diagnoses: Iterable[dict[str, Any]] = (),
               attach: dict[str, Any] | None = None, source: str = "trace") -> Any:
        """The diagnosis and exit lines; the findings (an `Analysis`, or None when the
        recording makes none). `attach` is the attach window of a process that was already
        running (docs/trace-format.md); `status` is None for a snapshot (no exit seen)."""
        diagnoses = list(diagnoses)
        if self.writer is not None and status is not None:
            for d in diagnoses:
                self.writer.diagnosis(d)
            extra = {"attach": attach} if attach is not None else {}
            self.writer.exit(status, stats=stats or {}, **extra)
        if self.analysis is None:
            return None
        exit_: dict[str, Any] | ExitStatus | None = status
        if attach is not None and status is not None:
            exit_ = {**status.to_dict(), "attach": attach}
        return self.analysis.finish(exit_, diagnoses, source=source)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def _interpreter_of(self, exe: str) -> str | None:
        closure = self.classifier.closure(exe)
        return closure.interpreter if closure is not None else None


class _HostPaths:
    """Adds the host path of each file a program in another root saw (when it differs)."""

    def __init__(self, host_path_of: Callable[[str], str | None]) -> None:
        self._of = host_path_of
        self._cache: dict[str, str | None] = {}

    def add(self, a: Access) -> Access:
        if not a.path.startswith("/"):
            return a  # a connect to address:port
        # a host_path the collector set (the interpreter as mapped) is a path inside the
        # program's root too: map the path the program named, as for every other access
        if a.path not in self._cache:
            self._cache[a.path] = self._of(a.path)
        hp = self._cache[a.path]
        return a if hp is None or hp == a.path else dataclasses.replace(a, host_path=hp)


def open_trace_writer(path: str) -> TraceWriter:
    """The --output file, opened before the program starts; a path that cannot be written
    is one line with exit 5 (permission), 4 (no such directory) or 3 (a directory)."""
    try:
        return TraceWriter(path)
    except OSError as e:
        raise output_error(path, e) from None
