"""Real services to attach to: the sample server in a loopback netns, and a client loop.

`service(exe)` starts the DNS responder in a fresh network namespace (only `lo`; the
resolv.conf bound over /etc/resolv.conf in the server's private mount namespace names
127.0.0.1), the untraced server there (ready handshake on a FIFO), and yields a `Service`.
`Client` runs tests/integration/attach_client.py in the same namespace and counts answered
and failed requests. Every process started here is stopped by PID and reaped on exit.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PATH": "/usr/bin:/bin", "HOME": "/root"}


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    port: int
    netns_path: str
    seccomp: tuple[str, str] = ("0", "0")  # seccomp_state() before any attach

    @property
    def pid(self) -> int:
        return self.proc.pid


def read_ready(fd: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> list[str]:
    """The words after "ready" on the server's FIFO (polled so a dead server is noticed)."""
    buf = b""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        while not poller.poll(200):
            assert proc.poll() is None, f"server exited {proc.returncode} before it was ready"
            assert time.monotonic() < deadline, f"no ready line (got {buf!r})"
        chunk = os.read(fd, 256)
        if not chunk:
            time.sleep(0.05)
        buf += chunk
    words = buf.decode().split()
    assert words[0] == "ready", buf
    return words[1:]


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@contextlib.contextmanager
def loopback_dns() -> Iterator[str]:
    """A network namespace with the loopback DNS responder on 127.0.0.1:53; its path."""
    from sample_apps.dnsresponder import Responder
    from tracer.sandbox.netns import LoopbackNetwork

    with LoopbackNetwork(service=lambda: Responder(port=53, timeout=300)) as net:
        yield net.netns_path


@contextlib.contextmanager
def service(exe: Path, netns_path: str, *extra: str,
            env: dict[str, str] | None = None) -> Iterator[Service]:
    """The sample server, untraced, in `netns_path` with resolv.conf naming 127.0.0.1
    (`env` is added to its environment)."""
    from tracer.sandbox import container

    prepared = container.prepare(container.SandboxSpec(rootfs=None, network=netns_path), exe)
    with tempfile.TemporaryDirectory() as tmp:
        fifo = os.path.join(tmp, "ready.fifo")
        os.mkfifo(fifo)
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        proc = subprocess.Popen([str(exe), "--ready-file", fifo, "--timeout", "300s", *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env={**ENV, **(env or {})},
                                preexec_fn=prepared.child_setup)
        try:
            port = int(read_ready(fd, proc)[0])
            yield Service(proc, port, netns_path, seccomp_state(proc.pid))
        finally:
            os.close(fd)
            stop_process(proc)


class Client:
    """The request loop (attach_client.py) in the server's network namespace."""

    def __init__(self, svc: Service, requests: tuple[str, ...] = ()):
        """`requests`: PATH=ANSWER pairs instead of the client's default cycle."""
        from tracer.sandbox import netns

        path = svc.netns_path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.attach_client", str(svc.port),
             *requests],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            cwd=ROOT, preexec_fn=lambda: netns.join(path))
        self.ok = 0
        self.fail = 0
        self.failures: list[str] = []
        self.done = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            with self._cond:
                if line.startswith("failed "):
                    self.failures.append(line)
                elif line.startswith(("ok ", "done ok ")):
                    words = line.split()
                    self.ok, self.fail = int(words[-3]), int(words[-1])
                    self.done = line.startswith("done")
                self._cond.notify_all()

    def wait_for(self, more: int, timeout: float = 60) -> int:
        """Block until `more` further requests have succeeded; the count then."""
        with self._cond:
            target = self.ok + more
            assert self._cond.wait_for(lambda: self.ok >= target or self.proc.poll() is not None,
                                       timeout), f"client stalled at {self.ok} ok"
            assert self.ok >= target, f"client ended: {self.failures}"
            return self.ok

    def stop(self) -> tuple[int, int, list[str]]:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=10)
        return self.ok, self.fail, self.failures

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.stop()


def thread_states(pid: int) -> dict[int, str]:
    """tid -> State letter of every thread (t = stopped by a tracer, T = stopped)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
                if line.startswith("State:"):
                    out[int(tid)] = line.split()[1]
    return out


def status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise KeyError(name)


def seccomp_state(pid: int) -> tuple[str, str]:
    """The Seccomp mode and the number of filters of a process (/proc/PID/status): what an
    attach must leave as it found it (a test runner in a container already has a filter)."""
    return status_field(pid, "Seccomp"), status_field(pid, "Seccomp_filters")


def assert_untouched(pid: int, seccomp: tuple[str, str]) -> None:
    """Detached and left as it was: no tracer, the seccomp state it had before (`seccomp`,
    from seccomp_state), no thread stopped."""
    assert status_field(pid, "TracerPid") == "0"
    assert seccomp_state(pid) == seccomp
    deadline = time.monotonic() + 5
    while True:  # a thread may still be on its way out of the detach stop
        states = thread_states(pid)
        stopped = {t: s for t, s in states.items() if s in ("t", "T")}
        if not stopped or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not stopped, f"threads left stopped: {stopped}"
