"""bench/alternatives.c, the measured ways to get a first sighting's result: the ones
bench/README.md calls exact give strace's (path, result) records, the ones it calls
inexact do not (the claim in the table can fail here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import alternatives
from tests import preflight

pytestmark = pytest.mark.ptrace


@pytest.mark.parametrize("mode,exact", [("notify-killable", True), ("notify-upgrade", True),
                                        ("trace-2stop", True), ("notify-continue", False),
                                        ("trace-1stop", False)])
def test_each_way_keeps_or_loses_strace_s_records(tmp_path: Path, mode: str,
                                                  exact: bool) -> None:
    preflight.require("gcc")
    preflight.require("strace")
    exe, d = alternatives.build(tmp_path), alternatives.tree(tmp_path, 200)
    want = alternatives.oracle(exe, "new", 200, d, tmp_path)
    assert len(want) == 200 and {r for _, r in want} == {"0", "-2"}  # ok and ENOENT
    rec = tmp_path / "records"
    _, requests = alternatives.run(exe, mode, "new", 200, d, rec)
    assert requests > 0
    assert (alternatives.records(rec) == want) is exact
