import subprocess
import sys


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tracer", *args], capture_output=True, text=True)


def test_help_lists_subcommands() -> None:
    r = run_cli("--help")
    assert r.returncode == 0
    assert "Exit codes" in r.stdout


def test_unknown_subcommand_is_usage_error() -> None:
    r = run_cli("no-such-command")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
