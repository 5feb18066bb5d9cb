"""`cgotrace attach PID|--name NAME [--duration S] [--output FILE] [--report FORMAT=FILE]`."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from tracer.errors import ExitCode, TracerError, UsageError


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
              help="Also write the summary as FORMAT (json or text) to FILE; repeatable.")
@click.option("-q", "--quiet", is_flag=True,
              help="No summary on stderr (the start and end lines are still printed).")
@click.option("--no-stacks", is_flag=True,
              help="Do not unwind stacks: no via/go_api/user_frame/stack in the trace.")
@click.pass_context
def attach(ctx: click.Context, pid: int | None, name: str | None, duration: float | None,
           output: str | None, reports: tuple[str, ...], quiet: bool,
           no_stacks: bool) -> None:
    """Trace a running process, then detach and leave it as it was.

    Every thread is seized (also threads started meanwhile) until the duration ends,
    Ctrl-C or SIGTERM, or the process exits; then every thread is detached: no filter
    left behind, no signal lost, no thread left stopped. If cgotrace itself is killed, the
    kernel detaches the process, which carries on. Attach stops the process at every
    syscall (no seccomp filter can be put into a running process), so it runs slower
    while attached.

    Exit codes: 0 detached; 6 the process ended during the attach (the trace is kept);
    2 usage or an ambiguous --name; 4 no such process; 5 ptrace refused (the message names
    Yama, ownership, CAP_SYS_PTRACE or the tracer already attached) (docs/exit-codes.md).
    """
    from tracer.session.attach import STEPPING_NOTE, AttachOptions, attach_process, find_by_name

    formats = [_report_spec(r) for r in reports]
    if (pid is None) == (name is None):
        raise UsageError("give either a PID or --name NAME")
    if name is not None:
        pid = find_by_name(name)
    assert pid is not None
    attributor = None
    if not no_stacks:
        from tracer.attribution import Attributor

        attributor = Attributor()
    print(f"{STEPPING_NOTE}.", file=sys.stderr)  # also with -q: it changes the service

    def attached(engine: Any) -> None:
        until = f"for {duration:g} s" if duration is not None else "until Ctrl-C"
        print(f"cgotrace: attached to {pid} ({len(engine.seized)} threads), {until}",
              file=sys.stderr, flush=True)

    result = attach_process(AttachOptions(pid=pid, duration=duration, output=output,
                                          attributor=attributor, on_attached=attached))
    for fmt, path in formats:
        _write_report(fmt, path, result.summary)
    if not quiet:
        from tracer.summary import render_summary

        print(render_summary(result.summary), file=sys.stderr)
    print(f"cgotrace: attach to {pid} {_span(result.start_time, result.end_time)}: "
          f"{result.how}", file=sys.stderr)
    sys.stdout.flush()
    ctx.exit(int(ExitCode.TARGET_EXITED) if result.ended is not None else 0)


def _span(start: float, end: float) -> str:
    fmt = "%Y-%m-%dT%H:%M:%S"
    return (f"from {time.strftime(fmt, time.localtime(start))} to "
            f"{time.strftime(fmt, time.localtime(end))} ({end - start:.1f} s)")


def _report_spec(spec: str) -> tuple[str, str]:
    fmt, sep, path = spec.partition("=")
    if not sep or not path or fmt not in ("json", "text"):
        raise click.BadParameter(f"{spec!r}: expected json=FILE or text=FILE",
                                 param_hint="--report")
    return fmt, path


def _write_report(fmt: str, path: str, summary: dict[str, Any]) -> None:
    try:
        with open(path, "w") as f:
            if fmt == "json":
                json.dump(summary, f, indent=2)
                f.write("\n")
            else:
                from tracer.summary import render_summary

                f.write(render_summary(summary) + "\n")
    except OSError as e:
        raise TracerError(f"cannot write {path}: {e.strerror}") from None
