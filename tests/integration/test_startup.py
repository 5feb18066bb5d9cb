"""Start-up work a Go program's first stack walk no longer repeats: its runtime facts
(GoRuntime: struct layout, TLS offset, asmcgocall's frame) are kept by build id."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = [pytest.mark.go]


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
