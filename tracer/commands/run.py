"""One traced run, end to end: static facts, (sandbox), launch, loop, trace file, summary.

`cgotrace run` is a thin shell over `trace_program`; tests call it directly (it takes a
`child_setup` hook, e.g. a private network namespace, and an attributor).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tracer.engine.base import FAULT_SIGNALS
from tracer.engine.notify_engine import NotifyEngine, set_sync_wakeup
from tracer.engine.ptrace_engine import PtraceEngine
from tracer.errors import (
    ExitCode,
    TracerError,
    output_error,
)
from tracer.recording.classify import Classifier, Closure
from tracer.recording.collector import Attributor, EventCollector
from tracer.recording.entry import EntryDecoder
from tracer.recording.summary import SummaryBuilder
from tracer.sandbox.launch import (
    LaunchSpec,
    SignalForwarder,
    launch,
    resolve_program,
)
from tracer.trace.model import Access, ExitStatus, ProcessEvent
from tracer.trace.recorder import TraceWriter

if TYPE_CHECKING:
    from tracer.sandbox.diagnosis import Diagnosis

ENGINES = ("auto", "notify", "ptrace")


@dataclass
class RunOptions:
    argv: list[str]
    output: str | None = None
    rootfs: str | None = None
    image: str | None = None  # --image NAME: a root exported from the local podman/docker
    network: str | None = None  # None: host network without a sandbox, unless rootfs
    env: dict[str, str] | None = None
    child_setup: Callable[[], None] | None = None  # tests: e.g. unshare(CLONE_NEWNET)
    attributor: Attributor | None = None
    forward_signals: bool = True
    debug: bool = False
    on_access: Callable[[Access], None] | None = None  # extra consumer (tests)
    rules: Any = None  # probes.ruleset rules (None: the packaged ones)
    verbose: bool = False  # say on stderr which engine runs and why, before it starts
    # notify | ptrace | auto (docs/architecture.md, engines); $CGOTRACE_ENGINE sets the default
    engine: str = field(default_factory=lambda: os.environ.get("CGOTRACE_ENGINE", "auto"))
    # False: no findings at all (`run -q` with no report and no gate reads none; the
    # rules engine is then never imported)
    analyze: bool = True


@dataclass
class RunResult:
    status: ExitStatus
    summary: dict[str, Any]
    crash: str | None = None
    diagnosis: Diagnosis | None = None  # why it did not start (loader failure; exit 127)
    stats: dict[str, int] = field(default_factory=dict)
    events: list[ProcessEvent] = field(default_factory=list)
    engine: str = "ptrace"  # the engine that ran
    engine_reason: str = ""  # why (auto)
    header: dict[str, Any] = field(default_factory=dict)
    analysis: Any = None  # probes.analysis.Analysis (None when RunOptions.analyze is off)


# Environment variables that change which files a Go program reads (resolver, zoneinfo,
# CA roots): recorded in the header so findings can say why, and nothing else of the env.
RECORDED_ENV = ("GODEBUG", "LOCALDOMAIN", "RES_OPTIONS", "HOSTALIASES", "ZONEINFO", "TZ",
                "SSL_CERT_FILE", "SSL_CERT_DIR", "LD_LIBRARY_PATH", "LD_PRELOAD")


def _static_summary(facts: Any) -> dict[str, Any]:
    """The static facts the findings rules need (docs/trace-format.md "static"), so that
    `cgotrace report` works on another machine without the binary."""
    if facts is None:
        return {}
    from tracer.binary.facts import static_header

    return static_header(facts)


def _binary_id(program: str) -> str | None:
    """The binary's build id (GNU, else Go): `slim` tells traces of one binary by it."""
    from tracer.binary.factcache import build_id

    return build_id(program)


def recorded_env(env: dict[str, str]) -> dict[str, str]:
    return {k: env[k] for k in RECORDED_ENV if k in env}


def _inspect(path: str, rootfs: str | None = None, path_in_root: str | None = None) -> Any:
    """Static facts, resolved inside the sandbox's root when there is one (None if the
    binary cannot be inspected: the trace goes on without them)."""
    try:
        from tracer.binary.facts import inspect_binary

        return inspect_binary(path, rootfs=rootfs, strict=False,
                              binary_path_in_root=path_in_root)
    except Exception:
        return None


def _static_facts(program: str, root: str | None, path_in_root: str | None
                  ) -> tuple[dict[str, Any], Closure | None]:
    """The trace header's static summary and the classifier's closure: from the facts cache
    (tracer/binary/factcache.py) when this binary was traced before, else inspected now."""
    from tracer.binary import factcache

    key = factcache.cache_key(program, root, path_in_root)
    hit = factcache.load(key) if key is not None else None
    if hit is not None:
        c = hit.get("closure")
        closure = Closure(c["interpreter"], frozenset(c["paths"]), frozenset(c["names"])) \
            if isinstance(c, dict) else None
        return dict(hit.get("static") or {}), closure
    facts = _inspect(program, root, path_in_root)
    static = _static_summary(facts)
    closure = Closure.from_facts(facts) if facts is not None else None
    if key is not None and facts is not None and closure is not None:
        factcache.store(key, {"static": static, "closure": {
            "interpreter": closure.interpreter, "paths": sorted(closure.paths),
            "names": sorted(closure.names)}})
    return static, closure


def trace_program(opts: RunOptions) -> RunResult:
    """Trace `opts.argv`; the program's ExitStatus is in the result.

    Raises TracerError 127/126 when the program cannot be executed (with the reason), or
    the sandbox's errors.
    """
    if opts.engine not in ENGINES:
        raise TracerError(f"unknown engine {opts.engine!r}: expected one of "
                          f"{', '.join(ENGINES)}", exit_code=ExitCode.USAGE)
    env = dict(os.environ) if opts.env is None else opts.env
    prepared = None
    if opts.rootfs is not None or opts.image is not None or opts.network not in (None, "host"):
        from tracer.sandbox import container
        from tracer.sandbox.images import resolve_source

        program = resolve_program(opts.argv[0], env)
        root_dir = resolve_source(opts.rootfs, opts.image)
        # A root gets its own pid namespace, as in a container (the program is PID 1 and
        # sees no host process), and its own user namespace even when we are root: its
        # root then holds capabilities over its own namespaces only (no device nodes, no
        # host sysctls, no mounts of the host's disks), so it cannot change the root's source.
        has_root = root_dir is not None
        spec = container.SandboxSpec(rootfs=root_dir, network=opts.network or "loopback",
                                   pid_namespace=has_root,
                                   user_namespace=True if has_root else None)
        prepared = container.prepare(spec, program)
        lspec = LaunchSpec(argv=opts.argv, env=env, exec_path=prepared.program_in_root,
                           child_setup=prepared.child_setup,
                           enter_namespaces=prepared.enter_namespaces,
                           setup_root=prepared.setup_root,
                           pid_namespace=prepared.pid_namespace, engine=opts.engine)
    else:
        program = resolve_program(opts.argv[0], env)
        lspec = LaunchSpec(argv=opts.argv, env=env, exec_path=program,
                           child_setup=opts.child_setup, engine=opts.engine)
    root = str(prepared.root) if prepared is not None and prepared.root is not None else None
    in_root = prepared.program_in_root if prepared is not None else None
    static, closure = _static_facts(program, root, in_root if root else None)
    classifier = Classifier()
    if closure is not None:
        classifier.seed(os.path.realpath(program), closure)
        if in_root is not None:
            classifier.seed(in_root, closure)  # the exe path the tracee reports
    summary = SummaryBuilder()
    events: list[ProcessEvent] = []
    header: dict[str, Any] = {
        "argv": opts.argv, "binary": os.path.abspath(program),
        "binary_realpath": os.path.realpath(program), "binary_id": _binary_id(program),
        "static": static,
        "cwd": _cwd(prepared), "env": recorded_env(env),
        "sandbox": prepared.label if prepared is not None else None}
    analysis = None
    if opts.analyze:
        from probes.analysis import AnalysisBuilder

        analysis = AnalysisBuilder(header, opts.rules)
    writer = open_trace_writer(opts.output) if opts.output else None
    try:
        if writer is not None:
            writer.header(**header)
        extra = opts.on_access

        to_host = _host_mapper(prepared)
        loader_accesses: list[Access] = []  # library lookups: the loader diagnosis reads them

        def on_access(a: Access) -> None:
            if to_host is not None:
                a = to_host(a)
            if a.kind in _LOADER_KINDS:
                loader_accesses.append(a)
            summary.add(a)
            if analysis is not None:
                analysis.add(a)
            if writer is not None:
                writer.access(a)
            if extra is not None:
                extra(a)

        def on_event(e: ProcessEvent) -> None:
            if e.event != "fork":
                events.append(e)
                if analysis is not None:
                    analysis.event(e)
            if writer is not None:
                writer.event(e)

        def interpreter_of(exe: str) -> str | None:
            closure = classifier.closure(exe)
            return closure.interpreter if closure is not None else None

        tracee = launch(lspec)
        forwarder = SignalForwarder(tracee.pid).start() if opts.forward_signals else None
        collector = EventCollector(on_access=on_access, on_event=on_event,
                                   classifier=classifier, decoder=EntryDecoder(),
                                   attributor=opts.attributor, interpreter_of=interpreter_of,
                                   debug=opts.debug)
        engine = _engine_for(tracee)
        if opts.verbose:
            print(f"cgotrace: engine {engine.name} ({tracee.engine_reason})", file=sys.stderr,
                  flush=True)
        try:
            status = engine.run(collector)
        finally:
            if forwarder is not None:
                forwarder.stop()
            _reap(tracee.child, tracee.pid)
        err = tracee.exec_errno()
        tracee.close()
        cs = collector.stats
        stats = {"stops": engine.stops, "accesses": cs.accesses, "unknown": cs.lost,
                 "unobserved": cs.unobserved, "attributor_errors": cs.attributor_errors}
        if isinstance(engine, NotifyEngine):
            stats["notifications"] = engine.notifications
            stats["upgrades"] = engine.upgrades
            stats["lost_upgrades"] = engine.lost_upgrades
        diagnosis = _diagnose(err, program, prepared, status, loader_accesses)
        if writer is not None:
            if diagnosis is not None:
                writer.diagnosis(diagnosis.to_dict())
            writer.exit(status, stats=stats)
        diagnoses = [diagnosis.to_dict()] if diagnosis is not None else []
        if err is not None and diagnosis is not None:
            exc = TracerError(diagnosis.line, exit_code=diagnosis.exit_code)
            # the findings (missing interpreter...) travel with the error for the reports
            exc.analysis = (  # type: ignore[attr-defined]
                analysis.finish(status, diagnoses) if analysis is not None else None)
            raise exc
        crash = _crash_line(status, events)
        return RunResult(status=status, summary=summary.summary(status), crash=crash,
                         diagnosis=diagnosis, stats=stats, events=events, header=header,
                         analysis=analysis.finish(status, diagnoses)
                         if analysis is not None else None,
                         engine=engine.name,
                         engine_reason=tracee.engine_reason)
    finally:
        if writer is not None:
            writer.close()


def open_trace_writer(path: str) -> TraceWriter:
    """The --output file, opened before the program starts; a path that cannot be written
    is one line with exit 5 (permission), 4 (no such directory) or 3 (a directory)."""
    try:
        return TraceWriter(path)
    except OSError as e:
        raise output_error(path, e) from None




_LOADER_KINDS = frozenset({"startup-library", "dlopen-library", "interpreter"})


def _diagnose(err: int | None, program: str, prepared: Any, status: ExitStatus,
              loader_accesses: list[Access]) -> Diagnosis | None:
    """Why the program did not start: exec refused (`err`), or ld.so gave up on a NEEDED
    library (exit 127). None when it started."""
    if err is None and status.code != 127:
        return None
    from pathlib import Path

    from tracer.sandbox.diagnosis import diagnose_exec, diagnose_loader

    if err is not None:
        if prepared is not None:
            exec_diagnosis: Diagnosis = prepared.exec_diagnosis(err)
            return exec_diagnosis
        return diagnose_exec(None, program, err, Path(program))
    root = prepared.root if prepared is not None else None
    in_root = prepared.program_in_root if prepared is not None else program
    if status.code != 127:
        return None
    # the loader closure is re-derived only here (a failed start): the facts cache keeps
    # the header's static summary, not the full LoaderClosure
    facts = _inspect(program, str(root) if root is not None else None,
                     in_root if root is not None else None)
    return diagnose_loader(status, loader_accesses, getattr(facts, "closure", None), in_root,
                           root)


def _cwd(prepared: Any) -> str:
    """The program's working directory as it sees it: "/" inside a sandboxed root."""
    if prepared is not None and getattr(prepared, "root", None) is not None:
        return "/"
    return os.getcwd()


def _engine_for(tracee: Any) -> PtraceEngine:
    """The engine for the filter launch installed (notify when it got a listener)."""
    if tracee.listener is None:
        return PtraceEngine(tracee.pid)
    sync = set_sync_wakeup(tracee.listener)
    tracee.engine_reason += ", SYNC_WAKE_UP on" if sync else ", SYNC_WAKE_UP refused"
    return NotifyEngine(tracee.pid, tracee.listener, sync)


def _host_mapper(prepared: Any) -> Callable[[Access], Access] | None:
    """In a sandbox, add the host path of each file the tracee saw (when it differs)."""
    if prepared is None:
        return None
    from tracer.sandbox.container import host_path

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
