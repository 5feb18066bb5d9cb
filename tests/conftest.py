"""Shared fixtures: sample-app builds, privilege preflights, and the CI rule that a skip fails.

Under CGOTRACE_REQUIRE_PRIV=1 (CI runs as root) any skipped test or module, xfail or xpass
is reported as a failure, with the reason (tests/require_priv.py): CI must never silently
skip the ptrace, namespace or Go tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sample_apps import build as sample_build
from tests import preflight

# pytester runs the pytest plugin (tracer/pytest_plugin.py) in a test session of its own;
# tests/require_priv.py is the CI rule: under CGOTRACE_REQUIRE_PRIV=1 a skip (of a test or
# of a whole module), an xfail and an xpass are failures
pytest_plugins = ("pytester", "tests.require_priv")


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
