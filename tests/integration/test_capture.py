"""A first sighting's capture on a real run (docs/attribution.md, "Capture, then walk"):
the walks run after their thread resumed, read nothing the capture lacked, and the native
capture gives the trace the pure-Python one gives."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tracer.attribution.attributor import Attributor
from tracer.trace.model import Access

pytestmark = [pytest.mark.ptrace, pytest.mark.go]


@contextmanager
def _native(on: bool) -> Iterator[None]:
    saved = os.environ.get("CGOTRACE_NATIVE")
    os.environ["CGOTRACE_NATIVE"] = "1" if on else "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["CGOTRACE_NATIVE"]
        else:
            os.environ["CGOTRACE_NATIVE"] = saved


def _run(exe: Path, engine: str, native: bool = True) -> tuple[list[Access], Any, Attributor]:
    from tracer.commands.run import RunOptions, trace_program

    accesses: list[Access] = []
    att = Attributor()
    with _native(native):
        res = trace_program(RunOptions(argv=[str(exe)], engine=engine, attributor=att,
                                       forward_signals=False, on_access=accesses.append,
                                       env={"PATH": "/usr/bin:/bin", "HOME": "/root"}))
    assert res.status.shell_code == 0
    return accesses, res, att


def _key(a: Access) -> tuple[Any, ...]:
    at = a.attribution
    return (a.syscall, a.path, a.result, a.observed,
            None if at is None else (at.via, at.go_api, at.user_frame, at.c_function,
                                     tuple((f.function, f.file, f.line) for f in at.stack)))


@pytest.mark.parametrize("engine", ["ptrace", "notify"])
def test_walks_run_after_the_resume_and_never_miss(engine: str,
                                                   sample: Callable[..., Path]) -> None:
    accesses, res, att = _run(sample("userlookup", "cgo"), engine)
    assert res.stats["attributor_errors"] == 0
    assert res.stats["deferred_walks"] == att.stats.deferred > 0, att.stats
    assert res.stats["capture_misses"] == att.stats.capture_misses == 0, att.stats
    assert att.stats.captures >= att.stats.deferred
    # most captures are one process_vm_readv (the hint of the thread's previous one)
    assert att.stats.capture_calls < 2 * att.stats.captures, att.stats
    looked_up = [a for a in accesses if a.path == "/etc/passwd"]
    assert looked_up and all(a.attribution is not None and a.attribution.c_function
                             for a in looked_up)


def test_the_native_capture_gives_the_pure_python_trace(sample: Callable[..., Path]) -> None:
    exe = sample("userlookup", "cgo")
    native, _, n_att = _run(exe, "ptrace")
    python, _, p_att = _run(exe, "ptrace", native=False)
    assert [_key(a) for a in native] == [_key(a) for a in python]
    assert n_att.stats.capture_misses == p_att.stats.capture_misses == 0
