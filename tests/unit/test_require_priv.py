"""The CI rule (tests/require_priv.py): under CGOTRACE_REQUIRE_PRIV=1 nothing passes by not
running. Each way a test can avoid running or failing is tried in a pytester session."""

from __future__ import annotations

from pathlib import Path

import pytest

# a test module that avoids running every way it can (skips, a skipping fixture, xfail,
# xpass): data for the pytester session, not a test of this suite
CASES = (Path(__file__).resolve().parents[1] / "data" / "require_priv_cases.txt").read_text()
MODULE_SKIP = 'import pytest\npytest.skip("whole module", allow_module_level=True)\n'
IMPORT_SKIP = 'import pytest\npytest.importorskip("cgotrace_no_such_module")\n'
ARGS = ("-p", "tests.require_priv", "-p", "no:cacheprovider", "-p", "no:cgotrace")


@pytest.fixture
def session(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_cases=CASES, test_module_skip=MODULE_SKIP,
                        test_import_skip=IMPORT_SKIP)
    return pytester


def test_everything_that_did_not_run_fails_under_require_priv(
        session: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CGOTRACE_REQUIRE_PRIV", "1")
    result = session.runpytest(*ARGS, "-rA", "--continue-on-collection-errors")
    # a skip in setup (marker, fixture) or at collection is an error, in the call a failure
    result.assert_outcomes(passed=1, failed=3, errors=4)
    for words in ("skipped under CGOTRACE_REQUIRE_PRIV=1 (CI must run it): no ptrace here",
                  "*marker skip", "*tool missing", "xfail under *: known bug",
                  "xpass under *: known bug, fixed", "*whole module",
                  "*could not import 'cgotrace_no_such_module'*"):
        result.stdout.fnmatch_lines([f"*{words}*"])


def test_without_it_they_are_skips_and_xfails(session: pytest.Pytester,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CGOTRACE_REQUIRE_PRIV", raising=False)
    result = session.runpytest(*ARGS)
    result.assert_outcomes(passed=1, skipped=5, xfailed=1, xpassed=1)
