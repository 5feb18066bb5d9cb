"""`cgotrace symbolize` as a user runs it: a subprocess, real binaries, bad input."""

from __future__ import annotations

import contextlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tracer.symbols.elf import ElfImage
from tracer.symbols.pclntab import PclnTable


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tracer", "symbolize", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def inlined_pc(table: PclnTable) -> int:
    main = table.lookup_function("main.main")
    assert main is not None
    for pc in range(main.entry, main.end):
        if len(table.frames(pc)) > 1:
            return pc
    raise AssertionError("main.main has no inlined call")


@pytest.mark.go
def test_json_shape_from_arguments(sample: Callable[..., Path]) -> None:
    binary = sample("hello", "stripped", "1.27.3")
    table = PclnTable.from_image(ElfImage.open(binary))
    pc = inlined_pc(table)
    r = run_cli("--json", str(binary), hex(pc), f"{pc:x}", "0x1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [o["addr"] for o in out] == [hex(pc), hex(pc), "0x1"]
    frames = out[0]["frames"]
    assert len(frames) >= 2
    assert set(frames[0]) >= {"function", "file", "line"}
    assert frames[0]["inlined"] is True and frames[-1]["inlined"] is False
    assert frames[-1]["function"] == "main.main"
    assert frames[-1]["file"].endswith("hello/main.go") and frames[-1]["line"] > 0
    expected = [(f.function, f.file, f.line) for f in table.frames(pc)]
    assert [(f["function"], f["file"], f["line"]) for f in frames] == expected
    assert out[1] == out[0]
    assert out[2]["frames"] == []


@pytest.mark.go
def test_text_output_from_stdin(sample: Callable[..., Path]) -> None:
    binary = sample("hello", "cgo", "1.27.3")
    table = PclnTable.from_image(ElfImage.open(binary))
    pc = inlined_pc(table)
    r = run_cli(str(binary), stdin=f"{pc:#x}\n\n  0x1  \n")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    frames = table.frames(pc)
    assert len(lines) == len(frames) + 1
    assert lines[0].startswith(f"{pc:#x}  ") and lines[0].endswith("(inlined)")
    assert lines[len(frames) - 1].startswith(" " * len(hex(pc)) + "  main.main  ")
    assert lines[-1] == "0x1  ??"


@pytest.mark.go
def test_bias_option_subtracts(sample: Callable[..., Path]) -> None:
    binary = sample("hello", "pie", "1.27.3")
    table = PclnTable.from_image(ElfImage.open(binary))
    main = table.lookup_function("main.main")
    assert main is not None
    r = run_cli("--json", "--bias", "0x7f0000000000", str(binary), hex(main.entry + 0x7F0000000000))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["frames"][-1]["function"] == "main.main"


def _auxv_entry(pid: int) -> int:
    raw = Path(f"/proc/{pid}/auxv").read_bytes()
    for i in range(0, len(raw) - 15, 16):
        key, value = struct.unpack_from("<QQ", raw, i)
        if key == 9:  # AT_ENTRY
            return int(value)
    raise AssertionError("no AT_ENTRY")


@pytest.mark.go
def test_pid_option_uses_the_processs_load_bias(sample: Callable[..., Path]) -> None:
    """A running PIE: the bias from /proc/PID/maps must equal AT_ENTRY - e_entry."""
    binary = sample("server", "pie", "1.27.3")
    img = ElfImage.open(binary)
    table = PclnTable.from_image(img)
    main = table.lookup_function("main.main")
    assert main is not None
    with tempfile.TemporaryDirectory() as tmp:
        fifo = os.path.join(tmp, "ready")
        os.mkfifo(fifo)
        proc = subprocess.Popen([str(binary), "--ready-file", fifo, "--timeout", "60s"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            deadline = time.monotonic() + 30
            got = b""
            while b"\n" not in got and time.monotonic() < deadline and proc.poll() is None:
                with contextlib.suppress(BlockingIOError):
                    got += os.read(fd, 100)
                time.sleep(0.05)
            os.close(fd)
            assert got.startswith(b"ready"), got
            bias = _auxv_entry(proc.pid) - img.entry
            runtime_pc = main.entry + 0x10 + bias
            r = run_cli("--json", "--pid", str(proc.pid), str(binary), hex(runtime_pc))
            assert r.returncode == 0, r.stderr
            [row] = json.loads(r.stdout)
            assert row["addr"] == hex(runtime_pc)
            assert row["frames"][-1]["function"] == "main.main"
        finally:
            proc.kill()
            proc.wait()


def test_missing_pid_is_not_found(tmp_path: Path) -> None:
    r = run_cli("--pid", "999999999", sys.executable, "0x1")
    assert r.returncode in (3, 4)  # python itself is not Go: 3 comes first
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("kind", "code"), [("not-elf", 3), ("missing", 4), ("directory", 3),
                                            ("non-go-elf", 3), ("empty", 3)])
def test_bad_binaries(tmp_path: Path, kind: str, code: int) -> None:
    path = {"missing": tmp_path / "nope", "directory": tmp_path,
            "non-go-elf": Path(sys.executable)}.get(kind, tmp_path / "f")
    if kind == "not-elf":
        path.write_text("#!/bin/sh\necho hi\n")
    elif kind == "empty":
        path.write_bytes(b"")
    r = run_cli(str(path), "0x1")
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cgotrace: ")


@pytest.mark.go
@pytest.mark.parametrize("keep", [64, 4096, 100_000, 0.5, 0.95])
def test_truncated_go_binary(sample: Callable[..., Path], tmp_path: Path,
                             keep: float) -> None:
    data = sample("hello", "stripped", "1.27.3").read_bytes()
    n = int(keep if keep >= 1 else len(data) * keep)
    path = tmp_path / "trunc"
    path.write_bytes(data[:n])
    r = run_cli(str(path), "0x401000")
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.go
def test_bad_address_is_a_usage_error(sample: Callable[..., Path]) -> None:
    r = run_cli(str(sample("hello", "stripped", "1.27.3")), "0xzz")
    assert r.returncode == 2 and "not a hex address" in r.stderr
    assert "Traceback" not in r.stderr
