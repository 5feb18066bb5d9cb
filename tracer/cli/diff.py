"""`cgotrace diff A B`: what changed between two traces or JSON reports."""

from __future__ import annotations

import click

from tracer.errors import ExitCode


@click.command()
@click.argument("a", type=click.Path(dir_okay=False))
@click.argument("b", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Output format.")
@click.option("--exit-code", is_flag=True,
              help="Exit 1 when A and B differ (as `git diff --exit-code`), 0 when not.")
@click.pass_context
def diff(ctx: click.Context, a: str, b: str, fmt: str, exit_code: bool) -> None:
    """Compare two runs: A and B are traces (`run --output`) or JSON reports
    (`report --format json`), in any mix.

    Lists dependencies and findings added, removed or changed (class, results, callers
    i.e. attribution) and static facts that differ, e.g. a cgo build against its
    `-tags netgo,osusergo` build, or yesterday's release against today's.
    """
    from tracer.commands.diff import diff_paths, render_json, render_text

    result = diff_paths(a, b)
    click.echo(render_json(result) if fmt == "json" else render_text(result), nl=False)
    if exit_code and not result.identical:
        ctx.exit(int(ExitCode.POLICY))
