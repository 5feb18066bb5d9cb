"""`cgotrace run [options] -- PROGRAM [ARGS...]`: trace a program, pass its status through."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from tracer.errors import TracerError


@click.command(context_settings={"ignore_unknown_options": True,
                                 "allow_interspersed_args": False})
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the trace (JSON lines, streamed) to this file.")
@click.option("--json", "json_file", type=click.Path(dir_okay=False),
              help="Write the summary as JSON to this file.")
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
@click.option("--rootfs", metavar="ROOT",
              help="Run inside this root: a directory, an OCI layout or `docker save` "
              "tarball, or a preset built from this host (scratch, static, musl, glibc).")
@click.option("--network", metavar="NET", callback=lambda ctx, param, value: _network(value),
              help="Network namespace: 'loopback' (only lo up; the default with --rootfs), "
              "'none' (lo down), 'host', or the path of a netns to join "
              "(/proc/PID/ns/net, /run/netns/NAME).")
@click.option("--engine", type=click.Choice(["auto", "notify", "ptrace"]), default="auto",
              show_default=True, envvar="CGOTRACE_ENGINE",
              help="notify: seccomp user notification, repeats run without a stop; ptrace: "
              "two stops per watched call; auto: notify when the kernel allows it.")
@click.option("-v", "--verbose", is_flag=True, help="Say which engine runs and why.")
@click.option("--no-stacks", is_flag=True,
              help="Do not unwind stacks: no via/go_api/user_frame/stack in the trace.")
@click.argument("program", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, output: str | None, json_file: str | None, quiet: bool,
        rootfs: str | None, network: str | None, engine: str, verbose: bool, no_stacks: bool,
        program: tuple[str, ...]) -> None:
    """Run PROGRAM under the tracer; exit with its exit code (128+N for signal N).

    stdin, stdout, stderr and the environment pass through; SIGINT, SIGTERM, SIGHUP and
    SIGQUIT sent to cgotrace are forwarded to the program.
    """
    from tracer.session.runner import RunOptions, trace_program

    debug = bool((ctx.obj or {}).get("debug"))
    attributor = None
    if not no_stacks:
        from tracer.attribution import Attributor

        attributor = Attributor()
    result = trace_program(RunOptions(argv=list(program), output=output, rootfs=rootfs,
                                      network=network, debug=debug, attributor=attributor,
                                      engine=engine, verbose=verbose))
    if json_file:
        _write_json(json_file, result.summary)
    if not quiet:
        from tracer.summary import render_summary

        print(render_summary(result.summary), file=sys.stderr)
        if result.crash:
            print(result.crash, file=sys.stderr)
    sys.stdout.flush()
    ctx.exit(result.status.shell_code)


def _network(value: str | None) -> str | None:
    if value is None or value in ("loopback", "host", "none"):
        return value
    if value.startswith("/"):
        import os

        if not os.path.exists(value):
            raise click.BadParameter(f"{value}: no such network namespace file")
        return value
    raise click.BadParameter("expected loopback, none, host or the path of a netns file")


def _write_json(path: str, summary: dict[str, Any]) -> None:
    try:
        with open(path, "w") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
    except OSError as e:
        raise TracerError(f"cannot write {path}: {e.strerror}") from None
