"""Reporters: one module per output format behind one `render(analysis, fmt, color=)`.

A format module (`tracer/reporters/<module>.py`) exposes

    def render(analysis: probes.records.Analysis, *, color: bool = False) -> str

and is named in `FORMATS`; it is imported only when that format is asked for. Reporters
read the Analysis only (never a process, never the trace file). `available()` lists the
formats whose module is installed, so a format is offered only when it works.

An SBOM format (cyclonedx) also reads `Analysis.inventory`, which the command resolves
from the root's package database before rendering (`NEEDS_INVENTORY`).

Also here, not formats: `static_facts.py` (the text of `cgotrace inspect`), `brief.py` (the
short per-run summary of counts and hidden dependencies), and what several formats share:
`graph.py`, `window.py`, `sources.py`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from typing import TYPE_CHECKING, Protocol

from tracer.errors import CgotraceError, ExitCode

if TYPE_CHECKING:
    from probes.records import Analysis

# format name -> module; other formats plug in by adding a line (and their module)
FORMATS: dict[str, str] = {
    "text": "tracer.reporters.text",
    "json": "tracer.reporters.jsonreport",
    "sarif": "tracer.reporters.sarif",
    "dot": "tracer.reporters.dot",
    "html": "tracer.reporters.html",
    "cyclonedx": "tracer.reporters.cyclonedx",
}
# Formats that read `Analysis.inventory` (the used paths' OS packages): the caller resolves
# it in the run's root before rendering (tracer.commands.sbom.attach_inventory).
NEEDS_INVENTORY = frozenset({"cyclonedx"})


class Reporter(Protocol):
    def __call__(self, analysis: Analysis, *, color: bool = False) -> str: ...


class UnknownFormatError(CgotraceError):
    exit_code = ExitCode.USAGE


def available() -> list[str]:
    """Formats whose module exists in this installation, in FORMATS order."""
    return [name for name, mod in FORMATS.items() if importlib.util.find_spec(mod) is not None]


def reporter(fmt: str) -> Reporter:
    mod = FORMATS.get(fmt)
    if mod is None or importlib.util.find_spec(mod) is None:
        raise UnknownFormatError(f"unknown report format {fmt!r} (available: "
                                 f"{', '.join(available())})")
    fn: Reporter = importlib.import_module(mod).render
    return fn


def render(analysis: Analysis, fmt: str, *, color: bool = False,
           source_root: str | None = None) -> str:
    """The report of `analysis` in format `fmt` (text, json, and what `available()` adds).
    `source_root` (`--source-root DIR`) goes to the formats that name source files by
    location (their `render` takes it: SARIF); the others do not need it."""
    fn = reporter(fmt)
    if source_root is not None and "source_root" in inspect.signature(fn).parameters:
        return fn(analysis, color=color, source_root=source_root)  # type: ignore[call-arg]
    return fn(analysis, color=color)


def want_color(stream: object = None) -> bool:
    """Colour on a terminal; plain when piped, with NO_COLOR set, or TERM=dumb."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    stream = stream if stream is not None else sys.stdout
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
