"""`cgotrace attach`: a live server under a client loop, traced, then left as it was.

GIVEN the sample server (untraced) in a loopback network namespace whose resolv.conf names
127.0.0.1 where the DNS responder answers, and a client cycling through /, a user lookup
and a DNS lookup; WHEN cgotrace attaches for a few seconds (or is stopped by a signal, or
killed); THEN the user lookup and the DNS lookup are captured with their Go API, user frame
and stack, no client request fails during or after, and the server is left with no tracer,
no seccomp filter and no stopped thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sample_apps import appinfo
from tests.integration.attach_helpers import (
    ROOT,
    Client,
    assert_untouched,
    loopback_dns,
    seccomp_state,
    service,
    stop_process,
)
from tests.integration.tracing_helpers import with_repeats
from tracer.trace.model import Access, Repeats

pytestmark = [pytest.mark.ptrace, pytest.mark.go, pytest.mark.netns]

ATTACH_SECONDS = 3.0


def _cgotrace(*args: str) -> list[str]:
    return [sys.executable, "-m", "tracer", *args]


def _attributed(accesses: list[Access], path: str, go_api: str, marker: str
                ) -> list[Access]:
    file, line = appinfo.marker_line("server", marker)
    out = []
    for a in accesses:
        at = a.attribution
        if a.path != path or at is None or at.go_api != go_api or at.user_frame is None:
            continue
        if (at.user_frame.file or "").endswith(file) and at.user_frame.line == line:
            out.append(a)
    return out


CLIENTS = 3  # concurrent request loops: the load the attach must not disturb


@pytest.mark.parametrize("mode", ["cgo", "stripped", "pure"])
def test_attach_captures_lookups_and_detaches(mode: str, sample: Callable[..., Path]) -> None:
    from tracer.attribution.attributor import Attributor
    from tracer.commands.attach import AttachOptions, attach_process

    exe = sample("server", mode)
    with loopback_dns() as ns, service(exe, ns) as svc, contextlib.ExitStack() as stack:
        clients = [stack.enter_context(Client(svc)) for _ in range(CLIENTS)]
        for client in clients:
            client.wait_for(3)  # serving all of them before we come
        during = [client.ok for client in clients]
        got: list[Access] = []
        result = attach_process(AttachOptions(svc.pid, duration=ATTACH_SECONDS,
                                              attributor=Attributor(), on_access=got.append,
                                              handle_signals=False))
        assert result.ended is None and "detached" in result.how
        assert result.threads >= 2
        assert_untouched(svc.pid, svc.seccomp)
        served = [client.ok - n for client, n in zip(clients, during, strict=True)]
        assert all(served), f"a client got no answer while attached: {served}"
        for client in clients:
            client.wait_for(3)  # and serving all of them after we left
        outcomes = [client.stop() for client in clients]
        assert svc.proc.poll() is None, "the server died"
    failures = [line for _, _, lines in outcomes for line in lines]
    assert sum(fail for _, fail, _ in outcomes) == 0, failures
    users = _attributed(got, "/etc/passwd", "os/user.LookupId", "server-lookupid")
    assert users, "no attributed /etc/passwd access among " + repr(
        sorted({(a.path, a.attribution.go_api if a.attribution else None) for a in got}))
    want_via = "go" if mode == "pure" else "cgo"
    assert {a.attribution.via.value for a in users if a.attribution} == {want_via}
    if want_via == "cgo":
        assert all(a.attribution and a.attribution.c_function == "getpwuid_r" for a in users)
    dns = _attributed(got, "127.0.0.1:53", "net.(*Resolver).LookupHost", "server-dns")
    assert dns, "no attributed DNS query among " + repr(sorted({a.path for a in got}))
    # the stack from the syscall up: for the user lookup through LookupId to the handler;
    # the DNS query runs in net's lookup goroutine, its user frame is that goroutine's creator
    at = users[0].attribution
    assert at is not None and at.user_frame is not None
    user_stack = [f.function for f in at.stack]
    assert user_stack.index(at.user_frame.function) > user_stack.index("os/user.LookupId")
    dns_stack = [f.function for f in dns[0].attribution.stack]  # type: ignore[union-attr]
    assert "net.(*Resolver).dial" in dns_stack, dns_stack
    assert result.summary["attach"]["pid"] == svc.pid
    assert any(h["path"] == "/etc/passwd" for h in result.summary["hidden"])


@pytest.mark.parametrize("netdns", ["", "cgo"])
def test_a_proxy_upstream_is_traffic_not_a_name_server(netdns: str,
                                                       sample: Callable[..., Path]) -> None:
    """The server as a reverse proxy (GET /proxy?to=HOST:PORT relays to its own port, a
    fresh connection each time) and DNS lookups through the responder: the upstream's
    connects are the program's own traffic (kind network, counted per address, no
    dependency, no finding, EINPROGRESS not an error); the name server 127.0.0.1:53 is the
    one name-server access. With GODEBUG=netdns=cgo the upstream's name (localhost) goes
    through getaddrinfo: resolver-cgo at that site, and no resolver-go anywhere (Go's
    resolver never ran)."""
    from probes.records import verdict
    from tracer.attribution.attributor import Attributor
    from tracer.commands.attach import AttachOptions, attach_process
    from tracer.reporters import render
    from tracer.trace.model import AccessKind

    exe = sample("server", "cgo")
    env = {"GODEBUG": f"netdns={netdns}"} if netdns else {}
    with loopback_dns() as ns, service(exe, ns, env=env) as svc:
        host = "localhost" if netdns else "127.0.0.1"
        upstream = f"127.0.0.1:{svc.port}"
        requests = (f"/proxy?to={host}:{svc.port}=ok", "/dns?name=svc.cgotrace.test=127.0.0.77")
        with Client(svc, requests) as client:
            client.wait_for(2)
            got: list[Access] = []
            totals: dict[int, Repeats] = {}
            result = attach_process(AttachOptions(
                svc.pid, duration=ATTACH_SECONDS, attributor=Attributor(),
                on_access=got.append, handle_signals=False,
                on_repeats=lambda a, total, _: totals.__setitem__(a.seq, total)))
            got = with_repeats(got, totals)  # a record counts its repeats (Access.calls)
            client.wait_for(2)
            ok, fail, failures = client.stop()
        assert_untouched(svc.pid, svc.seccomp)
    assert fail == 0, failures
    dials = [a for a in got if a.syscall == "connect" and a.path == upstream]
    assert dials, sorted({a.path for a in got if a.syscall == "connect"})
    assert {a.kind for a in dials} == {AccessKind.NETWORK} and not any(a.hidden for a in dials)
    assert {a.result for a in dials} == {"EINPROGRESS"}  # Go's non-blocking connect
    an = result.analysis
    assert an.attach["start_time"] == result.start_time  # the window, as the CLI reports it
    assert an.attach["end_time"] == result.end_time and an.attach["detached"] is True
    assert not [d.path for d in an.dependencies if d.path == upstream]
    assert not [f.id for f in an.findings if upstream in f.paths]
    (conn,) = [c for c in an.connections if c.address == upstream]
    calls = sum(a.calls for a in dials)
    assert conn.count == calls and conn.results == (("ok", calls),)
    text = render(an, "text")
    assert "program traffic: " in text and f"{upstream} x{calls}" in text
    assert "EINPROGRESS" not in text
    ids = [f.id for f in an.findings]
    names = {d.path: d for d in an.dependencies if d.path == "127.0.0.1:53"}
    assert names and names["127.0.0.1:53"].feature == "resolver"
    if netdns == "cgo":
        assert "resolver-cgo" in ids and "resolver-go" not in ids, ids
        assert names["127.0.0.1:53"].cls.value == "hidden"  # asked by glibc
    else:
        (go,) = [f for f in an.findings if f.id == "resolver-go"]
        assert go.paths == ("127.0.0.1:53",) and "resolver-cgo" not in ids
        assert names["127.0.0.1:53"].cls.value == "runtime-file"
    assert verdict(an).status == "works"


def _wait_for_header(path: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if path.exists() and path.read_text().endswith("\n"):
            return dict(json.loads(path.read_text().splitlines()[0]))
        time.sleep(0.05)
    raise AssertionError("cgotrace attach wrote no header")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_ends_attach_cleanly(sig: int, sample: Callable[..., Path],
                                    tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) or SIGTERM to cgotrace: detach, exit 0, the trace says when."""
    exe = sample("server", "cgo")
    trace = tmp_path / "t.jsonl"
    with loopback_dns() as ns, service(exe, ns) as svc, Client(svc) as client:
        client.wait_for(3)
        tracer = subprocess.Popen(_cgotrace("attach", str(svc.pid), "-o", str(trace)),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
        try:
            header = _wait_for_header(trace, tracer)
            client.wait_for(6)  # requests served while attached
            tracer.send_signal(sig)
            out, err = tracer.communicate(timeout=60)
        finally:
            stop_process(tracer, signal.SIGKILL)
        assert tracer.returncode == 0, err.decode()
        assert_untouched(svc.pid, svc.seccomp)
        client.wait_for(3)
        ok, fail, failures = client.stop()
    assert fail == 0, failures
    stderr = err.decode()
    assert "every syscall entry and exit" in stderr  # it says what it costs, at the start
    assert f"stopped by {signal.Signals(sig).name}, detached" in stderr
    assert header["mode"] == "attach" and header["attach"]["pid"] == svc.pid
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    end = lines[-1]
    assert end["type"] == "exit" and end["attach"]["detached"] is True
    assert end["attach"]["end_time"] > header["attach"]["start_time"]
    from tracer.trace.recorder import read_trace

    read = read_trace(str(trace))  # the reader puts the end time into the header
    assert read.header["attach"]["end_time"] == end["attach"]["end_time"]
    report = subprocess.run(_cgotrace("report", str(trace)), capture_output=True, text=True,
                            cwd=ROOT)
    assert report.returncode == 0 and "/etc/passwd" in report.stdout, report.stderr
    # the saved report says it came from an attach, its window, and that the process lived on
    head = report.stdout.splitlines()
    assert f"still running at detach (stopped by {signal.Signals(sig).name}, detached)" \
        in head[0]
    assert head[1].startswith(f"attached to pid {svc.pid} (server-cgo) from ")
    assert head[2].startswith("verdict: works")
    doc = json.loads(subprocess.run(_cgotrace("report", "--format", "json", str(trace)),
                                    capture_output=True, text=True, cwd=ROOT).stdout)
    assert doc["exit"]["exit_code"] is None  # it never exited: not 0
    assert doc["attach"]["detached"] is True and doc["attach"]["pid"] == svc.pid
    assert doc["verdict"]["verdict"] == "works"


def test_tracer_sigkill_leaves_server_serving(sample: Callable[..., Path],
                                              tmp_path: Path) -> None:
    """SIGKILL of the tracer mid-attach: the kernel detaches; the server keeps serving
    (no EXITKILL, no filter that would turn its calls into ENOSYS)."""
    exe = sample("server", "cgo")
    trace = tmp_path / "t.jsonl"
    with loopback_dns() as ns, service(exe, ns) as svc, Client(svc) as client:
        client.wait_for(3)
        tracer = subprocess.Popen(_cgotrace("attach", str(svc.pid), "-o", str(trace)),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  cwd=ROOT)
        try:
            _wait_for_header(trace, tracer)
            client.wait_for(6)
            tracer.kill()
            tracer.wait(timeout=30)
        finally:
            stop_process(tracer, signal.SIGKILL)
        assert tracer.returncode == -signal.SIGKILL
        assert_untouched(svc.pid, svc.seccomp)
        client.wait_for(9)  # lookups (user and DNS) still answered correctly
        ok, fail, failures = client.stop()
        assert svc.proc.poll() is None
    assert fail == 0, failures
    assert sum(1 for line in trace.read_text().splitlines() if '"access"' in line) > 0
    # the report judges the service by what was seen, never "fails" for the tracer's death
    report = subprocess.run(_cgotrace("report", str(trace)), capture_output=True, text=True,
                            cwd=ROOT)
    assert report.returncode == 0, report.stderr
    head = report.stdout.splitlines()
    assert "cgotrace died while attached" in head[0], head[:3]
    assert head[1].startswith(f"attached to pid {svc.pid} (server-cgo) from ") \
        and "to an unknown end (last record " in head[1]
    assert head[2].startswith("verdict: works"), head[:3]
    assert "the trace is incomplete" not in report.stdout
    html = subprocess.run(_cgotrace("report", "--format", "html", str(trace)),
                          capture_output=True, text=True, cwd=ROOT).stdout
    assert f"attached to pid {svc.pid} (server-cgo)" in html and "verdict: works" in html
    doc = json.loads(subprocess.run(_cgotrace("report", "--format", "json", str(trace)),
                                    capture_output=True, text=True, cwd=ROOT).stdout)
    assert doc["exit"] is None and doc["attach"]["tracer_died"] is True
    assert doc["verdict"]["verdict"] == "works"


def test_signal_to_the_process_is_not_lost(sample: Callable[..., Path]) -> None:
    """SIGTERM sent to the server as the attach ends: delivered (traced or at the detach),
    never lost; the server shuts down gracefully and the attach reports how it ended."""
    from tracer.commands.attach import AttachOptions, attach_process

    exe = sample("server", "cgo")
    with loopback_dns() as ns, service(exe, ns) as svc:

        def attached(engine: object) -> None:
            def end() -> None:
                os.kill(svc.pid, signal.SIGTERM)
                engine.request_stop()  # type: ignore[attr-defined]

            import threading

            threading.Timer(0.5, end).start()

        result = attach_process(AttachOptions(svc.pid, on_attached=attached,
                                              handle_signals=False))
        assert svc.proc.wait(timeout=20) == 0
        out = svc.proc.stdout.read().decode() if svc.proc.stdout else ""
    assert "server: got terminated" in out and "server: stopped" in out, out
    assert result.ended is None or result.ended.code == 0


def _start_in_container(prepared: object, argv: list[str]) -> tuple[int, int]:
    """Fork the server into the sandbox's namespaces as PID 1 of a new pid namespace,
    untraced (the way a container engine would): (intermediate pid, server's host pid)."""
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:  # pragma: no cover (child)
        code = 125
        try:
            os.close(r)
            prepared.enter_namespaces()  # type: ignore[attr-defined]
            inner = os.fork()
            if inner == 0:
                prepared.setup_root()  # type: ignore[attr-defined]
                os.execve(argv[0], argv, {"PATH": "/usr/bin:/bin", "HOME": "/root"})
            os.write(w, f"{inner}\n".encode())
            code = os.waitstatus_to_exitcode(os.waitpid(inner, 0)[1])
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        line = f.readline()
    assert line, "the container did not start"
    return middle, int(line)


def test_attach_into_a_container(sample: Callable[..., Path], tmp_path: Path) -> None:
    """A server in its own mount, pid and network namespaces, whose binary exists only
    inside the container: NSpid translated, paths as seen plus the host path through
    /proc/PID/root, stacks still symbolized."""
    from tests.integration.attach_helpers import Service, read_ready
    from tracer.attribution.attributor import Attributor
    from tracer.commands.attach import AttachOptions, attach_process
    from tracer.sandbox import container
    from tracer.sandbox.roots import resolve_rootfs

    exe = sample("server", "cgo")
    fifo = tmp_path / "ready.fifo"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    with loopback_dns() as ns:
        spec = container.SandboxSpec(rootfs=resolve_rootfs("glibc"), network=ns,
                                   pid_namespace=True,
                                   binds=(container.Bind(tmp_path, "/run/ready", False),))
        prepared = container.prepare(spec, exe)
        argv = [prepared.program_in_root, "--ready-file", "/run/ready/ready.fifo",
                "--timeout", "300s"]
        middle, pid = _start_in_container(prepared, argv)
        try:
            fake = subprocess.Popen(["true"])  # read_ready wants a Popen to poll
            port = int(read_ready(fd, fake)[0])
            fake.wait()
            exe_link = os.readlink(f"/proc/{pid}/exe")
            assert exe_link == prepared.program_in_root and not os.path.exists(exe_link)
            svc = Service(proc=fake, port=port, netns_path=ns, seccomp=seccomp_state(pid))
            with Client(svc) as client:
                client.wait_for(3)
                got: list[Access] = []
                result = attach_process(AttachOptions(pid, duration=ATTACH_SECONDS,
                                                      attributor=Attributor(),
                                                      on_access=got.append,
                                                      handle_signals=False))
                assert_untouched(pid, svc.seccomp)
                client.wait_for(3)
                ok, fail, failures = client.stop()
            assert fail == 0, failures
            from tracer.commands.snapshot import take_snapshot

            snap = take_snapshot(pid)  # the NEEDED closure resolved in the container's root
            roles = {os.path.basename(lib.path): lib.role for lib in snap.libraries}
            assert roles.get("libc.so.6") == "needed", roles
            assert "interpreter" in roles.values(), roles
            assert snap.process.nspid == (pid, 1) and snap.process.in_container
        finally:
            os.close(fd)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            _, status = os.waitpid(middle, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # the server shut down cleanly
    info = result.summary["attach"]
    assert info["nspid"] == [pid, 1] and "pid" in info["namespaces"]
    assert info["tid_in_namespace"][pid] == 1
    users = _attributed(got, "/etc/passwd", "os/user.LookupId", "server-lookupid")
    assert users, sorted({a.path for a in got})
    assert users[0].host_path == f"/proc/{pid}/root/etc/passwd"
    assert users[0].attribution is not None and users[0].attribution.via.value == "cgo"


_THREADS_C = r"""
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>
static void *work(void *arg) { int fd = open("/etc/hostname", O_RDONLY); if (fd >= 0) close(fd);
                               return arg; }
int main(void) { for (int i = 0; i < 3000; i++) { pthread_t t;
    if (pthread_create(&t, 0, work, 0) == 0) pthread_join(t, 0); usleep(10000); } return 0; }
"""


def test_threads_started_during_the_attach_are_traced(tmp_path: Path) -> None:
    """A process that keeps starting threads: the new ones are seized too, and left."""
    from tests.integration.tracing_helpers import compile_c
    from tracer.commands.attach import AttachOptions, attach_process

    prog = compile_c(_THREADS_C)
    proc = subprocess.Popen([str(prog)])
    try:
        time.sleep(0.2)
        seccomp = seccomp_state(proc.pid)
        got: list[Access] = []
        before: set[int] = set()
        result = attach_process(AttachOptions(
            proc.pid, duration=1.5, on_access=got.append, handle_signals=False,
            on_attached=lambda engine: before.update(engine.seized)))  # type: ignore[attr-defined]
        assert result.ended is None, result.how
        assert_untouched(proc.pid, seccomp)
        assert proc.poll() is None
    finally:
        stop_process(proc, signal.SIGKILL)
    tids = {a.tid for a in got if a.path == "/etc/hostname"}
    assert len(tids - before) >= 5, (tids, before)


def test_a_failure_inside_the_tracer_still_detaches() -> None:
    """A bug while a thread is held in its syscall stop: the error surfaces, and the
    process is still detached and left running."""
    from tests.integration.tracing_helpers import compile_c
    from tracer.engine.stepping import AttachEngine
    from tracer.recording.collector import EventCollector

    class Broken(EventCollector):
        def on_entry(self, view: object, *args: object) -> object:  # type: ignore[override]
            raise RuntimeError("collector bug")

    proc = subprocess.Popen([str(compile_c(_THREADS_C))])
    try:
        time.sleep(0.2)
        seccomp = seccomp_state(proc.pid)
        engine = AttachEngine(proc.pid)
        engine.seize()
        with pytest.raises(RuntimeError, match="collector bug"):
            engine.run(Broken(on_access=lambda a: None))
        assert engine.detached
        assert_untouched(proc.pid, seccomp)
        assert proc.poll() is None
    finally:
        stop_process(proc, signal.SIGKILL)


def test_exec_from_a_non_leader_thread_while_attached() -> None:
    """The leader waits inside an unwatched call while another thread execs: the exec is
    reported under the leader's tid, and its result is still recorded."""
    from tests.integration.tracing_helpers import compile_c
    from tracer.commands.attach import AttachOptions, attach_process

    prog = compile_c(r"""
#include <pthread.h>
#include <unistd.h>
static void *later(void *arg) { sleep(1); char *argv[] = {"/bin/true", 0};
                                execv("/bin/true", argv); return arg; }
int main(void) { pthread_t t; pthread_create(&t, 0, later, 0); for (;;) pause(); }
""")
    proc = subprocess.Popen([str(prog)])
    try:
        time.sleep(0.2)
        got: list[Access] = []
        result = attach_process(AttachOptions(proc.pid, duration=20, on_access=got.append,
                                              handle_signals=False))
    finally:
        stop_process(proc, signal.SIGKILL)
    assert result.ended is not None and result.ended.code == 0, result.how
    execs = [a for a in got if a.syscall == "execve" and a.path == "/bin/true"]
    assert execs and execs[0].result == "ok" and execs[0].pid == proc.pid, got


def test_attach_gate_fails_on_a_finding_and_an_allow_list_passes_it(
        sample: Callable[..., Path], tmp_path: Path) -> None:
    """`attach --fail-on`: exit 1 and the gate's line when the findings match; the same
    attach with an allow-list that covers them exits 0. A bad --fail-on is refused before
    the process is touched."""
    bad = subprocess.run(_cgotrace("attach", "1", "--fail-on", "no-such-thing!"),
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "no-such-thing!" in bad.stderr, bad.stderr
    allow = tmp_path / "allow.toml"
    allow.write_text('[[allow]]\nid = "user-lookup-cgo"\nreason = "the image ships passwd"\n')
    exe = sample("server", "cgo")
    with loopback_dns() as ns, service(exe, ns) as svc, Client(svc) as client:
        client.wait_for(3)
        runs = {}
        for label, extra in (("gated", ()), ("allowed", ("--allow", str(allow)))):
            runs[label] = subprocess.run(
                _cgotrace("attach", str(svc.pid), "-q", "--duration", "2",
                          "--fail-on", "user-lookup-cgo", *extra),
                capture_output=True, text=True, cwd=ROOT, timeout=120)
            assert_untouched(svc.pid, svc.seccomp)
        ok, fail, failures = client.stop()
    assert fail == 0, failures
    gated, allowed = runs["gated"], runs["allowed"]
    assert gated.returncode == 1, gated.stderr
    assert "cgotrace: gate failed: user-lookup-cgo" in gated.stderr
    assert allowed.returncode == 0, allowed.stderr
    assert "cgotrace: gate passed (1 allowed)" in allowed.stderr
