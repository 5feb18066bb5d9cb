"""The CI rule as a pytest plugin (loaded by tests/conftest.py): under
CGOTRACE_REQUIRE_PRIV=1 every test must really run and really pass.

A skipped test (marker, `pytest.skip` in the test or a fixture), a skipped module
(`pytest.skip(allow_module_level=True)`, `pytest.importorskip` at import), an xfail and an
xpass are reported as failures, with the reason: CI must never silently skip the ptrace,
namespace or Go tests, and the project allows no xfail. The variable is read when a report
is made, so a pytester session sees the value its test set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


def required() -> bool:
    return os.environ.get("CGOTRACE_REQUIRE_PRIV") == "1"


def _reason(report: Any) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return str(text).removeprefix("Skipped: ")


def _fail(report: Any) -> None:
    """Turn a skip, xfail or xpass into a failure that says which and why."""
    if hasattr(report, "wasxfail"):
        what = "xpass" if report.outcome == "passed" else "xfail"
        why = "no xfail: a test asserts, or it goes"
        reason = report.wasxfail
        del report.wasxfail  # else the terminal still counts it as xfailed/xpassed
    else:
        what, why, reason = "skipped", "CI must run it", _reason(report)
    report.outcome = "failed"
    report.longrepr = f"{what} under CGOTRACE_REQUIRE_PRIV=1 ({why}): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if required() and (report.skipped or hasattr(report, "wasxfail")):
        _fail(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if required() and report.skipped:
        _fail(report)
