"""Every sample app builds in each mode its app.toml lists and runs untraced as it says (with
the default Go; the apps the tests also use with the older Go versions, OLDER_GO_APPS of
sample_apps/build.py, also in cgo, pure and static with those).

GIVEN an app and a mode, WHEN it is built (cached) and run with each [[run]] of its app.toml,
THEN it exits with the expected status and prints the expected lines. Apps that resolve names
(needs_dns) run only inside a fresh network namespace that has nothing but lo, with a
resolv.conf naming 127.0.0.1 and sample_apps.dnsresponder answering there.
Every child started here is killed (by the pid we started) and reaped in `finally`.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from sample_apps import appinfo
from sample_apps import build as sample_build
from tests import preflight

OLD_GO = ("1.24.11", "1.21.13", sample_build.GO_1_19)
OLD_GO_MODES = ("cgo", "pure", "static")
APPS = appinfo.all_apps()
MATRIX = [(a.name, m) for a in APPS for m in a.modes]
OLD_MATRIX = [(a.name, m, v) for v in OLD_GO for a in APPS for m in OLD_GO_MODES
              if m in a.modes and a.name in sample_build.OLDER_GO_APPS]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def prebuilt() -> None:
    """Build the whole matrix once on two threads, so the first run costs minutes, not more."""
    targets = [(a, m, sample_build.DEFAULT_GO) for a, m in MATRIX]
    targets += [(a, m, v) for a, m, v in OLD_MATRIX if preflight.go_reason(v) is None]
    if preflight.go_reason() is None:
        if preflight.which("musl-gcc") is None:
            targets = [t for t in targets if t[1] != "musl"]
        sample_build.build_many(targets, jobs=2)  # errors resurface in the tests themselves


def check_output(run: appinfo.Run, rc: int, out: str, err: str) -> None:
    where = f"run {run.name}: rc={rc}\n--- stdout\n{out}\n--- stderr\n{err}"
    assert rc == run.exit_code, where
    for stream, patterns in ((out, run.stdout), (err, run.stderr)):
        for pattern in patterns:
            assert re.search(pattern, stream, re.MULTILINE), f"no line matches {pattern!r}; {where}"


def run_to_exit(binary: Path, run: appinfo.Run, timeout: float = 60) -> None:
    proc = subprocess.Popen([str(binary), *run.args()], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    check_output(run, proc.returncode, out, err)


def read_ready(fifo: Path, proc: subprocess.Popen[str], timeout: float = 20) -> list[str]:
    """Wait for the "ready ..." line on the FIFO without blocking on a dead child."""
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            assert proc.poll() is None, f"exited {proc.returncode} before it was ready"
            assert time.monotonic() < deadline, "no ready line on the FIFO"
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            if poller.poll(200):
                buf += os.read(fd, 256)
        words = buf.decode().split()
        assert words[0] == "ready", buf
        return words[1:]
    finally:
        os.close(fd)


def run_ready_file(app: str, binary: Path, run: appinfo.Run, tmp_path: Path) -> None:
    fifo = tmp_path / "ready.fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen([str(binary), *run.args(str(fifo))], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        payload = read_ready(fifo, proc)
        if app == "server":
            base = f"http://127.0.0.1:{int(payload[0])}"
            direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy
            with direct.open(base + "/", timeout=10) as r:
                assert r.read() == b"ok\n"
            with direct.open(base + "/lookup", timeout=10) as r:
                assert r.read() == b"root\n"
        else:
            assert int(payload[0]) == proc.pid
            proc.send_signal(signal.SIGSTOP)
            deadline = time.monotonic() + 10
            while _state(proc.pid) != "T" and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _state(proc.pid) == "T"
            proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    check_output(run, proc.returncode, out, err)


def run_all(app: str, mode: str, binary: Path, tmp_path: Path, default_only: bool = False
            ) -> int:
    info = appinfo.load(app)
    runs = info.runs_for(mode)[:1] if default_only else info.runs_for(mode)
    for run in runs:
        if info.needs_dns:
            netns_why = preflight.netns_reason()
            if netns_why:
                pytest.skip(f"{app} resolves names, so it runs only in a loopback netns: "
                            f"{netns_why}")
            r = run_in_loopback_netns([str(binary), *run.args()])
            check_output(run, int(str(r["rc"])), str(r["out"]), str(r["err"]))
            assert r["queries"], "the app never asked the loopback responder"
        elif info.lifecycle == "ready-file":
            run_ready_file(app, binary, run, tmp_path)
        else:
            run_to_exit(binary, run)
    return len(runs)


@pytest.mark.go
@pytest.mark.parametrize(("app", "mode"), MATRIX, ids=[f"{a}-{m}" for a, m in MATRIX])
def test_app_builds_and_runs(app: str, mode: str, prebuilt: None,
                             sample: Callable[..., Path], tmp_path: Path) -> None:
    binary = sample(app, mode)
    assert os.access(binary, os.X_OK)
    assert run_all(app, mode, binary, tmp_path) >= 1


@pytest.mark.go
@pytest.mark.parametrize(("app", "mode", "go"), OLD_MATRIX,
                         ids=[f"{a}-{m}-go{v}" for a, m, v in OLD_MATRIX])
def test_app_builds_and_runs_on_older_go(app: str, mode: str, go: str, prebuilt: None,
                                         sample: Callable[..., Path], tmp_path: Path) -> None:
    binary = sample(app, mode, go)
    run_all(app, mode, binary, tmp_path, default_only=True)


# Runs inside `unshare --net --mount`: lo up, a resolv.conf naming 127.0.0.1 bind-mounted over
# /etc/resolv.conf, the responder on 127.0.0.1:53, then the app; prints one JSON line.
NETNS_DRIVER = r"""
import json, subprocess, sys, tempfile
from sample_apps.dnsresponder import Responder
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
with tempfile.NamedTemporaryFile("w", suffix=".resolv.conf", delete=False) as f:
    f.write("nameserver 127.0.0.1\n")
subprocess.run(["mount", "--bind", f.name, "/etc/resolv.conf"], check=True)
with Responder(port=53, timeout=60) as dns:
    p = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=60)
print(json.dumps({"rc": p.returncode, "out": p.stdout, "err": p.stderr,
                  "queries": dns.queries}))
"""


def run_in_loopback_netns(argv: list[str], env: dict[str, str] | None = None
                          ) -> dict[str, object]:
    preflight.require("unshare", "ip", "mount")
    flags = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    proc = subprocess.run(["unshare", *flags, "--net", "--mount", sys.executable, "-c",
                           NETNS_DRIVER, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return result


@pytest.mark.go
@pytest.mark.netns
def test_dns_cgo_resolver_reaches_the_responder(sample: Callable[..., Path]) -> None:
    """GODEBUG=netdns=cgo: glibc's getaddrinfo asks the loopback responder, with a deadline."""
    binary = sample("dnslookup", "cgo")
    r = run_in_loopback_netns([str(binary), "-ctx", "-svc"], env={"GODEBUG": "netdns=cgo"})
    assert r["rc"] == 0, r
    assert "LookupHost(svc.cgotrace.test): 127.0.0.77" in str(r["out"])
    assert ["svc.cgotrace.test", 1] in r["queries"]


@pytest.mark.go
def test_dlopen_target_is_not_needed_statically(sample: Callable[..., Path]) -> None:
    """The point of the dlopen app: readelf cannot see the library it loads."""
    preflight.require("readelf")
    dynamic = subprocess.run(["readelf", "-d", str(sample("dlopen", "cgo"))],
                             capture_output=True, text=True, check=True).stdout
    assert "libc.so.6" in dynamic
    assert "libz.so" not in dynamic


@pytest.mark.go
def test_unsupported_mode_is_a_build_error() -> None:
    assert "pure" not in sample_build.supported_modes("sqlite")
    with pytest.raises(sample_build.BuildError, match="does not support mode pure"):
        sample_build.build("sqlite", "pure")


def test_every_app_has_app_toml_and_a_header() -> None:
    names = sample_build.apps()
    assert {a.name for a in APPS} == set(names)
    for name in names:
        head = sample_build.main_file(name).read_text().splitlines()[0]
        assert head.startswith(f"// {name}: "), (name, head)


def test_markers_resolve_to_exactly_one_call_line() -> None:
    used = 0
    for info in APPS:
        for e in info.expect:
            if e.no_user_frame is not None or e.via == "loader":
                continue
            file, line = appinfo.marker_line(info.name, e.marker)
            assert (file, line) == (e.file, e.line)
            code = (sample_build.APPS_DIR / info.name / file).read_text().splitlines()[line - 1]
            assert "(" in code.split("//")[0], f"{info.name}:{line}: marker is not on a call"
            used += 1
    assert used >= 10
    # Every marker in the sources is unique, whether or not app.toml uses it yet.
    for info in APPS:
        for marker, sites in appinfo.markers(info.name).items():
            assert len(sites) == 1, (info.name, marker, sites)


def test_marker_mechanism_rejects_missing_and_duplicate(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    app = tmp_path / "dup"
    app.mkdir()
    (app / "main.go").write_text("package main\n\nfunc main() {\n\tf() // expect:twice\n"
                                 "\tf() // expect:twice\n\tg() // expect:once\n}\n")
    monkeypatch.setattr(appinfo, "APPS_DIR", tmp_path)
    assert appinfo.marker_line("dup", "once") == ("main.go", 6)
    with pytest.raises(appinfo.AppInfoError, match="on 2 lines"):
        appinfo.marker_line("dup", "twice")
    with pytest.raises(appinfo.AppInfoError, match="on 0 lines"):
        appinfo.marker_line("dup", "never")


def test_userlookup_expectation_points_at_the_lookupid_call() -> None:
    info = appinfo.load("userlookup")
    (cgo,) = [e for e in info.expectations("cgo") if e.marker == "lookupid"]
    assert (cgo.path, cgo.go_api, cgo.via, cgo.c_function) == (
        "/etc/passwd", "os/user.LookupId", "cgo", "getpwuid_r")
    source = (sample_build.APPS_DIR / "userlookup" / cgo.file).read_text().splitlines()
    assert 'user.LookupId("0")' in source[cgo.line - 1]
    (pure,) = [e for e in info.expectations("pure") if e.marker == "lookupid"]
    assert pure.via == "go" and pure.c_function is None


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
