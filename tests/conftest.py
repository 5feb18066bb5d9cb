"""Shared fixtures: sample-app builds, privilege preflights, and the CI rule that a skip fails.

Under CGOTRACE_REQUIRE_PRIV=1 (CI runs as root) any skipped test is reported as a failure,
with the skip reason: CI must never silently skip the ptrace, namespace or Go tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sample_apps import build as sample_build
from tests import preflight

REQUIRE_PRIV = os.environ.get("CGOTRACE_REQUIRE_PRIV") == "1"

# pytester runs the pytest plugin (tracer/pytest_plugin.py) in a test session of its own
pytest_plugins = ("pytester",)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_PRIV and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CGOTRACE_REQUIRE_PRIV=1 (CI must run it): {reason}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    checks = {"ptrace": preflight.ptrace_reason, "netns": preflight.netns_reason,
              "go": preflight.go_reason}
    for item in items:
        for marker, check in checks.items():
            if item.get_closest_marker(marker):
                reason = check()
                if reason:
                    item.add_marker(pytest.mark.skip(reason=f"{marker}: {reason}"))


@pytest.fixture(scope="session")
def sample() -> Callable[..., Path]:
    """sample(app, mode="cgo", go=DEFAULT_GO) -> path of the built binary (cached)."""

    def _build(app: str, mode: str = "cgo", go: str = sample_build.DEFAULT_GO) -> Path:
        reason = preflight.go_reason(go)
        if reason:
            pytest.skip(f"go: {reason}")
        if mode.startswith("musl") and preflight.which("musl-gcc") is None:
            pytest.skip("musl-gcc not installed (make system-deps as root)")
        try:
            return sample_build.build(app, mode, go)
        except sample_build.BuildError as e:
            pytest.fail(str(e))

    return _build
