"""tests/unit is pure and fast (`make test-unit`, under a minute): no Go build, no ptrace,
no namespaces. A test that needs one belongs in tests/integration; this keeps it so (the
hook is this directory's: pytest calls it for the tests under it only)."""

from __future__ import annotations

import pytest

_IMPURE_MARKERS = ("go", "ptrace", "netns")
_IMPURE_FIXTURES = ("sample",)


def pytest_runtest_setup(item: pytest.Item) -> None:
    marks = [m for m in _IMPURE_MARKERS if item.get_closest_marker(m)]
    fixtures = [f for f in _IMPURE_FIXTURES if f in getattr(item, "fixturenames", ())]
    if marks or fixtures:
        pytest.fail(f"{item.nodeid}: a unit test needs {', '.join(marks + fixtures)}: a Go "
                    "build, ptrace or namespaces belong in tests/integration", pytrace=False)
