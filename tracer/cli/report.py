"""`cgotrace report TRACE`: re-read a saved trace and print the run summary (or --json)."""

from __future__ import annotations

import json

import click

from tracer.summary import render_summary, summarize


@click.command()
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def report(trace: str, as_json: bool) -> None:
    """Re-read a saved trace file (from `cgotrace run --output`) and summarize it."""
    from tracer.recorder import exit_status, read_trace

    t = read_trace(trace)
    summary = summarize(t.accesses, exit_status(t), t.truncated)
    if t.diagnoses:
        summary["diagnoses"] = t.diagnoses
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(render_summary(summary))
    for d in t.diagnoses:  # why the program did not start (exec or loader failure)
        fix = f". Fix: {d['fix']}" if d.get("fix") else ""
        click.echo(f"did not start: {d.get('message', '?')}{fix}")
