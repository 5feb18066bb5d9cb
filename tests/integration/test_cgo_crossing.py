"""Both directions of the cgo boundary on every Go version of the samples (1.19 to 1.27):
an open in C code called from Go (the walk leaves the g0 stack at runtime.asmcgocall), and
an open in Go code called back from C (the walk goes through runtime.cgocallback and the
return PC it planted). Each stack must reach the goroutine's root (runtime.goexit) through
the Go code that made the C call, with no unnamed frame on the Go side
(docs/go-runtime.md, "The cgo stack switch")."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sample_apps import appinfo
from sample_apps.build import GO_VERSIONS
from tracer.attribution.attributor import Attributor
from tracer.attribution.modules import ImageCache, MapsRegistry
from tracer.trace.model import Access, Via

pytestmark = [pytest.mark.ptrace, pytest.mark.go]

_IMAGES = ImageCache()


def _trace(exe: Path) -> list[Access]:
    from tracer.commands.run import RunOptions, trace_program

    accesses: list[Access] = []
    att = Attributor(MapsRegistry(_IMAGES))
    res = trace_program(RunOptions(argv=[str(exe)], attributor=att, on_access=accesses.append,
                                   forward_signals=False, env={"PATH": "/usr/bin:/bin"}))
    assert res.status.shell_code == 0
    return accesses


def _in_order(names: list[str], wanted: list[str]) -> bool:
    """`wanted` appears in `names` in this order (other frames may lie between)."""
    it = iter(names)
    return all(any(n == w for n in it) for w in wanted)


def _one(accesses: list[Access], path: str) -> Access:
    hits = [a for a in accesses if a.path == path and a.syscall.startswith("open")]
    assert len(hits) == 1, [(a.syscall, a.path) for a in accesses]
    assert hits[0].attribution is not None
    return hits[0]


@pytest.mark.parametrize("go", GO_VERSIONS)
@pytest.mark.parametrize("mode", ["cgo", "stripped", "pie", "static"])
def test_c_side_and_callback_stacks(sample: Callable[..., Path], go: str, mode: str) -> None:
    exe = sample("callback", mode, go)
    accesses = _trace(exe)
    _, c_line = appinfo.marker_line("callback", "c-calls-go")
    _, cb_line = appinfo.marker_line("callback", "callback-open")

    c_side = _one(accesses, "/etc/group").attribution
    assert c_side is not None and c_side.via is Via.CGO
    names = [f.function or "" for f in c_side.stack]
    go_part = names[names.index("runtime.asmcgocall"):]
    assert go_part == ["runtime.asmcgocall", "runtime.cgocall", "main._Cfunc_c_calls_go",
                       "main.main", "runtime.main", "runtime.goexit"], names
    assert c_side.user_frame is not None
    assert (c_side.user_frame.function, c_side.user_frame.line) == ("main.main", c_line)

    callback = _one(accesses, "/etc/passwd").attribution
    assert callback is not None and callback.via is Via.GO
    names = [f.function or "" for f in callback.stack]
    assert all(names), names  # every frame is Go code: all named from pclntab
    assert _in_order(names, ["os.Open", "main.goCallback", "runtime.cgocallback",
                             "runtime.cgocall", "main._Cfunc_c_calls_go", "main.main",
                             "runtime.goexit"]), names
    assert names[-1] == "runtime.goexit", names
    assert callback.user_frame is not None
    assert (callback.user_frame.function, callback.user_frame.line) == ("main.goCallback",
                                                                        cb_line)
