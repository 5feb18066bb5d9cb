"""One traced run, end to end: static facts, (sandbox), launch, the engine, the recording.

`cgotrace run` is a thin shell over `trace_program`; tests call it directly (it takes a
`child_setup` hook, e.g. a private network namespace, and an attributor).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tracer.binary.factcache import build_id
from tracer.engine import native
from tracer.engine.base import FAULT_SIGNALS
from tracer.engine.notify_engine import NotifyEngine, set_sync_wakeup
from tracer.engine.ptrace_engine import PtraceEngine
from tracer.errors import (
    CgotraceError,
    ExitCode,
    NotFoundError,
    PermissionDeniedError,
    TracerError,
)
from tracer.recording.collector import AttributionHook, EventCollector
from tracer.recording.header import inspect_or_none, recorded_env, resolv_conf, static_facts
from tracer.recording.pipeline import Recording
from tracer.sandbox.launch import (
    LaunchSpec,
    SignalForwarder,
    launch,
    resolve_program,
)
from tracer.trace.model import Access, ExitStatus, ProcessEvent, Repeats

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
    attributor: AttributionHook | None = None
    forward_signals: bool = True
    debug: bool = False
    on_access: Callable[[Access], None] | None = None  # extra consumer (tests)
    # extra consumer of repeats (tests): (access, totals so far, added since the last)
    on_repeats: Callable[[Access, Repeats, Repeats], None] | None = None
    rules: Any = None  # probes.ruleset rules (None: the packaged ones)
    verbose: bool = False  # say on stderr which engine runs and why, before it starts
    # notify | ptrace | auto (docs/engines.md); $CGOTRACE_ENGINE sets the default
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
    analysis: Any = None  # probes.records.Analysis (None when RunOptions.analyze is off)


def program_environment(env_file: str | None, assignments: Sequence[str] = ()
                        ) -> dict[str, str] | None:
    """The traced program's environment from `run --env-file FILE` (NUL-separated
    NAME=VALUE entries, as `env -0` prints) and `--env NAME=VALUE`s on top; None when
    neither is given (the program inherits cgotrace's own). cgotrace's environment is
    never changed: its cache and settings follow the tracer, not the program."""
    if env_file is None and not assignments:
        return None
    env = dict(os.environ) if env_file is None else _read_env_file(env_file)
    for item in assignments:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise CgotraceError(f"--env {item!r}: expected NAME=VALUE",
                                exit_code=ExitCode.USAGE)
        env[name] = value
    return env


def _read_env_file(path: str) -> dict[str, str]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        reason = (e.strerror or str(e)).lower()
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise NotFoundError(f"--env-file {path}: {reason}") from None
        raise PermissionDeniedError(f"--env-file {path}: {reason}") from None
    env: dict[str, str] = {}
    for entry in data.split(b"\0"):
        if not entry:
            continue
        name, eq, value = entry.decode("utf-8", "surrogateescape").partition("=")
        if not eq or not name:
            raise CgotraceError(f"--env-file {path}: {name[:40]!r} is not a NAME=VALUE entry "
                                "(entries are NUL-separated, as `env -0` prints)",
                                exit_code=ExitCode.BAD_INPUT)
        env[name] = value
    return env


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
    facts = static_facts(program, root, in_root if root else None)
    header: dict[str, Any] = {
        "argv": opts.argv, "binary": os.path.abspath(program),
        "binary_realpath": os.path.realpath(program), "binary_id": build_id(program),
        "static": facts.summary,
        "cwd": _cwd(prepared), "env": recorded_env(env),
        "sandbox": prepared.label if prepared is not None else None,
        "resolv_conf": resolv_conf(_resolv_conf_file(prepared))}
    # the exe path the tracee reports: its real path, or its path inside the root
    exes = [os.path.realpath(program)] + ([in_root] if in_root is not None else [])
    rec = Recording(header, facts=facts, exe_paths=exes, output=opts.output,
                    rules=opts.rules, analyze=opts.analyze,
                    host_path_of=_host_path_of(prepared), extra=opts.on_access,
                    extra_repeats=opts.on_repeats)
    try:
        rec.start()
        return _trace(opts, lspec, rec, program, prepared)
    finally:
        rec.close()


def _trace(opts: RunOptions, lspec: LaunchSpec, rec: Recording, program: str,
           prepared: Any) -> RunResult:
    """Launch, trace to the end, and finish the recording."""
    tracee = launch(lspec)
    forwarder = SignalForwarder(tracee.pid).start() if opts.forward_signals else None
    collector = rec.collector(opts.attributor, debug=opts.debug)
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
    stats = _stats(engine, collector)
    if opts.verbose and opts.attributor is not None:
        print(f"cgotrace: stacks: {stacks_line(collector)}", file=sys.stderr, flush=True)
    diagnosis = _diagnose(err, program, prepared, status, rec.loader_accesses)
    diagnoses = [diagnosis.to_dict()] if diagnosis is not None else []
    analysis = rec.finish(status, stats=stats, diagnoses=diagnoses)
    if err is not None and diagnosis is not None:
        exc = TracerError(_line_with_finding_fix(diagnosis, analysis, rec.header),
                          exit_code=diagnosis.exit_code)
        # the findings (missing interpreter...) travel with the error for the reports
        exc.analysis = analysis  # type: ignore[attr-defined]
        raise exc
    return RunResult(status=status, summary=rec.summary.summary(status),
                     crash=_crash_line(status, rec.events), diagnosis=diagnosis, stats=stats,
                     events=rec.events, header=rec.header, analysis=analysis,
                     engine=engine.name, engine_reason=tracee.engine_reason)


def _line_with_finding_fix(diagnosis: Diagnosis, analysis: Any,
                           header: dict[str, Any]) -> str:
    """The one line a failed start prints, with the fix its finding derived from this
    binary's facts (the matrix shows the same). Without reports (-q) there are no
    findings yet: the static facts alone make that one."""
    from tracer.commands.matrix import with_finding_fix

    if analysis is None:
        from probes.analysis import analyze

        analysis = analyze(header, ())

    fix = with_finding_fix(diagnosis.to_dict(), analysis).get("fix") or ""
    return f"{diagnosis.message}. Fix: {fix}" if fix else diagnosis.message


def stacks_line(collector: EventCollector) -> str:
    """What -v says of the walks: how many ran after their thread resumed, and how many
    pages they read live because the capture lacked them (could have changed since)."""
    cs = collector.stats
    return (f"{cs.deferred} walks ran after their thread resumed, "
            f"{cs.capture_misses} capture misses")


def _stats(engine: Any, collector: EventCollector) -> dict[str, int]:
    cs = collector.stats
    stats = {"stops": engine.stops, "accesses": cs.accesses, "repeats": cs.repeats,
             "unknown": cs.lost, "unobserved": cs.unobserved,
             "attributor_errors": cs.attributor_errors, "deferred_walks": cs.deferred,
             "capture_misses": cs.capture_misses}
    if isinstance(engine, NotifyEngine):
        stats["notifications"] = engine.notifications
        stats["upgrades"] = engine.upgrades
        stats["lost_upgrades"] = engine.lost_upgrades
        stats["native_repeats"] = cs.native_repeats
        stats["native_dropped"] = engine.native_stats.get("dropped", 0)
        stats["native_upgrades"] = engine.native_upgrades
    return stats


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
    facts = inspect_or_none(program, str(root) if root is not None else None,
                            in_root if root is not None else None)
    return diagnose_loader(status, loader_accesses, getattr(facts, "closure", None), in_root,
                           root)


def _cwd(prepared: Any) -> str:
    """The program's working directory as it sees it: "/" inside a sandboxed root."""
    if prepared is not None and getattr(prepared, "root", None) is not None:
        return "/"
    return os.getcwd()


def _resolv_conf_file(prepared: Any) -> str:
    """Where the resolv.conf the program will read lies on the host: the file a sandbox
    binds over /etc/resolv.conf, the root's own, or the host's."""
    if prepared is None:
        return "/etc/resolv.conf"
    from tracer.sandbox.container import host_path

    return host_path(prepared, "/etc/resolv.conf") or "/etc/resolv.conf"


def _engine_for(tracee: Any) -> PtraceEngine:
    """The engine for the filter launch installed (notify when it got a listener)."""
    if tracee.listener is None:
        return PtraceEngine(tracee.pid)
    sync = set_sync_wakeup(tracee.listener)
    tracee.engine_reason += ", SYNC_WAKE_UP on" if sync else ", SYNC_WAKE_UP refused"
    tracee.engine_reason += (", WAIT_KILLABLE_RECV on: one stop per upgrade"
                             if tracee.wait_killable else ", WAIT_KILLABLE_RECV off")
    module, why = native.load()
    tracee.engine_reason += f", {why}"
    return NotifyEngine(tracee.pid, tracee.listener, sync, native=module,
                        wait_killable=tracee.wait_killable)


def _host_path_of(prepared: Any) -> Callable[[str], str | None] | None:
    """In a sandbox, where a path the program sees lies on the host."""
    if prepared is None:
        return None
    from tracer.sandbox.container import host_path

    return lambda path: host_path(prepared, path)


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
