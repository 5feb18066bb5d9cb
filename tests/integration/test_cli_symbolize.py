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

from sample_apps.build import DEFAULT_GO, go_env, go_tool
from tests.integration.dwarf_oracle import expected_frames, inlined_calls
from tracer.binary.elf import ElfImage
from tracer.binary.pclntab import PclnTable


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tracer", "symbolize", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def _addr2line(binary: Path, pc: int, go: str = DEFAULT_GO) -> tuple[str, str]:
    """(physical function, innermost file:line) from `go tool addr2line`."""
    out = subprocess.run([str(go_tool(go)), "tool", "addr2line", str(binary)],
                         input=f"{pc:#x}\n", capture_output=True, text=True, env=go_env(go),
                         check=True).stdout.splitlines()
    return out[0], out[1]


def inlined_site(sample: Callable[..., Path], mode: str
                 ) -> tuple[Path, int, list[tuple[str, int | None]], tuple[str, str]]:
    """(binary, a PC inside a call inlined into hello's main.main, the frames there innermost
    first as (function, line), addr2line's answer). The inlined call and the caller's line come
    from the DWARF inline tree of the unstripped twin (addr2line puts the PC at the same place
    in both), the innermost position from `go tool addr2line`: nothing from our reader."""
    binary = sample("hello", mode, DEFAULT_GO)
    twin = sample("hello", "cgo", DEFAULT_GO)
    calls = inlined_calls(twin, "main.main")
    assert calls, "main.main has no inlined call in DWARF"
    pc = calls[0].ranges[0][0]
    expected = expected_frames(calls, "main.main", pc)
    assert len(expected) >= 2
    answer = _addr2line(binary, pc)
    # (the twin may have been built from another checkout: compare file names, not paths)
    assert [os.path.basename(x) for x in answer] == \
        [os.path.basename(x) for x in _addr2line(twin, pc)]
    return binary, pc, expected, answer


@pytest.mark.go
def test_json_shape_from_arguments(sample: Callable[..., Path]) -> None:
    binary, pc, expected, (a2l_func, a2l_pos) = inlined_site(sample, "stripped")
    r = run_cli("--json", str(binary), hex(pc), f"{pc:x}", "0x1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [o["addr"] for o in out] == [hex(pc), hex(pc), "0x1"]
    frames = out[0]["frames"]
    assert set(frames[0]) >= {"function", "file", "line"}
    assert [f["inlined"] for f in frames] == [True] * (len(expected) - 1) + [False]
    assert [(f["function"], f["line"]) for f in frames[1:]] == expected[1:]
    assert frames[0]["function"] == expected[0][0]
    assert frames[-1]["function"] == a2l_func == "main.main"
    assert frames[-1]["file"].endswith("hello/main.go")
    assert f"{frames[0]['file']}:{frames[0]['line']}" == a2l_pos
    assert out[1] == out[0]
    assert out[2]["frames"] == []


@pytest.mark.go
def test_text_output_from_stdin(sample: Callable[..., Path]) -> None:
    binary, pc, expected, (_func, a2l_pos) = inlined_site(sample, "cgo")
    r = run_cli(str(binary), stdin=f"{pc:#x}\n\n  0x1  \n")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == len(expected) + 1
    pad = " " * len(hex(pc))
    assert lines[0].startswith(f"{pc:#x}  {expected[0][0]}  ") and lines[0].endswith("(inlined)")
    assert f"  {a2l_pos}" in lines[0]
    for line, (function, call_line) in zip(lines[1:-1], expected[1:], strict=True):
        assert line.startswith(f"{pad}  {function}  ") and f":{call_line}" in line, line
    assert lines[-2].split()[1].endswith(f"hello/main.go:{expected[-1][1]}"), lines[-2]
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


@pytest.mark.go
def test_missing_pid_is_not_found(sample: Callable[..., Path]) -> None:
    """A valid Go binary and a PID that does not exist: exit 4, one line."""
    binary = sample("hello", "pie", DEFAULT_GO)
    pid = _unused_pid()
    r = run_cli("--pid", str(pid), str(binary), "0x1")
    assert r.returncode == 4, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cgotrace: ") and str(pid) in lines[0]


def _unused_pid() -> int:
    """A PID no process has: above the kernel's pid_max."""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


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
