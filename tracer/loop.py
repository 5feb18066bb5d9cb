"""Compatibility shim: the event loop is now `tracer.engine` (seam, collector, engines).

`Loop(pid, on_access=...).run()` keeps working: a collector driven by the ptrace engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tracer.engine.base import FAULT_SIGNALS
from tracer.engine.collector import AccessDraft, Attributor, CollectorStats, EventCollector
from tracer.engine.collector import exit_status as exit_status
from tracer.engine.ptrace_engine import PtraceEngine
from tracer.model import Access, ExitStatus, ProcessEvent

__all__ = ["FAULT_SIGNALS", "AccessDraft", "Attributor", "Loop", "exit_status"]


class Loop:
    """Trace `pid` (already seized, about to exec) with the ptrace engine."""

    def __init__(self, pid: int, *, on_access: Callable[[Access], None],
                 on_event: Callable[[ProcessEvent], None] | None = None,
                 **kw: Any) -> None:
        self.collector = EventCollector(on_access=on_access, on_event=on_event, **kw)
        self.engine = PtraceEngine(pid)

    @property
    def stats(self) -> CollectorStats:
        self.collector.stats.stops = self.engine.stops
        return self.collector.stats

    def run(self) -> ExitStatus:
        return self.engine.run(self.collector)
