"""The pytest plugin (tracer/pytest_plugin.py, entry point `cgotrace` in `pytest11`), run
the way its users run it: test files in a pytester session of their own, where it is
loaded from the installed entry point (the outer session's plugins are not inherited).
Traces userlookup's cgo and -tags netgo,osusergo builds (and the cgo one in an empty
root), and the README's example: nine traced runs in all."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ptrace, pytest.mark.go, pytest.mark.netns]


@pytest.fixture(autouse=True, params=["ptrace", "notify"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
           pytester: pytest.Pytester) -> Iterator[str]:
    """Every test under each engine (the plugin's `cgotrace run` reads $CGOTRACE_ENGINE);
    afterwards, every trace the test's sessions wrote is that engine's (the notify engine
    counts its notifications in the exit line)."""
    import time

    from tracer.trace.recorder import read_trace

    monkeypatch.setenv("CGOTRACE_ENGINE", request.param)
    monkeypatch.delenv("CGOTRACE_NO_NOTIFY", raising=False)
    start = time.time()
    yield str(request.param)
    checked = 0
    for trace in pytester.path.parent.joinpath("basetemp").rglob("cgotrace-*.jsonl"):
        if trace.stat().st_mtime < start:
            continue  # an earlier test's session
        stats = read_trace(trace).exit["stats"]
        assert ("notifications" in stats) == (request.param == "notify"), (trace, stats)
        checked += 1
    assert checked or request.node.originalname in _UNTRACED, "no trace was written"


# tests whose sessions never trace: no plugin, or options refused before any test runs
_UNTRACED = {"test_entry_point_is_named_cgotrace", "test_without_the_plugin_there_is_no_fixture",
             "test_bad_options_are_one_error_before_any_test"}

TESTS = '''
import pytest

CGO, PURE = {cgo!r}, {pure!r}

def test_cgo(cgotrace):
    r = cgotrace(CGO)
    assert r.exit_code == 0 and "LookupId(0): root" in r.stdout
    r.assert_dependency("/etc/nsswitch.conf", via="cgo", dependency_class="hidden")
    r.assert_finding("user-lookup-cgo")
    assert r.accessed("/etc/passwd") and r.findings and r.dependencies
    assert '"ruleId": "user-lookup-cgo"' in r.report("sarif")

def test_pure(cgotrace):
    r = cgotrace(PURE)
    r.assert_no_hidden()
    r.assert_no_cgo()
    r.assert_dependency("/etc/passwd", via="go", dependency_class="runtime-file")
    r.assert_no_findings("user-lookup-cgo", "nss-module")

def test_helper_says_what_is_hidden(cgotrace):
    cgotrace(CGO).assert_no_hidden()

@pytest.mark.cgotrace_fail_on("nss-module")
def test_marker(cgotrace):
    cgotrace(CGO)

def test_rootfs(cgotrace):
    r = cgotrace(CGO, rootfs="scratch")
    assert r.exit_code == 127  # cgotrace run: exec failed, the interpreter is missing
    assert "/lib64/ld-linux-x86-64.so.2" in r.assert_finding("missing-interpreter").missing
'''


@pytest.fixture
def tests_file(pytester: pytest.Pytester, sample: Callable[..., Path]) -> Path:
    source = TESTS.format(cgo=str(sample("userlookup", "cgo")),
                          pure=str(sample("userlookup", "netgo")))
    path: Path = pytester.makepyfile(test_traced=source)
    return path


def test_entry_point_is_named_cgotrace() -> None:
    eps = [ep for ep in entry_points(group="pytest11") if ep.name == "cgotrace"]
    assert [ep.value for ep in eps] == ["tracer.pytest_plugin"]


def test_fixture_and_assertion_helpers(pytester: pytest.Pytester, tests_file: Path) -> None:
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=2)
    # the helper's failure names the hidden dependencies and the code behind them
    result.stdout.fnmatch_lines(["*AssertionError: * hidden dependencies:*",
                                 "*hidden /etc/nsswitch.conf ok x* <- os/user.Lookup*"])
    # the marker gates the runs of its test only
    result.stdout.fnmatch_lines(["*cgotrace --fail-on nss-module: *fails the gate*",
                                 "*nss-module: nss-module*"])
    result.stdout.fnmatch_lines(["FAILED test_traced.py::test_marker*"])


def test_fail_on_option_gates_every_run(pytester: pytest.Pytester, tests_file: Path) -> None:
    """--cgotrace-fail-on hidden: the cgo build fails its test at the traced run (before
    its own assertions), the netgo,osusergo build passes."""
    result = pytester.runpytest("-p", "no:cacheprovider", "--cgotrace-fail-on=hidden",
                                "-k", "test_cgo or test_pure")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*cgotrace --fail-on hidden: *userlookup-cgo fails the gate*",
                                 "*hidden: /etc/nsswitch.conf*"])
    result.stdout.fnmatch_lines(["FAILED test_traced.py::test_cgo*"])


AGREE = '''
from tracer.gate import apply_gate, parse_fail_on

def test_hidden_means_one_thing(cgotrace):
    r = cgotrace({cgo!r})
    gate = apply_gate(r.analysis, parse_fail_on("hidden"))
    assert sorted(f.what for f in gate.failing) == sorted(d.path for d in r.hidden())
    # the ENOENT lookups (nscd socket, libnss_* search) are hidden but not used: neither counts
    assert [d for d in r.dependencies if d.cls.value == "hidden" and d.result != "ok"]
    assert len(r.hidden()) >= 2

def test_helper_failure(cgotrace):
    cgotrace({cgo!r}).assert_no_hidden()
'''


def test_helpers_and_the_gate_agree_and_say_where(pytester: pytest.Pytester,
                                                  sample: Callable[..., Path]) -> None:
    """assert_no_hidden and --cgotrace-fail-on hidden count the same items (they used to
    differ by the ENOENT entries); a failing helper shows no plugin frame; a gate failure
    names the Go call site and the trace."""
    pytester.makepyfile(test_agree=AGREE.format(cgo=str(sample("userlookup", "cgo"))))
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "hidden_means")
    result.assert_outcomes(passed=1)
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "helper_failure")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "pytest_plugin.py" not in out and "raise AssertionError" not in out
    result.stdout.fnmatch_lines(["*cgotrace({cgo!r}).assert_no_hidden()*".format(
        cgo=str(sample("userlookup", "cgo"))), "E*AssertionError: * hidden dependencies:*"])
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "helper_failure",
                                "--cgotrace-fail-on", "hidden")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*hidden: /etc/nsswitch.conf (hidden config) <- os/user.Lookup* at main.go:*",
        "*trace: */cgotrace-1.jsonl (cgotrace report --fail-on hidden TRACE shows it again)"])


@pytest.mark.parametrize(("args", "words"), [
    (["--cgotrace-fail-on", "hiden"], "--cgotrace-fail-on hiden: 'hiden' is not a known "
     "finding id (did you mean 'hidden'?)*"),
    (["--cgotrace-fail-on", "warnings"], "*(did you mean 'warning'?)*"),
    (["--cgotrace-fail-on", "hidden", "--cgotrace-allow", "nope.toml"],
     "--cgotrace-allow: nope.toml: no such allow-list file"),
])
def test_bad_options_are_one_error_before_any_test(pytester: pytest.Pytester,
                                                   args: list[str], words: str) -> None:
    """A typo used to match nothing and pass every test; a missing allow-list failed each
    traced run separately. Both are one usage error now, and no test runs."""
    pytester.makepyfile(test_x="def test_x(cgotrace):\n    raise SystemExit('ran')\n")
    result = pytester.runpytest("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {words}"])
    assert "ran" not in result.stdout.str() and "Traceback" not in result.stderr.str()


def test_readme_example(pytester: pytest.Pytester, sample: Callable[..., Path]) -> None:
    """The README's example, as written: it passes for the netgo,osusergo build and fails
    for the cgo build (no libc in the `static` root)."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = re.search(r"```python\n(def test_.*?)```", readme, re.S)
    assert example is not None
    code = example.group(1)
    assert len(code.strip().splitlines()) == 5
    for mode in ("netgo", "cgo"):
        pytester.makepyfile(**{f"test_readme_{mode}": code.replace(
            '"./userlookup"', repr(str(sample("userlookup", mode))))})
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_readme_cgo.py::*"])


def test_env_is_the_programs_not_cgotraces(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """`env=` is what the traced program gets; cgotrace itself keeps the session's, so its
    caches and presets do not move to where the program's HOME or CGOTRACE_CACHE points."""
    home = tmp_path / "program-home"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "XDG_CACHE_HOME": str(home / "xdg"),
           "CGOTRACE_CACHE": str(home / "cache")}
    pytester.makepyfile(test_env=f"""
def test_env(cgotrace):
    r = cgotrace("/usr/bin/env", rootfs="glibc", env={env!r})
    assert r.exit_code == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == {sorted(f"{k}={v}" for k, v in env.items())!r}
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert not home.exists()


def test_without_the_plugin_there_is_no_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(cgotrace):\n    pass\n")
    result = pytester.runpytest("-p", "no:cgotrace")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'cgotrace' not found*"])
