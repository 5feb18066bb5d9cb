"""`cgotrace matrix BINARY [--rootfs a,b,...] [--image NAME ...] [-j N] [--json] [-- ARGS]`:
will this binary work on that base image? One row per root (tracer/commands/matrix.py)."""

from __future__ import annotations

import json
import sys

import click


# Like `run`: the program's arguments start after BINARY (or after `--`); an unknown option
# before them is a usage error naming it.
@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--rootfs", "rootfs", multiple=True, metavar="ROOT[,ROOT...]",
              help="Roots to compare: presets (scratch, static, musl, glibc), directories, "
              "OCI layouts, `docker save` or `podman export` tarballs; comma-separated or "
              "repeated. Default: the four presets (when no --image is given either).")
@click.option("--image", "images", multiple=True, metavar="NAME",
              help="An image from the local podman (or docker) as one more root; repeatable.")
@click.option("-j", "--jobs", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Roots traced in parallel.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the matrix as JSON (schema: tracer/schemas/matrix.schema.json).")
@click.option("--fail-on", metavar="SPEC",
              help="Exit 1 when any root has findings matching SPEC (as for `run`).")
@click.option("--allow", metavar="FILE", type=click.Path(dir_okay=False),
              help="Allow-list ([[allow]] id, path, reason), applied per root.")
@click.option("--traces", metavar="DIR", type=click.Path(file_okay=False),
              help="Keep each root's trace here (<root>.jsonl), for `cgotrace report`.")
@click.option("--sbom", "sbom_dir", metavar="DIR", type=click.Path(file_okay=False),
              help="Write each root's run-time SBOM here (<root>.cdx.json, CycloneDX 1.6: "
              "the root's OS packages this run used; docs/sbom.md).")
@click.argument("binary", type=click.Path(dir_okay=False))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def matrix(ctx: click.Context, rootfs: tuple[str, ...], images: tuple[str, ...], jobs: int,
           as_json: bool, fail_on: str | None, allow: str | None, traces: str | None,
           sbom_dir: str | None, binary: str, args: tuple[str, ...]) -> None:
    """Run BINARY (with ARGS) in each root and print one row per root: does it start (or
    why not), its exit status, the dependencies it missed, how many hidden dependencies it
    used, the findings' ids, and a verdict: works, degraded or fails.

    Exit status: 0 when the matrix is printed, 1 when --fail-on matched in any root,
    otherwise as docs/exit-codes.md says (4: a root or the binary does not exist).
    """
    from tracer.commands.matrix import (
        MatrixOptions,
        RootResult,
        parse_roots,
        progress_line,
        render_table,
        run_matrix,
        to_json,
    )

    argv = list(args)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    opts = MatrixOptions(binary=binary, args=argv, roots=parse_roots(rootfs, images),
                         jobs=jobs, fail_on=fail_on, allow=allow, traces_dir=traces,
                         sbom_dir=sbom_dir)
    tty = sys.stderr.isatty()

    def on_done(row: RootResult, done: int, total: int) -> None:
        if tty:
            click.echo(progress_line(row, done, total), err=True)

    rows = run_matrix(opts, on_done=on_done)
    if as_json:
        click.echo(json.dumps(to_json(opts, rows), indent=2))
    else:
        click.echo(render_table(rows))
    ctx.exit(1 if any(r.gate_failed for r in rows) else 0)
