"""One traced run, end to end: static facts, (sandbox), launch, loop, trace file, summary.

`cgotrace run` is a thin shell over `trace_program`; tests call it directly (it takes a
`child_setup` hook, e.g. a private network namespace, and an attributor).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tracer.classify import Classifier
from tracer.loop import FAULT_SIGNALS, Attributor, Loop
from tracer.model import Access, ExitStatus, ProcessEvent
from tracer.recorder import TraceWriter
from tracer.session.launch import (
    LaunchSpec,
    SignalForwarder,
    describe_exec_failure,
    launch,
    resolve_program,
)
from tracer.summary import SummaryBuilder
from tracer.syscalls.entry import EntryDecoder


@dataclass
class RunOptions:
    argv: list[str]
    output: str | None = None
    rootfs: str | None = None
    network: str | None = None  # None: host network without a sandbox, unless rootfs
    env: dict[str, str] | None = None
    child_setup: Callable[[], None] | None = None  # tests: e.g. unshare(CLONE_NEWNET)
    attributor: Attributor | None = None
    forward_signals: bool = True
    debug: bool = False
    on_access: Callable[[Access], None] | None = None  # extra consumer (tests)
    rules: Any = None  # probes.ruleset rules (None: the packaged ones)


@dataclass
class RunResult:
    status: ExitStatus
    summary: dict[str, Any]
    crash: str | None = None
    stats: dict[str, int] = field(default_factory=dict)
    events: list[ProcessEvent] = field(default_factory=list)
    header: dict[str, Any] = field(default_factory=dict)
    analysis: Any = None  # probes.engine.Analysis


# Environment variables that change which files a Go program reads (resolver, zoneinfo,
# CA roots): recorded in the header so findings can say why, and nothing else of the env.
RECORDED_ENV = ("GODEBUG", "LOCALDOMAIN", "RES_OPTIONS", "HOSTALIASES", "ZONEINFO", "TZ",
                "SSL_CERT_FILE", "SSL_CERT_DIR", "LD_LIBRARY_PATH", "LD_PRELOAD")


def _static_summary(facts: Any) -> dict[str, Any]:
    """The static facts the findings rules need (docs/trace-format.md "static"), so that
    `cgotrace report` works on another machine without the binary."""
    if facts is None:
        return {}
    from tracer.static import static_header

    return static_header(facts)


def recorded_env(env: dict[str, str]) -> dict[str, str]:
    return {k: env[k] for k in RECORDED_ENV if k in env}


def _inspect(path: str, rootfs: str | None = None, path_in_root: str | None = None) -> Any:
    """Static facts, resolved inside the sandbox's root when there is one (None if the
    binary cannot be inspected: the trace goes on without them)."""
    try:
        from tracer.static import inspect_binary

        return inspect_binary(path, rootfs=rootfs, strict=False,
                              binary_path_in_root=path_in_root)
    except Exception:
        return None


def trace_program(opts: RunOptions) -> RunResult:
    """Trace `opts.argv`; the program's ExitStatus is in the result.

    Raises TracerError 127/126 when the program cannot be executed (with the reason), or
    the sandbox's errors.
    """
    env = dict(os.environ) if opts.env is None else opts.env
    prepared = None
    if opts.rootfs is not None or opts.network not in (None, "host"):
        from tracer.session import sandbox
        from tracer.session.rootfs import resolve_rootfs

        program = resolve_program(opts.argv[0], env)
        spec = sandbox.SandboxSpec(rootfs=resolve_rootfs(opts.rootfs) if opts.rootfs else None,
                                   network=opts.network or "loopback")
        prepared = sandbox.prepare(spec, program)
        lspec = LaunchSpec(argv=opts.argv, env=env, exec_path=prepared.program_in_root,
                           child_setup=prepared.child_setup,
                           enter_namespaces=prepared.enter_namespaces,
                           setup_root=prepared.setup_root,
                           pid_namespace=prepared.pid_namespace)
    else:
        program = resolve_program(opts.argv[0], env)
        lspec = LaunchSpec(argv=opts.argv, env=env, exec_path=program,
                           child_setup=opts.child_setup)
    root = str(prepared.root) if prepared is not None and prepared.root is not None else None
    in_root = prepared.program_in_root if prepared is not None else None
    facts = _inspect(program, root, in_root if root else None)
    classifier = Classifier()
    if facts is not None:
        from tracer.classify import Closure

        closure = Closure.from_facts(facts)
        classifier.seed(os.path.realpath(program), closure)
        if in_root is not None:
            classifier.seed(in_root, closure)  # the exe path the tracee reports
    from probes.engine import AnalysisBuilder

    summary = SummaryBuilder()
    events: list[ProcessEvent] = []
    header: dict[str, Any] = {
        "argv": opts.argv, "binary": os.path.abspath(program),
        "binary_realpath": os.path.realpath(program), "static": _static_summary(facts),
        "cwd": _cwd(prepared), "env": recorded_env(env),
        "sandbox": prepared.label if prepared is not None else None}
    analysis = AnalysisBuilder(header, opts.rules)
    writer = TraceWriter(opts.output) if opts.output else None
    try:
        if writer is not None:
            writer.header(**header)
        extra = opts.on_access

        to_host = _host_mapper(prepared)

        def on_access(a: Access) -> None:
            if to_host is not None:
                a = to_host(a)
            summary.add(a)
            analysis.add(a)
            if writer is not None:
                writer.access(a)
            if extra is not None:
                extra(a)

        def on_event(e: ProcessEvent) -> None:
            if e.event != "fork":
                events.append(e)
                analysis.event(e)
            if writer is not None:
                writer.event(e)

        def interpreter_of(exe: str) -> str | None:
            closure = classifier.closure(exe)
            return closure.interpreter if closure is not None else None

        tracee = launch(lspec)
        forwarder = SignalForwarder(tracee.pid).start() if opts.forward_signals else None
        loop = Loop(tracee.pid, on_access=on_access, on_event=on_event,
                    classifier=classifier, decoder=EntryDecoder(),
                    attributor=opts.attributor, interpreter_of=interpreter_of,
                    debug=opts.debug)
        try:
            status = loop.run()
        finally:
            if forwarder is not None:
                forwarder.stop()
            _reap(tracee.child, tracee.pid)
        err = tracee.exec_errno()
        tracee.close()
        stats = {"stops": loop.stats.stops, "accesses": loop.stats.accesses,
                 "unknown": loop.stats.lost, "attributor_errors": loop.stats.attributor_errors}
        if writer is not None:
            writer.exit(status, stats=stats)
        if err is not None:
            exc = describe_exec_failure(program, err)
            if prepared is not None:
                exc.args = (prepared.diagnose_exec_failure(err),)
            # the findings (missing interpreter...) travel with the error for the reports
            exc.analysis = analysis.finish(status)  # type: ignore[attr-defined]
            raise exc
        crash = _crash_line(status, events)
        return RunResult(status=status, summary=summary.summary(status), crash=crash,
                         stats=stats, events=events, header=header,
                         analysis=analysis.finish(status))
    finally:
        if writer is not None:
            writer.close()


def _cwd(prepared: Any) -> str:
    """The program's working directory as it sees it: "/" inside a sandboxed root."""
    if prepared is not None and getattr(prepared, "root", None) is not None:
        return "/"
    return os.getcwd()


def _host_mapper(prepared: Any) -> Callable[[Access], Access] | None:
    """In a sandbox, add the host path of each file the tracee saw (when it differs)."""
    if prepared is None:
        return None
    from tracer.session.sandbox import host_path

    cache: dict[str, str | None] = {}

    def add_host_path(a: Access) -> Access:
        if a.family is not None and not a.path.startswith("/"):
            return a  # connect to address:port
        if a.path not in cache:
            cache[a.path] = host_path(prepared, a.path)
        hp = cache[a.path]
        return a if hp is None or hp == a.path else dataclasses.replace(a, host_path=hp)

    return add_host_path


def _reap(child: int, pid: int) -> None:
    if child == pid:
        return  # the traced program was our child: the loop reaped it
    with contextlib.suppress(ChildProcessError):
        os.waitpid(child, 0)


def _crash_line(status: ExitStatus, events: list[ProcessEvent]) -> str | None:
    if status.signal is None or status.signal not in FAULT_SIGNALS:
        return None
    tid = None
    for e in reversed(events):
        if e.event == "signal" and e.detail.get("signal") == status.signal:
            tid = e.tid
            break
    where = f" at address {hex(status.fault_address)}" if status.fault_address is not None else ""
    thread = f" in thread {tid}" if tid is not None else ""
    return f"cgotrace: program crashed: {signal.Signals(status.signal).name}{where}{thread}"
