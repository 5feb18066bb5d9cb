"""The sandbox in real namespaces: isolation, rootfs presets running real Go binaries,
exec-failure diagnosis, the loopback network holder.

launch.py is not needed: each test forks a child, calls the same `child_setup()` launch
calls, then runs a check or execs. Every child is reaped (and killed by PID on timeout).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import select
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tracer.sandbox import container, netns, roots
from tracer.sandbox.container import PreparedSandbox, SandboxSpec
from tracer.sandbox.netns import LoopbackNetwork

# host_mounts_unchanged compares this machine's mount table before and after a test:
# podman (test_images_cli.py) mounts in it too, so the two modules share one xdist worker
pytestmark = [pytest.mark.netns, pytest.mark.xdist_group("host-mount-table")]

TIMEOUT = 20.0


def _read_all(fd: int, deadline: float) -> bytes:
    out = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(left * 1000):
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
    return out


def _reap(pid: int, deadline: float) -> int:
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    pytest.fail(f"sandboxed child {pid} did not finish in {TIMEOUT}s")


def run_check(prep: PreparedSandbox, body: Callable[[], Any],
              setup: Callable[[PreparedSandbox], None] | None = None) -> Any:
    """Fork; the child sets the sandbox up, runs `body` and sends its JSON result back."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 0
        try:
            os.close(r)
            (setup or PreparedSandbox.child_setup)(prep)
            out = json.dumps({"ok": body()})
        except BaseException as e:
            out = json.dumps({"error": container.encode_child_error(e).decode()})
            code = 1
        with contextlib.suppress(OSError):
            os.write(w, out.encode())
        os._exit(code)
    os.close(w)
    deadline = time.monotonic() + TIMEOUT
    try:
        data = _read_all(r, deadline)
    finally:
        os.close(r)
        _reap(pid, deadline)
    result = json.loads(data)
    if "error" in result:
        raise container.decode_child_error(result["error"].encode())
    return result["ok"]


def run_exec(prep: PreparedSandbox, args: list[str] = ()) -> tuple[int | None, str, str | None]:
    """Fork, child_setup, execv(program_in_root). -> (exit code, output, exec diagnosis)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    fcntl.fcntl(err_w, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(out_r)
            os.close(err_r)
            devnull = os.open("/dev/null", os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(out_w, 1)
            os.dup2(out_w, 2)
            prep.child_setup()
            os.execv(prep.program_in_root, [prep.program_in_root, *args])
        except OSError as e:
            os.write(err_w, f"errno\t{e.errno}\n".encode())
        except BaseException as e:
            os.write(err_w, container.encode_child_error(e))
        os._exit(127)
    os.close(out_w)
    os.close(err_w)
    deadline = time.monotonic() + TIMEOUT
    try:
        output = _read_all(out_r, deadline).decode(errors="replace")
        failure = _read_all(err_r, deadline).decode()
    finally:
        os.close(out_r)
        os.close(err_r)
        status = _reap(pid, deadline)
    if failure.startswith("errno\t"):
        return None, output, prep.diagnose_exec_failure(int(failure.split("\t")[1]))
    if failure:
        raise container.decode_child_error(failure.encode())
    return os.waitstatus_to_exitcode(status), output, None


def _host_ipv4() -> str | None:
    """An address of one of this machine's own interfaces (never an off-machine one)."""
    for _, name in socket.if_nameindex():
        if name == "lo":
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                got = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()))
            except OSError:
                continue
            return socket.inet_ntoa(got[20:24])
    return None


def _mountinfo() -> list[str]:
    return sorted(line.split(" ", 4)[4] for line in Path("/proc/self/mountinfo").read_text()
                  .splitlines())


@pytest.fixture()
def host_mounts_unchanged() -> Iterator[None]:
    before = _mountinfo()
    yield
    assert _mountinfo() == before, "a sandbox mount leaked into the host's mount table"


# --- isolation --------------------------------------------------------------------------------


def _network_view() -> dict[str, Any]:
    view: dict[str, Any] = {"interfaces": netns.interfaces(), "lo_up": netns.link_is_up("lo"),
                            "hostname": socket.gethostname(), "uid": os.getuid()}
    view["resolv"] = Path("/etc/resolv.conf").read_text() if os.path.exists(
        "/etc/resolv.conf") else None
    view["root"] = sorted(os.listdir("/"))
    return view


def _send(addr: str) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(b"x", (addr, 9))
        except OSError as e:
            return errno.errorcode[e.errno or 0]
    return "sent"


@pytest.mark.parametrize("root", [None, "static"])
def test_loopback_network_is_isolated(root: str | None, host_mounts_unchanged: None) -> None:
    spec = SandboxSpec(rootfs=roots.resolve_rootfs(root) if root else None, hostname="boxed")
    prep = container.prepare(spec, "/bin/true")
    got = run_check(prep, lambda: {**_network_view(), "near": _send("127.0.0.1")})
    assert got["interfaces"] == ["lo"] and got["lo_up"]
    assert got["resolv"] == "nameserver 127.0.0.1\n"
    assert got["near"] == "sent"
    assert got["hostname"] == "boxed"
    assert socket.gethostname() != "boxed"
    if root:
        assert ".cgotrace" in got["root"] and "etc" in got["root"] and "work" not in got["root"]


@pytest.fixture
def host_ipv4() -> str:
    """An address of this machine's own (non-loopback) interface: something real to aim at
    from inside the sandbox. Without one the isolation check would have nothing to show."""
    target = _host_ipv4()
    if target is None:
        pytest.skip("this machine has no non-loopback IPv4 address to aim at")
    return target


@pytest.mark.parametrize("root", [None, "static"])
def test_the_hosts_own_address_is_unreachable_from_the_sandbox(root: str | None,
                                                               host_ipv4: str) -> None:
    # reachable from the host (the control), never from inside the sandbox
    assert _send(host_ipv4) == "sent"
    spec = SandboxSpec(rootfs=roots.resolve_rootfs(root) if root else None)
    prep = container.prepare(spec, "/bin/true")
    got = run_check(prep, lambda: {"far": _send(host_ipv4)})
    assert got["far"] == "ENETUNREACH"
    assert _host_ipv4() == host_ipv4  # the host's view is untouched


def test_network_none_has_lo_down() -> None:
    prep = container.prepare(SandboxSpec(rootfs=roots.resolve_rootfs("scratch"), network="none"),
                           "/bin/true")
    got = run_check(prep, lambda: {**_network_view(), "near": _send("127.0.0.1")})
    assert got["interfaces"] == ["lo"] and not got["lo_up"]
    assert got["near"] == "ENETUNREACH"
    assert got["resolv"] is None  # scratch: no /etc, so no resolv.conf at all
    assert "etc" not in got["root"]


def test_user_namespace_maps_an_unprivileged_user(host_mounts_unchanged: None) -> None:
    """Rootless: drop to nobody in the child, then build the whole sandbox in a userns."""
    prep = container.prepare(SandboxSpec(rootfs=roots.resolve_rootfs("static")), "/bin/true")
    prep = dataclasses.replace(prep, user_namespace=True, outer_uid=65534, outer_gid=65534)

    def drop_then_setup(p: PreparedSandbox) -> None:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        p.child_setup()

    got = run_check(prep, _network_view, setup=drop_then_setup)
    assert got["uid"] == 0  # root inside, nobody outside
    assert got["interfaces"] == ["lo"]
    assert got["resolv"] == "nameserver 127.0.0.1\n"


def test_pid_namespace_double_fork() -> None:
    prep = container.prepare(SandboxSpec(rootfs=roots.resolve_rootfs("static"),
                                       pid_namespace=True), "/bin/true")
    with pytest.raises(Exception, match="pid namespace"):
        prep.child_setup()  # refuses before touching anything

    def enter_fork_setup(p: PreparedSandbox) -> None:
        p.enter_namespaces()
        pid = os.fork()
        if pid:  # intermediate: pass the grandchild's status on
            _, status = os.waitpid(pid, 0)
            os._exit(os.waitstatus_to_exitcode(status))
        p.setup_root()

    got = run_check(prep, lambda: {"pid": os.getpid(),
                                   "procs": [d for d in os.listdir("/proc") if d.isdigit()]},
                    setup=enter_fork_setup)
    assert got["pid"] == 1
    assert got["procs"] == ["1"]


def test_setup_error_reaches_parent_as_one_line() -> None:
    prep = container.prepare(SandboxSpec(rootfs=roots.resolve_rootfs("static")), "/bin/true")
    broken = dataclasses.replace(prep, root=Path("/proc/self/nonexistent-root"))
    with pytest.raises(container.SandboxError) as ei:
        run_check(broken, lambda: None)
    assert "\n" not in ei.value.message and "failed" in ei.value.message


# --- Go binaries in the presets ---------------------------------------------------------------


@pytest.mark.go
def test_pure_go_runs_in_scratch(sample: Callable[..., Path]) -> None:
    prep = container.prepare(SandboxSpec(rootfs=roots.resolve_rootfs("scratch")),
                           sample("hello", "pure"))
    code, out, diag = run_exec(prep)
    assert diag is None and code == 0
    assert "hello from cgotrace sample" in out


@pytest.mark.go
def test_cgo_binary_runs_in_glibc(sample: Callable[..., Path]) -> None:
    prep = container.prepare(SandboxSpec(rootfs=roots.resolve_rootfs("glibc")),
                           sample("userlookup", "cgo"))
    code, out, diag = run_exec(prep)
    assert diag is None and code == 0, out
    assert "LookupId(0): root" in out


@pytest.mark.go
@pytest.mark.parametrize("preset", ["musl", "scratch"])
def test_cgo_binary_fails_with_named_interpreter(sample: Callable[..., Path],
                                                 preset: str) -> None:
    # hello has no cgo package, so even its cgo build is static: userlookup is the
    # glibc-dynamic one.
    prep = container.prepare(SandboxSpec(rootfs=roots.resolve_rootfs(preset)),
                           sample("userlookup", "cgo"))
    code, _out, diag = run_exec(prep)
    assert code is None and diag is not None
    assert diag.startswith("interpreter /lib64/ld-linux-x86-64.so.2 (named by PT_INTERP) is "
                           f"not in rootfs {preset}: exec fails with 'No such file or directory'")


@pytest.mark.go
def test_musl_static_userlookup_runs_in_musl(sample: Callable[..., Path]) -> None:
    prep = container.prepare(SandboxSpec(rootfs=roots.resolve_rootfs("musl")),
                           sample("userlookup", "musl"))
    code, out, diag = run_exec(prep)
    assert diag is None and code == 0, out
    assert "LookupId(0): root" in out
    assert "LookupGroup(root): 0" in out


# --- the loopback network holder --------------------------------------------------------------


class UdpEcho:
    """A tiny service for the holder: echoes datagrams on 127.0.0.1:port in a thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None

    def __enter__(self) -> UdpEcho:
        import threading

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", self.port))
        sock = self.sock

        def serve() -> None:
            while True:
                try:
                    data, peer = sock.recvfrom(512)
                except OSError:
                    return
                sock.sendto(b"echo:" + data, peer)

        threading.Thread(target=serve, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sock is not None:
            self.sock.close()


def _ask(port: int) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(b"ping", ("127.0.0.1", port))
        return s.recv(512).decode()


def test_loopback_network_serves_a_joined_sandbox() -> None:
    port = 5353
    with LoopbackNetwork(service=lambda: UdpEcho(port)) as net:
        holder = net.pid
        assert holder is not None and os.path.exists(net.netns_path)
        assert os.readlink(net.netns_path) != os.readlink("/proc/self/ns/net")
        prep = container.prepare(SandboxSpec(rootfs=roots.resolve_rootfs("static"),
                                           network=net.netns_path), "/bin/true")
        got = run_check(prep, lambda: {**_network_view(), "answer": _ask(port)})
        assert got["answer"] == "echo:ping"
        assert got["interfaces"] == ["lo"]
        assert got["resolv"] == "nameserver 127.0.0.1\n"
    with pytest.raises(ChildProcessError):
        os.waitpid(holder, os.WNOHANG)  # reaped
    with pytest.raises(Exception, match="not running"):
        _ = net.netns_path


def test_loopback_network_reports_a_failing_service() -> None:
    def broken() -> contextlib.AbstractContextManager[None]:
        raise RuntimeError("port taken")

    with pytest.raises(container.SandboxError, match="port taken"), LoopbackNetwork(service=broken):
        pass


class DnsQueryRecorder(UdpEcho):
    """Answers every DNS query on 127.0.0.1:53 with REFUSED and appends its name to a file:
    proof of where the program's resolver sent its queries."""

    def __init__(self, log: Path) -> None:
        super().__init__(53)
        self.log = log

    def __enter__(self) -> DnsQueryRecorder:
        import threading

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 53))
        sock, log = self.sock, self.log

        def serve() -> None:
            while True:
                try:
                    q, peer = sock.recvfrom(512)
                except OSError:
                    return
                labels, i = [], 12
                while i < len(q) and q[i]:
                    labels.append(q[i + 1:i + 1 + q[i]].decode(errors="replace"))
                    i += 1 + q[i]
                with open(log, "a") as f:
                    f.write(".".join(labels) + "\n")
                flags = 0x8000 | 0x0100 | 5  # response, recursion desired, REFUSED
                sock.sendto(q[:2] + struct.pack(">H", flags) + q[4:], peer)

        threading.Thread(target=serve, daemon=True).start()
        return self


@pytest.mark.go
def test_go_resolver_in_scratch_queries_only_the_namespace_loopback(
        sample: Callable[..., Path], tmp_path: Path) -> None:
    """scratch has no /etc/resolv.conf: Go's resolver falls back to 127.0.0.1:53, which in
    the sandbox's namespace is the recorder, never the machine's resolver."""
    log = tmp_path / "queries"
    log.touch()
    prog = sample("dnslookup", "pure")
    with LoopbackNetwork(service=lambda: DnsQueryRecorder(log)) as net:
        prep = container.prepare(SandboxSpec(rootfs=roots.resolve_rootfs("scratch"),
                                           network=net.netns_path), prog)
        code, out, diag = run_exec(prep, ["-svc"])
    assert diag is None
    assert "LookupHost(svc.cgotrace.test): error" in out  # REFUSED everywhere
    queried = log.read_text().split()
    assert any(q.startswith("svc.cgotrace.test") for q in queried), (queried, out)
    assert code != 0
