"""`cgotrace slim (--trace T ... | [--rootfs ROOT|--image NAME] -- PROGRAM ARGS) --output-dir
DIR [--tar FILE] [--dockerfile FILE] [--json]`: the smallest root for a program, proven
(tracer/commands/slim.py, docs/slim.md)."""

from __future__ import annotations

import json
import sys

import click


# Like `run`: the program starts at the first word that is not an option, or after `--`.
@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--trace", "traces", multiple=True, metavar="TRACE",
              help="A trace of the program (`cgotrace run --output`); repeatable: several "
              "commands, or a test suite's runs, of one binary in one root.")
@click.option("--rootfs", metavar="ROOT",
              help="The root to run the program in (with PROGRAM), or to copy files from "
              "(with --trace; default: the root the traces name).")
@click.option("--image", metavar="NAME", help="Same as --rootfs, from the local podman/docker.")
@click.option("--output-dir", "-o", "output_dir", required=True, metavar="DIR",
              type=click.Path(file_okay=False),
              help="Where the slim root is built (a new or empty directory).")
@click.option("--tar", metavar="FILE", type=click.Path(dir_okay=False),
              help="Also write it as a flat tarball (`podman import FILE`).")
@click.option("--dockerfile", metavar="FILE", type=click.Path(dir_okay=False),
              help="Also write a FROM scratch Dockerfile that copies it.")
@click.option("--network", metavar="NET",
              help="Network of the runs slim makes, as for `run --network` (default: "
              "loopback in a root).")
@click.option("--traces", "traces_dir", metavar="DIR", type=click.Path(file_okay=False),
              help="Keep the traces slim writes (the program's run, the proof runs) here.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.argument("program", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def slim(ctx: click.Context, traces: tuple[str, ...], rootfs: str | None, image: str | None,
         output_dir: str, tar: str | None, dockerfile: str | None, network: str | None,
         traces_dir: str | None, as_json: bool, program: tuple[str, ...]) -> None:
    """Build the smallest root that holds the program and exactly the files its runs used
    (symlink chains kept, the loader cache regenerated, what the program creates left to
    it), then prove it: the same commands run in the new root under cgotrace, with the same
    exit status, no access that succeeded before failing, and no new finding.

    Exit status: 0 proven, 1 not proven; 2 usage, 3 bad trace or traces of different
    binaries, 4 a trace, root or binary that does not exist (docs/exit-codes.md).
    """
    from tracer.commands.slim import SlimOptions, render_text, to_json
    from tracer.commands.slim import slim as build

    argv = list(program)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    opts = SlimOptions(traces=list(traces), argv=argv, rootfs=rootfs, image=image,
                       output_dir=output_dir, tar=tar, dockerfile=dockerfile, network=network,
                       traces_dir=traces_dir)
    tty = sys.stderr.isatty() and not as_json

    def progress(line: str) -> None:
        if tty:
            click.echo(f"slim: {line}", err=True)

    result = build(opts, progress)
    if as_json:
        click.echo(json.dumps(to_json(result), indent=2))
    else:
        click.echo(render_text(result), nl=False)
    ctx.exit(0 if result.proven else 1)
