"""`cgotrace snapshot PID|--name NAME [--json]`: dependencies of a running process, no ptrace."""

from __future__ import annotations

import json

import click

from tracer.errors import UsageError


@click.command()
@click.argument("pid", type=int, required=False)
@click.option("--name", metavar="NAME", help="Pick the process by name (refused when "
              "several match).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def snapshot(pid: int | None, name: str | None, as_json: bool) -> None:
    """What PID depends on right now, read from /proc without stopping it: libraries
    mapped but not in its NEEDED list (dlopen'd, e.g. NSS modules), open files and
    sockets, the binary's Go build and cgo facts, and the findings that follow.

    Exit codes: 0 printed; 2 usage or an ambiguous --name; 4 no such process; 5 /proc of
    that process not readable (docs/exit-codes.md).
    """
    from tracer.commands.attach import find_by_name
    from tracer.commands.snapshot import render_text, take_snapshot

    if (pid is None) == (name is None):
        raise UsageError("give either a PID or --name NAME")
    if name is not None:
        pid = find_by_name(name)
    assert pid is not None
    snap = take_snapshot(pid)
    if as_json:
        click.echo(json.dumps(snap.to_dict(), indent=2))
    else:
        click.echo(render_text(snap))
