"""`cgotrace inspect` as a user runs it: one subprocess per behaviour. Bad input gives one
line on stderr, the documented exit code (docs/exit-codes.md) and never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tracer.binary.elf import ElfImage


def run_inspect(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CGOTRACE_DEBUG"}
    return subprocess.run([sys.executable, "-m", "tracer", "inspect", *args],
                          capture_output=True, text=True, env=env)


def assert_one_line_error(r: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("cgotrace: ") and text in lines[0], lines[0]


def test_missing_file_exit_4(tmp_path: Path) -> None:
    assert_one_line_error(run_inspect(str(tmp_path / "nope")), 4, "no such file")


def test_not_elf_exit_3(tmp_path: Path) -> None:
    p = tmp_path / "script.sh"
    p.write_text("#!/bin/sh\necho hi\n")
    assert_one_line_error(run_inspect(str(p)), 3, "not an ELF file")


def test_directory_exit_3(tmp_path: Path) -> None:
    assert_one_line_error(run_inspect(str(tmp_path)), 3, "is a directory")


def test_missing_rootfs_exit_4() -> None:
    assert_one_line_error(run_inspect(sys.executable, "--rootfs", "/no/such/root"), 4,
                          "rootfs '/no/such/root': no such directory, image tarball or preset")


def test_unreadable_exit_5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "secret"
    shutil.copy(sys.executable, p)
    p.chmod(0)
    if os.geteuid() != 0:
        assert_one_line_error(run_inspect(str(p)), 5, "permission denied")
        return
    # root reads any file whatever its mode: make the open fail the way it would for a user
    import builtins

    from tracer.cli import main

    real_open = builtins.open

    def deny(file: object, *a: object, **k: object) -> object:
        if str(file) == str(p):
            raise PermissionError(13, "Permission denied", str(p))
        return real_open(file, *a, **k)  # type: ignore[call-overload]

    monkeypatch.setattr(builtins, "open", deny)
    with pytest.raises(SystemExit) as exc:
        main(["inspect", str(p)])
    err = capsys.readouterr().err
    assert exc.value.code == 5
    assert err.strip().count("\n") == 0 and "permission denied" in err and "Traceback" not in err


def test_non_go_elf_reports_facts_exit_0() -> None:
    exe = os.path.realpath(sys.executable)
    r = run_inspect("--json", exe)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["is_go"] is False and doc["go"] is None
    assert doc["interpreter"] == ElfImage.open(exe).interpreter
    assert any("not a Go binary" in n for n in doc["notes"])


@pytest.mark.go
def test_truncated_go_binary_exit_3(sample: Callable[..., Path], tmp_path: Path) -> None:
    data = sample("hello", "cgo").read_bytes()
    p = tmp_path / "truncated"
    p.write_bytes(data[: len(data) // 2])
    assert_one_line_error(run_inspect(str(p)), 3, "truncated")


@pytest.mark.go
def test_corrupt_pclntab_exit_3(sample: Callable[..., Path], tmp_path: Path) -> None:
    src = sample("hello", "cgo")
    img = ElfImage.open(src)
    sec = img.sections[".gopclntab"]
    data = bytearray(src.read_bytes())
    data[sec.offset + 8:sec.offset + 64] = b"\xff" * 56  # nfunc and the offsets: garbage
    p = tmp_path / "corrupt"
    p.write_bytes(bytes(data))
    assert_one_line_error(run_inspect(str(p)), 3, "pclntab")


@pytest.mark.go
def test_wrong_arch_prints_facts_and_exit_3(sample: Callable[..., Path], tmp_path: Path) -> None:
    data = bytearray(sample("hello", "pure").read_bytes())
    data[18:20] = struct.pack("<H", 183)  # e_machine = EM_AARCH64
    p = tmp_path / "arm64"
    p.write_bytes(bytes(data))
    r = run_inspect(str(p))
    assert_one_line_error(r, 3, "x86-64 only")
    assert "ELF" in r.stdout and "aarch64" in r.stdout


@pytest.mark.go
def test_text_report_sections_and_missing_interpreter(sample: Callable[..., Path],
                                                      tmp_path: Path) -> None:
    root = tmp_path / "scratch"
    root.mkdir()
    r = run_inspect(str(sample("userlookup", "cgo")), "--rootfs", str(root))
    assert r.returncode == 0, r.stderr
    for heading in ("ELF", "Go", "cgo", "Predicted run-time dependencies", "Rootfs check"):
        assert f"\n{heading}" in r.stdout
    assert ("interpreter /lib64/ld-linux-x86-64.so.2 is not in this root: exec will fail with "
            "'no such file or directory'") in r.stdout
    assert "os/user" in r.stdout and "/etc/nsswitch.conf" in r.stdout


def _fixes(stdout: str) -> dict[str, str]:
    """Feature title -> its `fix:` line, from the "Predicted run-time dependencies" section."""
    out: dict[str, str] = {}
    title = ""
    for line in stdout.splitlines():
        if line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith("]"):
            title = line.strip()
        elif line.strip().startswith("fix: ") and title:
            out[title] = line.strip().removeprefix("fix: ")
    return out


@pytest.mark.go
def test_fixes_suggest_only_what_changes_the_build(sample: Callable[..., Path]) -> None:
    """A binary whose net and os/user are already pure Go (netgo mode) is not told to build
    with -tags netgo or osusergo; its cgo build still is; embedded tzdata is not told to
    embed it."""
    pure = _fixes(run_inspect(str(sample("dnslookup", "netgo"))).stdout)
    net = pure["name resolution (net) [go]"]
    assert net.startswith("nothing to change in the build") and "build with" not in net
    users = _fixes(run_inspect(str(sample("userlookup", "netgo"))).stdout)
    assert users["user and group lookups (os/user) [go]"].startswith(
        "nothing to change in the build: os/user already reads /etc/passwd")
    cgo = _fixes(run_inspect(str(sample("dnslookup", "cgo"))).stdout)
    assert cgo["name resolution (net) [cgo]"].startswith("build with -tags netgo")
    tz = _fixes(run_inspect(str(sample("tzembed", "pure"))).stdout)
    assert "import _" not in tz["time zones (time.LoadLocation) [embedded]"]
