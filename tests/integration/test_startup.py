"""Start-up work moved off the program's path: the attributor of a Go program built in a thread
while it starts (LazyAttributor.prepare) gives the same answers as one built at first use."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from tracer.attribution.policy import LazyAttributor
from tracer.trace.model import Access

pytestmark = [pytest.mark.ptrace, pytest.mark.go]


class _AtFirstUse(LazyAttributor):
    """The attributor as before `prepare` existed: built at the first access needing it."""

    def prepare(self, executable: str | None = None) -> None:
        pass


def _without_pcs(value: object) -> object:
    """An attribution's dict without addresses (libraries load elsewhere each run: ASLR)."""
    if isinstance(value, dict):
        return {k: _without_pcs(v) for k, v in value.items() if k != "pc"}
    if isinstance(value, list):
        return [_without_pcs(v) for v in value]
    return value


def _attributions(exe: Path, att: LazyAttributor) -> list[tuple[str, str, object]]:
    from tracer.commands.run import RunOptions, trace_program

    accesses: list[Access] = []
    res = trace_program(RunOptions(argv=[str(exe)], attributor=att, on_access=accesses.append,
                                   forward_signals=False, analyze=False))
    assert res.status.shell_code == 0
    return [(a.syscall, a.path or "",
             _without_pcs(a.attribution.to_dict()) if a.attribution else None)
            for a in accesses]


def test_a_prepared_attributor_answers_as_one_built_at_first_use(
        sample: Callable[..., Path]) -> None:
    exe = sample("userlookup", "cgo")
    prepared = LazyAttributor()
    got = _attributions(exe, prepared)
    assert got == _attributions(exe, _AtFirstUse())
    # the walks ran on the attributor the thread built, with the executable read ahead
    real = prepared._real
    assert real is not None and real is prepared._prepared and prepared._preparing is None
    image = real.registry.cache.get(str(exe.resolve()), str(exe.resolve()))
    assert image._goruntime not in (False, None) and image.pcln is not None
    assert any(isinstance(a, dict) and a.get("user_frame") for _, _, a in got)


def test_a_broken_attributor_still_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread swallows its failure; the first use raises it in the main thread."""
    broken = ModuleType("tracer.attribution.attributor")  # no Attributor in it
    monkeypatch.setitem(sys.modules, "tracer.attribution.attributor", broken)
    att = LazyAttributor()
    att.prepare(None)
    with pytest.raises(ImportError):
        att._get()


def test_go_runtime_facts_are_kept_by_build_id(sample: Callable[..., Path], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The second image of the same build reads the runtime facts the first one stored:
    equal to what the machine code says, without reading it again."""
    import json

    from tracer.attribution.modules import ImageCache
    from tracer.unwind.goruntime import GoRuntime

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("CGOTRACE_NO_CACHE", raising=False)
    exe = str(sample("userlookup", "cgo").resolve())
    first = ImageCache().get(exe, exe).goruntime
    assert first is not None
    assert GoRuntime.from_dict(json.loads(json.dumps(first.to_dict()))) == first

    def not_again(*args: object) -> GoRuntime:
        raise AssertionError("read from the binary although cached")

    monkeypatch.setattr(GoRuntime, "from_image", not_again)
    assert ImageCache().get(exe, exe).goruntime == first
    monkeypatch.setenv("CGOTRACE_NO_CACHE", "1")  # cache off: read from the binary again
    with pytest.raises(AssertionError, match="although cached"):
        _ = ImageCache().get(exe, exe).goruntime
