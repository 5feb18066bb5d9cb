"""Start a program under the tracer: fork, (sandbox hooks), seccomp filter, seize, exec.

The child installs the filter and then waits on a pipe instead of stopping itself: the
parent PTRACE_SEIZEs it and only then says "go", so the first watched call (the execve
itself) already stops. A pipe rather than SIGSTOP because in a new pid namespace the child
is PID 1, which ignores its own SIGSTOP. Everything the child reports (the grandchild's host
pid, ready, a hook's error, the exec errno) travels over one CLOEXEC pipe: EOF after "ready"
means the exec succeeded. See docs/sandbox.md ("tracer/sandbox/launch.py").
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import os
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from tracer import ptrace
from tracer.errors import CgotraceError, ExitCode, TracerError
from tracer.syscalls import seccomp
from tracer.syscalls.table import WATCHED, WATCHED_X86_64

Hook = Callable[[], None]

# Signals Python changes from their defaults; an exec'd program must get the defaults back.
_RESET_SIGNALS = tuple(s for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT,
                                   signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                                   signal.SIGCHLD))


@dataclass
class LaunchSpec:
    """What to run and how. Hooks run in the child before the filter (see module doc)."""

    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    exec_path: str | None = None
    cwd: str | None = None
    child_setup: Hook | None = None
    enter_namespaces: Hook | None = None
    setup_root: Hook | None = None
    pid_namespace: bool = False
    watched: Sequence[str] = field(default_factory=lambda: [s.name for s in WATCHED])
    # "ptrace": RET_TRACE filter; "notify": RET_USER_NOTIF filter with a listener (fails if
    # the kernel refuses); "auto": notify, else ptrace (Tracee.engine_reason says why)
    engine: str = "ptrace"


@dataclass
class Tracee:
    """A launched, seized program. `pid` is its host pid; `child` is the process this
    tracer forked (the pid-namespace intermediate, or `pid` itself)."""

    pid: int
    child: int
    exec_path: str
    report_fd: int
    engine: str = "ptrace"  # the engine the filter was installed for
    listener: int | None = None  # the seccomp listener fd (notify)
    engine_reason: str = ""  # why this engine (auto)
    wait_killable: bool = False  # the notify filter has SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV

    def exec_errno(self) -> int | None:
        """The errno of a failed exec, once the child has exited (None: exec succeeded)."""
        msg = _read_all(self.report_fd)
        for line in msg.split(b"\n"):
            if line.startswith(b"E"):
                return int(line[1:])
        return None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.report_fd)


def resolve_program(name: str, env: Mapping[str, str] | None = None) -> str:
    """argv[0] as execvp would find it; TracerError (exit 127) when it is nowhere."""
    if "/" in name:
        if not os.path.lexists(name):
            raise TracerError(f"{name}: no such file", exit_code=ExitCode.COMMAND_NOT_FOUND)
        return name
    import shutil  # only for a bare name

    path = (env if env is not None else os.environ).get("PATH", os.defpath)
    found = shutil.which(name, path=path)
    if found is None:
        # which() skips non-executable files: find one to say "not executable" later.
        for d in path.split(os.pathsep):
            candidate = os.path.join(d or ".", name)
            if os.path.isfile(candidate):
                return candidate
        raise TracerError(f"{name}: command not found", exit_code=ExitCode.COMMAND_NOT_FOUND)
    return found


def _read_all(fd: int) -> bytes:
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return out
        except OSError:
            return out
        if not chunk:
            return out
        out += chunk


def _encode_error(e: BaseException) -> bytes:
    try:
        from tracer.sandbox import container

        if isinstance(e, CgotraceError) and hasattr(container, "encode_child_error"):
            raw: bytes = container.encode_child_error(e)
            return b"S" + raw.rstrip(b"\n").replace(b"\n", b" ") + b"\n"
    except Exception:
        pass
    text = f"{type(e).__name__}\t{e}".replace("\n", " ")
    return b"S" + text.encode("utf-8", "replace") + b"\n"


def _decode_error(line: bytes) -> CgotraceError:
    try:
        from tracer.sandbox import container

        if hasattr(container, "decode_child_error"):
            err: CgotraceError = container.decode_child_error(line + b"\n")
            return err
    except Exception:
        pass
    _, _, message = line.decode("utf-8", "replace").partition("\t")
    return TracerError(f"setting up the program failed: {message or line!r}")


def _child(spec: LaunchSpec, path: str, env: Mapping[str, str], prog: list[seccomp.Insn],
           report_w: int, go_r: int, notify_prog: list[seccomp.Insn] | None = None,
           fd_sock: socket.socket | None = None) -> None:
    """Runs in the forked child; never returns."""
    code = 125
    try:
        for sig in _RESET_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        if spec.pid_namespace:
            if spec.enter_namespaces is not None:
                spec.enter_namespaces()
            grandchild = os.fork()
            if grandchild:
                os.write(report_w, b"P%d\n" % grandchild)
                os.close(report_w)
                os.close(go_r)
                _, status = os.waitpid(grandchild, 0)
                os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
            if spec.setup_root is not None:
                spec.setup_root()
        elif spec.child_setup is not None:
            spec.child_setup()
        if spec.cwd is not None:
            os.chdir(spec.cwd)
        _install_filter(prog, notify_prog, fd_sock, report_w)
        os.write(report_w, b"R\n")
        if os.read(go_r, 1) != b"g":
            os._exit(125)
        os.close(go_r)
        code = 127
        os.execve(path, list(spec.argv), dict(env))
    except OSError as e:
        if code == 127:
            os.write(report_w, b"E%d\n" % (e.errno or 0))
            os._exit(127 if e.errno == errno_mod.ENOENT else 126)
        os.write(report_w, _encode_error(e))
    except BaseException as e:  # a hook's CgotraceError, or anything else
        with contextlib.suppress(BaseException):
            os.write(report_w, _encode_error(e))
    os._exit(code)


def _install_filter(prog: list[seccomp.Insn], notify_prog: list[seccomp.Insn] | None,
                    fd_sock: socket.socket | None, report_w: int) -> None:
    """In the child: the notify filter (listener fd sent to the parent) when asked, with
    the ptrace filter as the fallback when allowed (`N`: notify, `F<errno>`: fell back)."""
    if notify_prog is not None and fd_sock is not None:
        try:
            fd, said = _install_listener(notify_prog)
        except OSError as e:
            if prog:
                os.write(report_w, b"F%d\n" % (e.errno or 0))
                seccomp.install(prog)
                return
            raise
        socket.send_fds(fd_sock, [b"N"], [fd])
        os.close(fd)  # the tracee must not hold its own listener
        fd_sock.close()
        os.write(report_w, said)
        return
    seccomp.install(prog)


WAIT_KILLABLE_ENV = "CGOTRACE_WAIT_KILLABLE"


def _install_listener(notify_prog: list[seccomp.Insn]) -> tuple[int, bytes]:
    """The notify filter with WAIT_KILLABLE_RECV when the kernel has it (6.0+) and
    $CGOTRACE_WAIT_KILLABLE is not 0, else without: (listener, the line for the parent:
    `K` with the flag, `N` without)."""
    if os.environ.get(WAIT_KILLABLE_ENV, "1").strip().lower() not in ("0", "no", "off",
                                                                       "false"):
        try:
            return seccomp.install_listener(notify_prog, wait_killable=True), b"K\n"
        except OSError as e:
            if e.errno != errno_mod.EINVAL:
                raise
    return seccomp.install_listener(notify_prog), b"N\n"


def _notify_reason(engine: str) -> str | None:
    """Why notify is not even tried (None: try it)."""
    if engine == "ptrace":
        return "--engine ptrace"
    if os.environ.get("CGOTRACE_NO_NOTIFY"):
        return "CGOTRACE_NO_NOTIFY is set"
    return None


def launch(spec: LaunchSpec) -> Tracee:
    """Fork and seize the program; it is about to exec when this returns (run the loop).

    Raises TracerError (127) when the program cannot be found, the hook's CgotraceError
    when setup failed in the child, TracerError (125) when seizing fails.
    """
    env = dict(os.environ) if spec.env is None else dict(spec.env)
    path = spec.exec_path or resolve_program(spec.argv[0], env)
    numbers = [WATCHED_X86_64[n] for n in spec.watched]
    prog = seccomp.build_filter(numbers)
    skip = _notify_reason(spec.engine)
    if skip is not None and spec.engine == "notify":
        raise TracerError(f"the notify engine is unavailable: {skip}",
                          help="use --engine ptrace or auto")
    notify_prog = None if skip is not None else seccomp.build_filter(
        numbers, seccomp.SECCOMP_RET_USER_NOTIF)
    fallback = prog if spec.engine == "auto" or notify_prog is None else []
    parent_sock = child_sock = None
    if notify_prog is not None:
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:
        os.close(report_r)
        os.close(go_w)
        if parent_sock is not None:
            parent_sock.close()
        _child(spec, path, env, fallback, report_w, go_r, notify_prog, child_sock)
    os.close(report_w)
    os.close(go_r)
    if child_sock is not None:
        child_sock.close()
    pid = child
    engine, reason, listener, killable = "ptrace", skip or "", None, False
    buf = b""
    try:
        while True:
            chunk = os.read(report_r, 4096)
            buf += chunk
            lines = buf.split(b"\n")
            buf = lines[-1]  # each complete line is handled once
            for line in lines[:-1]:
                if line.startswith(b"P"):
                    pid = int(line[1:])
                elif line.startswith(b"S"):
                    raise _decode_error(line[1:])
                elif line.startswith(b"F"):
                    reason = ("seccomp user notification refused "
                              f"({errno_mod.errorcode.get(int(line[1:]), line[1:].decode())})")
                elif line in (b"N", b"K") and parent_sock is not None:
                    _, fds, _, _ = socket.recv_fds(parent_sock, 16, 1)
                    if not fds:
                        raise TracerError("the seccomp listener was not received")
                    listener, engine, killable = fds[0], "notify", line == b"K"
                    reason = reason or "seccomp user notification available"
                elif line == b"R":
                    break
            else:
                if not chunk:
                    raise TracerError("the traced program's launcher exited before exec")
                continue
            break
        try:
            ptrace.seize(pid, ptrace.LAUNCH_OPTIONS)
        except ptrace.PtraceRequestError as e:
            raise TracerError(f"cannot trace the program: PTRACE_SEIZE failed ({e.strerror})",
                              help="ptrace may be restricted here (kernel.yama.ptrace_scope, "
                              "a container without CAP_SYS_PTRACE)") from None
        os.write(go_w, b"g")
    except BaseException:
        _kill_and_reap(child, pid)
        os.close(report_r)
        if listener is not None:
            os.close(listener)
        raise
    finally:
        os.close(go_w)
        if parent_sock is not None:
            parent_sock.close()
    os.set_blocking(report_r, False)
    return Tracee(pid=pid, child=child, exec_path=path, report_fd=report_r, engine=engine,
                  listener=listener, engine_reason=reason, wait_killable=killable)


def _kill_and_reap(child: int, pid: int) -> None:
    for p in {child, pid}:
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(child, 0)


SI_KERNEL = 0x80
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class SignalForwarder:
    """Forward SIGINT/SIGTERM/SIGHUP/SIGQUIT sent to the tracer on to the program.

    The signals are blocked in the tracer and collected by a helper thread with
    sigwaitinfo, which sees si_code: a terminal's Ctrl-C/Ctrl-\\ (si_code SI_KERNEL) has
    already reached the program, which shares our process group, so only signals sent with
    kill() are forwarded (no duplicate SIGINT). The thread only calls kill(2), never ptrace.
    Start it after `launch` (the child must not inherit the blocked mask before exec; it
    resets its mask anyway).
    """

    def __init__(self, pid: int, signals: Sequence[int] = FORWARDED_SIGNALS):
        self.pid = pid
        self.signals = set(signals)
        self.forwarded: list[int] = []
        self._old_mask: set[int] | None = None
        self._active = True

    def start(self) -> SignalForwarder:
        import threading

        self._old_mask = {int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, self.signals)}
        threading.Thread(target=self._run, name="cgotrace-signals", daemon=True).start()
        return self

    def _run(self) -> None:
        while True:
            info = signal.sigwaitinfo(self.signals)
            if info.si_code == SI_KERNEL or not self._active or self.pid <= 0:
                continue
            try:
                os.kill(self.pid, info.si_signo)
                self.forwarded.append(info.si_signo)
            except ProcessLookupError:
                return

    def stop(self) -> None:
        """Stop forwarding. The signals stay blocked (a late one is dropped, not fatal):
        the helper thread may still be waiting for them."""
        self._active = False
