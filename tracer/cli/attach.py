"""`cgotrace attach PID|--name NAME [--duration S] [--output FILE] [--report FORMAT=FILE]`."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from tracer.errors import ExitCode, UsageError


@click.command()
@click.argument("pid", type=int, required=False)
@click.option("--name", metavar="NAME",
              help="Pick the process by name (exact name, executable or argv[0] basename); "
              "refused when several match.")
@click.option("-d", "--duration", type=click.FloatRange(min=0.001), metavar="S",
              help="Detach after S seconds (default: until Ctrl-C / SIGTERM, or the "
              "process exits).")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the trace (JSON lines, streamed) to this file.")
@click.option("--report", "reports", multiple=True, metavar="FORMAT=FILE",
              help="Write a report (text, json, or another installed format) to FILE; "
              "repeatable.")
@click.option("-q", "--quiet", is_flag=True,
              help="No report on stderr (the start and end lines are still printed).")
@click.option("--fail-on", metavar="LIST",
              help="Exit 1 when findings match: ids (globs), error/warning/info, hidden, cgo, "
              "missing; comma-separated (as for `run` and `report`).")
@click.option("--allow", type=click.Path(dir_okay=False), metavar="FILE",
              help="TOML allow-list ([[allow]] id, path, reason) for --fail-on.")
@click.option("--color/--no-color", default=None,
              help="Colour the report on stderr (default: on a terminal unless NO_COLOR).")
@click.option("--no-stacks", is_flag=True,
              help="Do not unwind stacks: no via/go_api/user_frame/stack in the trace.")
@click.pass_context
def attach(ctx: click.Context, pid: int | None, name: str | None, duration: float | None,
           output: str | None, reports: tuple[str, ...], quiet: bool, fail_on: str | None,
           allow: str | None, color: bool | None, no_stacks: bool) -> None:
    """Trace a running process, then detach and leave it as it was.

    Every thread is seized (also threads started meanwhile) until the duration ends,
    Ctrl-C or SIGTERM, or the process exits; then every thread is detached: no filter
    left behind, no signal lost, no thread left stopped. If cgotrace itself is killed, the
    kernel detaches the process, which carries on. Attach stops the process at every
    syscall (no seccomp filter can be put into a running process), so it runs slower
    while attached.

    Exit codes: 0 detached; 1 the --fail-on gate failed; 6 the process ended during the
    attach (the trace is kept; wins over 1); 2 usage or an ambiguous --name; 4 no such
    process, or no directory for --output (checked before the process is seized); 5
    ptrace refused (the message names Yama, ownership, CAP_SYS_PTRACE or the tracer
    already attached) (docs/exit-codes.md).
    """
    from tracer.cli._reporting import check_report_paths, emit_reports, parse_report_specs
    from tracer.commands.attach import STEPPING_NOTE, AttachOptions, attach_process, find_by_name
    from tracer.gate import gate

    specs = parse_report_specs(reports)
    if fail_on is not None or allow is not None:  # bad gate options fail before the attach
        from tracer.gate import check_options

        check_options(fail_on, allow)
    check_report_paths(specs)  # an unwritable report fails before the process is touched
    if (pid is None) == (name is None):
        raise UsageError("give either a PID or --name NAME")
    if name is not None:
        pid = find_by_name(name)
    assert pid is not None
    attributor = None
    if not no_stacks:
        from tracer.attribution.attributor import Attributor

        attributor = Attributor()
    def attached(engine: Any) -> None:
        # also with -q: it changes the service; said once the process is really seized, so
        # a refused attach is one line
        print(f"{STEPPING_NOTE}.", file=sys.stderr)
        until = f"for {duration:g} s" if duration is not None else "until Ctrl-C"
        print(f"cgotrace: attached to {pid} ({len(engine.seized)} threads), {until}",
              file=sys.stderr, flush=True)

    result = attach_process(AttachOptions(pid=pid, duration=duration, output=output,
                                          attributor=attributor, on_attached=attached))
    gated = gate(result.analysis, fail_on, allow)
    emit_reports(result.analysis, specs, quiet, color, gated)
    print(f"cgotrace: attach to {pid} {_span(result.start_time, result.end_time)}: "
          f"{result.how}", file=sys.stderr)
    sys.stdout.flush()
    if result.ended is not None:
        ctx.exit(int(ExitCode.TARGET_EXITED))
    ctx.exit(int(ExitCode.POLICY) if gated is not None and gated.failed else 0)


def _span(start: float, end: float) -> str:
    fmt = "%Y-%m-%dT%H:%M:%S"
    return (f"from {time.strftime(fmt, time.localtime(start))} to "
            f"{time.strftime(fmt, time.localtime(end))} ({end - start:.1f} s)")
