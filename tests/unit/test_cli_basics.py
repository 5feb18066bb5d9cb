"""The CLI's own surface, without tracing anything: help, usage errors, a non-ELF input.
(`run` with a program is in tests/integration/test_cli_run.py.)"""

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


def test_mistyped_option_before_the_program_is_a_usage_error() -> None:
    # Before: "--imagee" was taken for the program's name (exit 127, command not found).
    r = run_cli("run", "--imagee", "x", "--", "/bin/true")
    assert r.returncode == 2
    assert r.stderr.strip() == "cgotrace run: no such option: --imagee (did you mean --image?)"
    r = run_cli("run", "--outptu", "t.jsonl", "/bin/true")
    assert r.returncode == 2 and "--outptu (did you mean --output?)" in r.stderr
    r = run_cli("matrix", "--rootfss", "glibc", "/bin/true")
    assert r.returncode == 2 and "--rootfss (did you mean --rootfs?)" in r.stderr
    r = run_cli("inspect", "--imag", "x", "/bin/true")
    assert r.returncode == 2 and "--imag (did you mean --image?)" in r.stderr


def test_matrix_of_a_file_that_is_not_elf_is_one_line_exit_3(tmp_path: object) -> None:
    """Rejected before any root runs (no four identical failing rows)."""
    import pathlib

    text = pathlib.Path(str(tmp_path)) / "script.txt"
    text.write_text("not a program\n")
    r = run_cli("matrix", str(text))
    assert r.returncode == 3, r.stderr
    assert r.stdout == "" and r.stderr.count("\n") == 1 and "not an ELF file" in r.stderr
