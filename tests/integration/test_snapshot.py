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
               and f["kind"] == "network" for f in snap["files"])
    assert snap["binary"]["cgo"]["linked"] and "os/user" in snap["binary"]["cgo"]["std_packages"]
    assert snap["binary"]["go_version"].startswith("go1.")
    assert snap["source"] == "snapshot"
    assert all(f["source"] == "snapshot" for f in snap["findings"])
    for name in expected:
        assert re.search(rf"^  dlopen\s+\S*{re.escape(name)}$", text, re.M), text


def _ss_listening(netns_path: str, pid: int) -> set[str]:
    """The TCP addresses `pid` listens on, as ss(8) sees them from inside its namespace
    (the oracle: iproute2 reads the namespace's own tables through netlink)."""
    out = subprocess.run(["nsenter", f"--net={netns_path}", "ss", "-Htlnp"],
                         capture_output=True, text=True, check=True).stdout
    return {line.split()[3] for line in out.splitlines() if f"pid={pid}," in line}


@pytest.mark.netns
@pytest.mark.skipif(shutil.which("ss") is None or shutil.which("nsenter") is None,
                    reason="needs ss (iproute2) and nsenter (util-linux) as the oracle")
def test_snapshot_of_a_process_in_another_netns(sample: Callable[..., Path]) -> None:
    """The server in a loopback network namespace, with GODEBUG=netdns=cgo in its
    environment, read by a snapshot from outside: its listening socket is listed (from its
    own /proc/PID/net tables, as ss shows them inside the namespace), and the resolver line
    says the environment switches it to getaddrinfo."""
    from tests.integration.attach_helpers import loopback_dns, service

    exe = sample("server", "cgo")
    with loopback_dns() as ns, service(exe, ns, env={"GODEBUG": "netdns=cgo"}) as svc:
        want = _ss_listening(ns, svc.pid)
        p = subprocess.run([sys.executable, "-m", "tracer", "snapshot", "--json",
                            str(svc.pid)], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
        text = subprocess.run([sys.executable, "-m", "tracer", "snapshot", str(svc.pid)],
                              cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert p.returncode == 0, p.stderr
    assert want == {f"127.0.0.1:{svc.port}"}, want
    snap = json.loads(p.stdout)
    assert "net" in snap["process"]["namespaces"]
    listening = {f["path"] for f in snap["files"] if f.get("status") == "LISTEN"}
    assert listening == want, snap["files"]
    assert all(f["kind"] == "network" for f in snap["files"] if f.get("status") == "LISTEN")
    assert snap["env"] == {"GODEBUG": "netdns=cgo"}
    resolver = snap["binary"]["resolver"]
    assert resolver["implementation"] == "go+cgo"  # the binary's own default
    assert resolver["run_time"]["implementation"] == "cgo"
    assert "GODEBUG=netdns=cgo in its environment" in resolver["run_time"]["reason"]
    assert re.search(rf"^  network +127\.0\.0\.1:{svc.port}  \(AF_INET LISTEN\)$", text, re.M), \
        text
    assert "resolver go+cgo in the binary, cgo at run time (GODEBUG=netdns=cgo" in text
