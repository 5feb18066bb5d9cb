"""`cgotrace snapshot PID`: a running cgo server after a user lookup, read from /proc.

GIVEN the cgo sample server that has looked up a uid /etc/passwd does not know (so glibc
went on to the other NSS sources of this host's nsswitch.conf and dlopen'd their modules);
WHEN `cgotrace snapshot --json PID` reads it; THEN the NSS modules are listed as mapped but
not in NEEDED (readelf -d is the oracle for NEEDED), the listening socket is there, the Go
and cgo facts are right, and the process was never stopped or traced.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.attach_helpers import ENV, ROOT, read_ready, status_field, stop_process

pytestmark = [pytest.mark.go]


def _nss_modules_expected() -> set[str]:
    """libnss_<source>.so.2 for the passwd sources of this host that are not built into
    glibc (files, dns) and whose module is installed."""
    text = Path("/etc/nsswitch.conf").read_text() if os.path.exists("/etc/nsswitch.conf") \
        else ""
    m = re.search(r"^passwd:(.*)$", text, re.M)
    sources = re.sub(r"\[[^]]*\]", " ", m.group(1)).split() if m else []
    out = set()
    for s in sources:
        name = f"libnss_{s}.so.2"
        if s not in ("files", "dns") and any(os.path.exists(f"{d}/{name}") for d in (
                "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu")):
            out.add(name)
    return out


@pytest.mark.skipif(shutil.which("readelf") is None, reason="readelf (binutils) not installed")
def test_snapshot_lists_dlopened_nss_modules(sample: Callable[..., Path]) -> None:
    expected = _nss_modules_expected()
    if not expected:
        pytest.skip("this host's nsswitch.conf names no NSS module outside libc for passwd")
    exe = sample("server", "cgo")
    with tempfile.TemporaryDirectory() as tmp:
        fifo = os.path.join(tmp, "ready.fifo")
        os.mkfifo(fifo)
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        proc = subprocess.Popen([str(exe), "--ready-file", fifo, "--timeout", "120s"],
                                stdout=subprocess.DEVNULL, env=ENV)
        try:
            port = int(read_ready(fd, proc)[0])
            direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with pytest.raises(urllib.error.HTTPError):  # unknown uid: 500, modules loaded
                direct.open(f"http://127.0.0.1:{port}/lookup?uid=4242424", timeout=20)
            p = subprocess.run([sys.executable, "-m", "tracer", "snapshot", "--json",
                                str(proc.pid)], cwd=ROOT, capture_output=True, text=True,
                               timeout=60)
            assert p.returncode == 0, p.stderr
            assert status_field(proc.pid, "TracerPid") == "0"
            assert status_field(proc.pid, "State")[0] in "SR"
            text = subprocess.run([sys.executable, "-m", "tracer", "snapshot", str(proc.pid)],
                                  cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
        finally:
            os.close(fd)
            stop_process(proc)
    snap = json.loads(p.stdout)
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^]]+)\]",
                            subprocess.run(["readelf", "-d", str(exe)], capture_output=True,
                                           text=True, check=True).stdout))
    assert "libc.so.6" in needed, needed  # the cgo server links libc: NEEDED is not empty
    dlopened = {os.path.basename(x) for x in snap["dlopened"]}
    assert expected <= dlopened, (expected, snap["libraries"])
    assert not dlopened & needed
    roles = {os.path.basename(lib["path"]): lib["role"] for lib in snap["libraries"]}
    assert all(roles.get(n) == "needed" for n in needed), roles
    assert any(f["path"] == f"127.0.0.1:{port}" and f.get("status") == "LISTEN"
               and f["kind"] == "socket" for f in snap["files"])
    assert snap["binary"]["cgo"]["linked"] and "os/user" in snap["binary"]["cgo"]["std_packages"]
    assert snap["binary"]["go_version"].startswith("go1.")
    assert snap["source"] == "snapshot"
    assert all(f["source"] == "snapshot" for f in snap["findings"])
    for name in expected:
        assert re.search(rf"^  dlopen\s+\S*{re.escape(name)}$", text, re.M), text
