"""`cgotrace run [options] -- PROGRAM [ARGS...]`: trace a program, pass its status through."""

from __future__ import annotations

import click


# The program starts at the first word that is not an option, or after `--`; an unknown
# option before it is a usage error (never the program's name).
@click.command(context_settings={"allow_interspersed_args": False})
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the trace (JSON lines, streamed) to this file.")
@click.option("--json", "json_file", type=click.Path(dir_okay=False),
              help="Write the JSON report to this file (same as --report json=FILE).")
@click.option("--report", "reports", multiple=True, metavar="FORMAT=FILE",
              help="Write a report (text, json, or another installed format) to FILE; "
              "repeatable.")
@click.option("-q", "--quiet", is_flag=True, help="No report on stderr.")
@click.option("--fail-on", metavar="LIST",
              help="Exit 121 when findings match (the program's own failure status wins): "
              "ids (globs), error/warning/info, hidden, cgo, missing; comma-separated.")
@click.option("--allow", type=click.Path(dir_okay=False), metavar="FILE",
              help="TOML allow-list ([[allow]] id, path, reason) for --fail-on.")
@click.option("--probes", multiple=True, metavar="DIR",
              help="Extra finding rules: every *.toml with [[finding]] tables in DIR.")
@click.option("--color/--no-color", default=None,
              help="Colour the report on stderr (default: on a terminal unless NO_COLOR).")
@click.option("--source-root", type=click.Path(exists=True, file_okay=False), metavar="DIR",
              help="Name source files relative to DIR in --report files that locate them "
              "(SARIF); default: the Go module root (the go.mod of the main module).")
@click.option("--rootfs", metavar="ROOT",
              help="Run inside this root: a directory, an OCI layout, a `docker save` or root "
              "filesystem (`podman export`) tarball, or a preset built from this host "
              "(scratch, static, musl, glibc).")
@click.option("--image", metavar="NAME",
              help="Run inside this image from the local podman (or docker): exported once, "
              "cached by image ID. Nothing is pulled.")
@click.option("--network", metavar="NET", callback=lambda ctx, param, value: _network(value),
              help="Network namespace: 'loopback' (only lo up; the default with --rootfs), "
              "'none' (lo down), 'host', or the path of a netns to join "
              "(/proc/PID/ns/net, /run/netns/NAME).")
@click.option("--engine", type=click.Choice(["auto", "notify", "ptrace"]), default="auto",
              show_default=True, envvar="CGOTRACE_ENGINE",
              help="notify: seccomp user notification, repeats run without a stop; ptrace: "
              "two stops per watched call; auto: notify when the kernel allows it.")
@click.option("--env", "env_vars", multiple=True, metavar="NAME=VALUE",
              help="Set a variable for the program only (repeatable). cgotrace keeps its "
              "own environment: its cache and settings do not move with the program's HOME.")
@click.option("--env-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="The program's whole environment instead of cgotrace's: NUL-separated "
              "NAME=VALUE entries (what `env -0` prints); --env applies on top.")
@click.option("-v", "--verbose", is_flag=True, help="Say which engine runs and why.")
@click.option("--no-stacks", is_flag=True,
              help="Do not unwind stacks: no via/go_api/user_frame/stack in the trace.")
@click.argument("program", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, output: str | None, json_file: str | None,
        reports: tuple[str, ...], quiet: bool, fail_on: str | None, allow: str | None,
        probes: tuple[str, ...], color: bool | None, source_root: str | None,
        rootfs: str | None, image: str | None, network: str | None, engine: str,
        env_vars: tuple[str, ...], env_file: str | None, verbose: bool, no_stacks: bool,
        program: tuple[str, ...]) -> None:
    """Run PROGRAM under the tracer; exit with its exit code (128+N for signal N).

    stdin, stdout, stderr and the environment pass through (--env and --env-file change
    the program's, never cgotrace's own); SIGINT, SIGTERM, SIGHUP and
    SIGQUIT sent to cgotrace are forwarded to the program. The findings report goes to
    stderr; with --fail-on, a failed gate exits 121 (docs/exit-codes.md).
    """
    from tracer.cli.run_program import run_program

    debug = bool((ctx.obj or {}).get("debug"))
    ctx.exit(run_program(output=output, json_file=json_file, reports=reports, quiet=quiet,
                         fail_on=fail_on, allow=allow, probes=probes, color=color,
                         source_root=source_root, rootfs=rootfs, image=image,
                         network=network, engine=engine, env_vars=env_vars,
                         env_file=env_file, verbose=verbose, no_stacks=no_stacks,
                         program=program, debug=debug))


def _network(value: str | None) -> str | None:
    if value is None or value in ("loopback", "host", "none"):
        return value
    if value.startswith("/"):
        import os

        if not os.path.exists(value):
            raise click.BadParameter(f"{value}: no such network namespace file")
        return value
    raise click.BadParameter("expected loopback, none, host or the path of a netns file")
