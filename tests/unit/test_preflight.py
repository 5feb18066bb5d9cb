"""The preflight helpers: a missing host program is a skip with the reason and the Debian
package, never an error (and under CGOTRACE_REQUIRE_PRIV=1 a failure: tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests import preflight


def test_tool_reason_names_the_missing_program_and_package() -> None:
    assert preflight.tool_reason("sh") is None
    reason = preflight.tool_reason("sh", "cgotrace-no-such-program", "readelf")
    assert reason is not None and "cgotrace-no-such-program" in reason
    assert "make system-deps" in reason


def test_require_skips_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "which", lambda cmd: None)
    with pytest.raises(pytest.skip.Exception, match=r"needs gcc \(Debian: gcc;"):
        preflight.require("gcc")
    monkeypatch.setattr(preflight, "which", lambda cmd: "/usr/bin/" + cmd)
    preflight.require("gcc", "ip")  # present: returns
